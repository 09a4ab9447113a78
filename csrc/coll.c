/* coll.c - collective entry points: argument checks (before any
 * communication), algorithm table and selection, the operation context. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "algo/algo.h"
#include "core.h"
#include "transport/transport.h"

typedef struct {
    rc_algo_t id;
    const char *description;
    rc_allreduce_fn run;
    rc_allreduce_ok_fn ok; /* NULL: runs any call */
} rc_allreduce_algo_t;

/* UCC's shape: one row per algorithm; "auto" picks among them. */
static const rc_allreduce_algo_t allreduce_algos[] = {
    {RC_ALGO_RING, "reduce-scatter + all-gather around a ring, pipelined (bandwidth-optimal)",
     rc_allreduce_ring, NULL},
    {RC_ALGO_TREE, "double binary tree (NCCL): each half reduced up and broadcast down a tree",
     rc_allreduce_dbtree, NULL},
    {RC_ALGO_BINOMIAL, "binomial-tree reduce to rank 0 + broadcast, pipelined",
     rc_allreduce_binomial, NULL},
    {RC_ALGO_DIRECT, "every rank sends to every rank, reduce in rank order (1 step; small only)",
     rc_allreduce_direct, rc_allreduce_direct_ok},
};
#define N_ALLREDUCE_ALGOS (sizeof allreduce_algos / sizeof allreduce_algos[0])

static const rc_allreduce_algo_t *find_allreduce(rc_algo_t id) {
    for (size_t i = 0; i < N_ALLREDUCE_ALGOS; i++)
        if (allreduce_algos[i].id == id) return &allreduce_algos[i];
    return NULL;
}

/* Busy guard: one call at a time per communicator. */
static rc_status_t enter(rc_comm_t *comm, const char *what) {
    if (!comm) return rc_set_error(RC_ERR_INVALID_ARG, "%s: comm is NULL", what);
    if (!comm->connected)
        return rc_set_error(RC_ERR_INVALID_ARG, "%s: communicator is not connected (or closed)",
                            what);
    if (comm->broken)
        return rc_set_error(comm->broken, "%s: communicator failed earlier: %s", what,
                            comm->broken_msg);
    if (atomic_exchange(&comm->busy, 1))
        return rc_set_error(RC_ERR_INVALID_ARG,
                            "%s on rank %d: the communicator is already in use by another "
                            "thread; calls on one communicator must not overlap",
                            what, comm->rank);
    return RC_OK;
}

static void leave(rc_comm_t *comm) { atomic_store(&comm->busy, 0); }

/* Thresholds for "auto" (bytes).  Defaults measured on a 2-core EPYC VM
 * (docs/performance.md); RINGCOMM_DIRECT_MAX / RINGCOMM_TREE_MAX override. */
rc_algo_t rc_allreduce_select(const rc_comm_t *comm, uint64_t count, rc_dtype_t dt) {
    uint64_t bytes = count * rc_dtype_size(dt);
    if (comm->algo_env != RC_ALGO_AUTO) return (rc_algo_t)comm->algo_env;
    if (comm->size <= 1) return RC_ALGO_RING;
    if (bytes <= comm->direct_max && bytes <= comm->chunk_bytes && comm->size <= 8)
        return RC_ALGO_DIRECT;
    if (bytes <= comm->tree_max) return RC_ALGO_TREE;
    return RC_ALGO_RING;
}

rc_status_t rc_allreduce(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                         rc_dtype_t dt, rc_op_t op, rc_algo_t algo) {
    size_t es = rc_dtype_size(dt);
    if ((unsigned)dt >= RC_NUM_DTYPES || es == 0)
        return rc_set_error(RC_ERR_INVALID_ARG, "allreduce: unknown dtype %d", (int)dt);
    if ((unsigned)op >= RC_NUM_OPS || !rc_op_valid_for(dt, op))
        return rc_set_error(RC_ERR_INVALID_ARG, "allreduce: op %s is not defined for dtype %s",
                            rc_op_name(op), rc_dtype_name(dt));
    if ((unsigned)algo >= RC_NUM_ALGOS)
        return rc_set_error(RC_ERR_INVALID_ARG, "allreduce: unknown algorithm %d", (int)algo);
    if (count > (UINT64_MAX / 2) / es)
        return rc_set_error(RC_ERR_INVALID_ARG, "allreduce: count %llu is too large",
                            (unsigned long long)count);
    if (count && (!sendbuf || !recvbuf))
        return rc_set_error(RC_ERR_INVALID_ARG, "allreduce: NULL buffer with count %llu",
                            (unsigned long long)count);
    uint64_t bytes = count * es;
    if (sendbuf != recvbuf && count) {
        uintptr_t a = (uintptr_t)sendbuf, b = (uintptr_t)recvbuf;
        if (a < b + bytes && b < a + bytes)
            return rc_set_error(RC_ERR_INVALID_ARG,
                                "allreduce: sendbuf and recvbuf overlap without being equal");
    }
    RC_CHECK(enter(comm, "allreduce"));

    if (algo == RC_ALGO_AUTO) algo = rc_allreduce_select(comm, count, dt);
    const rc_allreduce_algo_t *a = find_allreduce(algo);
    if (a->ok && !a->ok(comm, count, es)) {
        /* declined (decided the same way on every rank): fall back to ring */
        RC_LOG(RC_INFO, "allreduce: %s declines count=%llu, using ring", rc_algo_name(algo),
               (unsigned long long)count);
        a = find_allreduce(RC_ALGO_RING);
    }

    rc_status_t st = RC_OK;
    if (comm->size == 1) {
        if (sendbuf != recvbuf && bytes) memcpy(recvbuf, sendbuf, bytes);
        comm->seq++;
        leave(comm);
        return RC_OK;
    }
    rc_opctx_t *cur = &comm->cur;
    memset(&cur->desc, 0, sizeof cur->desc);
    cur->desc.seq = comm->seq++;
    cur->desc.coll = RC_COLL_ALLREDUCE;
    cur->desc.dtype = (uint8_t)dt;
    cur->desc.op = (uint8_t)op;
    cur->desc.algo = (uint8_t)a->id;
    cur->desc.count = count;
    cur->desc.root = -1;
    cur->esize = es;
    cur->stream = bytes >= comm->stream_min;
    cur->reduce = rc_reduce_get(dt, op);
    cur->scale = op == RC_AVG ? rc_scale_get(dt) : NULL;
    comm->tp->publish(comm);
    RC_LOG(RC_TRACE, "rank %d allreduce #%u count=%llu %s %s algo=%s chunk=%zu", comm->rank,
           cur->desc.seq, (unsigned long long)count, rc_dtype_name(dt), rc_op_name(op),
           rc_algo_name(a->id), comm->chunk_bytes);
    st = a->run(comm, sendbuf, recvbuf, count);
    leave(comm);
    return st;
}

rc_status_t rc_barrier(rc_comm_t *comm) {
    RC_CHECK(enter(comm, "barrier"));
    rc_status_t st = RC_OK;
    if (comm->size > 1) {
        rc_opctx_t *cur = &comm->cur;
        memset(&cur->desc, 0, sizeof cur->desc);
        cur->desc.seq = comm->seq++;
        cur->desc.coll = RC_COLL_BARRIER;
        cur->desc.root = -1;
        cur->esize = 1;
        cur->stream = 0;
        cur->reduce = NULL;
        cur->scale = NULL;
        comm->tp->publish(comm);
        st = rc_barrier_dissemination(comm);
    } else {
        comm->seq++;
    }
    leave(comm);
    return st;
}
