/* coll.c - collective entry points: argument checks (before any
 * communication), the algorithm tables and selection, and the run of one
 * task (operation context + dispatch).  Posting and ordering are progress.c's. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "algo/algo.h"
#include "core.h"
#include "p2p.h"
#include "transport/transport.h"

typedef struct {
    rc_algo_t id;
    const char *description;
    rc_algo_fn run;
    rc_algo_ok_fn ok; /* NULL: runs any call */
} rc_algo_row_t;

/* all-reduce's algorithms predate the task interface: thin adapters */
static rc_status_t ar_ring(rc_comm_t *c, const rc_task_t *t) {
    return rc_allreduce_ring(c, t->sendbuf, t->recvbuf, t->count);
}
static rc_status_t ar_dbtree(rc_comm_t *c, const rc_task_t *t) {
    return rc_allreduce_dbtree(c, t->sendbuf, t->recvbuf, t->count);
}
static rc_status_t ar_binomial(rc_comm_t *c, const rc_task_t *t) {
    return rc_allreduce_binomial(c, t->sendbuf, t->recvbuf, t->count);
}
static rc_status_t ar_direct(rc_comm_t *c, const rc_task_t *t) {
    return rc_allreduce_direct(c, t->sendbuf, t->recvbuf, t->count);
}
static int ar_direct_ok(const rc_comm_t *c, const rc_task_t *t) {
    return rc_allreduce_direct_ok(c, t->count, rc_dtype_size(t->dtype));
}
static rc_status_t ar_cma(rc_comm_t *c, const rc_task_t *t) {
    return rc_allreduce_cma(c, t->sendbuf, t->recvbuf, t->count);
}
static int ar_cma_ok(const rc_comm_t *c, const rc_task_t *t) {
    return rc_allreduce_cma_ok(c, t->count, rc_dtype_size(t->dtype));
}
static rc_status_t ar_hier(rc_comm_t *c, const rc_task_t *t) {
    return rc_allreduce_hier(c, t->sendbuf, t->recvbuf, t->count);
}
static int ar_hier_ok(const rc_comm_t *c, const rc_task_t *t) {
    return rc_allreduce_hier_ok(c, t->count, rc_dtype_size(t->dtype));
}
static rc_status_t barrier_run(rc_comm_t *c, const rc_task_t *t) {
    (void)t;
    return rc_barrier_dissemination(c);
}

/* UCC's shape: one row per algorithm; the first row is the fallback when
 * the chosen one declines; "auto" picks among them (rc_select). */
static const rc_algo_row_t allreduce_algos[] = {
    {RC_ALGO_RING, "reduce-scatter + all-gather around a ring, pipelined (bandwidth-optimal)",
     ar_ring, NULL},
    {RC_ALGO_TREE, "double binary tree (NCCL): each half reduced up and broadcast down a tree",
     ar_dbtree, NULL},
    {RC_ALGO_BINOMIAL, "binomial-tree reduce to rank 0 + broadcast, pipelined", ar_binomial, NULL},
    {RC_ALGO_DIRECT, "every rank sends to every rank, reduce in rank order (1 step; small only)",
     ar_direct, ar_direct_ok},
    {RC_ALGO_CMA, "reduce-scatter + all-gather by direct reads of the peers' buffers "
     "(process_vm_readv; large messages, where the kernel allows it)", ar_cma, ar_cma_ok},
    {RC_ALGO_HIER, "hierarchical: reduce-scatter inside each host, all-reduce across hosts, "
     "all-gather inside each host (same rank count on every host)", ar_hier, ar_hier_ok},
};
static const rc_algo_row_t broadcast_algos[] = {
    {RC_ALGO_CHAIN, "pipelined chain root -> root+1 -> ... (bandwidth-optimal)",
     rc_broadcast_chain, NULL},
    {RC_ALGO_BINOMIAL, "binomial tree, pipelined by chunk (log2 p steps: small messages)",
     rc_broadcast_binomial, NULL},
    {RC_ALGO_SCATTER_ALLGATHER, "scatter from the root + ring all-gather (large messages)",
     rc_broadcast_scatter_allgather, NULL},
};
static const rc_algo_row_t reduce_algos[] = {
    {RC_ALGO_RS_GATHER, "ring reduce-scatter + gather to the root (large messages)",
     rc_reduce_rs_gather, NULL},
    {RC_ALGO_BINOMIAL, "binomial tree, pipelined by chunk (log2 p steps: small messages)",
     rc_reduce_binomial, NULL},
};
static const rc_algo_row_t allgather_algos[] = {
    {RC_ALGO_RING, "ring, pipelined (bandwidth-optimal)", rc_allgather_ring, NULL},
    {RC_ALGO_DIRECT, "every rank sends its block to every rank (1 step; small only)",
     rc_allgather_direct, rc_allgather_direct_ok},
    {RC_ALGO_CMA, "every rank reads the others' blocks straight from their buffers "
     "(process_vm_readv; large blocks, where the kernel allows it)", rc_allgather_cma,
     rc_allgather_cma_ok},
};
static const rc_algo_row_t reduce_scatter_algos[] = {
    {RC_ALGO_RING, "ring, pipelined: moves (p-1)/p of the data (bandwidth-optimal)",
     rc_reduce_scatter_ring, NULL},
    {RC_ALGO_DIRECT, "every rank sends block j to rank j, reduced in rank order (small only)",
     rc_reduce_scatter_direct, rc_reduce_scatter_direct_ok},
};
static const rc_algo_row_t alltoall_algos[] = {
    {RC_ALGO_PAIRWISE, "pairwise exchange: step k sends to rank+k, receives from rank-k",
     rc_alltoall_pairwise, NULL},
    {RC_ALGO_CMA, "every rank reads its block straight from every other's buffer "
     "(process_vm_readv; large blocks, where the kernel allows it)", rc_alltoall_cma,
     rc_alltoall_cma_ok},
};
static const rc_algo_row_t gather_algos[] = {
    {RC_ALGO_DIRECT, "every rank streams its block to the root", rc_gather_direct, NULL},
};
static const rc_algo_row_t scatter_algos[] = {
    {RC_ALGO_DIRECT, "the root streams block j to rank j", rc_scatter_direct, NULL},
};
static const rc_algo_row_t barrier_algos[] = {
    {RC_ALGO_DIRECT, "dissemination: log2 p rounds of empty messages", barrier_run, NULL},
};

typedef struct {
    const rc_algo_row_t *rows;
    int n;
    int reduces; /* takes an op */
    int rooted;
    int blocks;  /* sendbuf or recvbuf holds size * count elements */
} rc_coll_info_t;

#define ROWS(a) a, (int)(sizeof a / sizeof a[0])
static const rc_coll_info_t coll_info[RC_NUM_COLLS] = {
    [RC_COLL_ALLREDUCE] = {ROWS(allreduce_algos), 1, 0, 0},
    [RC_COLL_BARRIER] = {ROWS(barrier_algos), 0, 0, 0},
    [RC_COLL_BROADCAST] = {ROWS(broadcast_algos), 0, 1, 0},
    [RC_COLL_REDUCE] = {ROWS(reduce_algos), 1, 1, 0},
    [RC_COLL_ALLGATHER] = {ROWS(allgather_algos), 0, 0, 1},
    [RC_COLL_REDUCE_SCATTER] = {ROWS(reduce_scatter_algos), 1, 0, 1},
    [RC_COLL_ALLTOALL] = {ROWS(alltoall_algos), 0, 0, 1},
    [RC_COLL_GATHER] = {ROWS(gather_algos), 0, 1, 1},
    [RC_COLL_SCATTER] = {ROWS(scatter_algos), 0, 1, 1},
};

static const rc_algo_row_t *find_algo(rc_coll_t coll, rc_algo_t id) {
    const rc_coll_info_t *ci = &coll_info[coll];
    for (int i = 0; i < ci->n; i++)
        if (ci->rows[i].id == id) return &ci->rows[i];
    return NULL;
}

const char *rc_coll_algo_name(rc_coll_t coll, int i) {
    if ((unsigned)coll >= RC_NUM_COLLS || i < 0 || i >= coll_info[coll].n) return NULL;
    return rc_algo_name(coll_info[coll].rows[i].id);
}

/* ---- "auto" ----
 * Picks by the call's bytes against the thresholds of comm->tune (tune.c:
 * built-in defaults, the file `python -m ringcomm.tune` writes from a
 * measured cost model, the environment); RINGCOMM_ALGO forces an algorithm
 * wherever the collective has it.  Block collectives compare the big buffer
 * (p blocks).  An algorithm that then declines falls back (check_coll). */
rc_algo_t rc_select(const rc_comm_t *comm, rc_coll_t coll, uint64_t count, rc_dtype_t dt) {
    uint64_t bytes = count * rc_dtype_size(dt);
    const int p = comm->size;
    const uint64_t *v = comm->tune.v;
    if (comm->algo_env != RC_ALGO_AUTO && find_algo(coll, (rc_algo_t)comm->algo_env))
        return (rc_algo_t)comm->algo_env;
    switch (coll) {
    case RC_COLL_ALLREDUCE:
        if (p <= 1) return RC_ALGO_RING;
        if (bytes <= v[RC_TUNE_AR_DIRECT_MAX] && bytes <= comm->chunk_bytes && p <= 8)
            return RC_ALGO_DIRECT;
        /* ranks on several hosts, several on each: shared memory inside,
         * one stream per local rank across (one step for the tiny calls
         * above beats its three) */
        if (comm->grp_n > 1 && comm->grp_size > 1) return RC_ALGO_HIER; /* hosts (topo.c) */
        if (bytes <= v[RC_TUNE_AR_BINOMIAL_MAX]) return RC_ALGO_BINOMIAL;
        if (bytes <= v[RC_TUNE_AR_TREE_MAX]) return RC_ALGO_TREE;
        if (comm->cma_all && v[RC_TUNE_AR_CMA_MIN] && bytes >= v[RC_TUNE_AR_CMA_MIN])
            return RC_ALGO_CMA;
        return RC_ALGO_RING;
    case RC_COLL_BROADCAST:
        if (bytes <= v[RC_TUNE_BC_BINOMIAL_MAX]) return RC_ALGO_BINOMIAL;
        if (v[RC_TUNE_BC_SAG_MIN] && bytes >= v[RC_TUNE_BC_SAG_MIN])
            return RC_ALGO_SCATTER_ALLGATHER;
        return RC_ALGO_CHAIN;
    case RC_COLL_REDUCE:
        return bytes <= v[RC_TUNE_RD_BINOMIAL_MAX] ? RC_ALGO_BINOMIAL : RC_ALGO_RS_GATHER;
    case RC_COLL_ALLGATHER:
        bytes *= (uint64_t)p;
        if (bytes <= v[RC_TUNE_AG_DIRECT_MAX] && p <= 8) return RC_ALGO_DIRECT;
        if (comm->cma_all && v[RC_TUNE_AG_CMA_MIN] && bytes >= v[RC_TUNE_AG_CMA_MIN])
            return RC_ALGO_CMA;
        return RC_ALGO_RING;
    case RC_COLL_REDUCE_SCATTER:
        bytes *= (uint64_t)p;
        return bytes <= v[RC_TUNE_RS_DIRECT_MAX] && p <= 8 ? RC_ALGO_DIRECT : RC_ALGO_RING;
    case RC_COLL_ALLTOALL:
        bytes *= (uint64_t)p;
        if (comm->cma_all && v[RC_TUNE_A2A_CMA_MIN] && bytes >= v[RC_TUNE_A2A_CMA_MIN])
            return RC_ALGO_CMA;
        return RC_ALGO_PAIRWISE;
    default:
        return coll_info[coll].rows ? coll_info[coll].rows[0].id : RC_ALGO_DIRECT;
    }
}

rc_algo_t rc_allreduce_select(const rc_comm_t *comm, uint64_t count, rc_dtype_t dt) {
    return rc_select(comm, RC_COLL_ALLREDUCE, count, dt);
}

/* ---- running one task (on the caller's thread or the progress thread) ---- */

static void set_cur(rc_comm_t *comm, const rc_task_t *t) {
    rc_opctx_t *cur = &comm->cur;
    const rc_coll_info_t *ci = &coll_info[t->coll];
    uint64_t bytes = t->count * rc_dtype_size(t->dtype) * (ci->blocks ? (uint64_t)comm->size : 1);
    memset(&cur->desc, 0, sizeof cur->desc);
    cur->desc.seq = comm->seq++;
    cur->desc.coll = (uint8_t)t->coll;
    cur->desc.dtype = (uint8_t)t->dtype;
    cur->desc.op = ci->reduces ? (uint8_t)t->op : 0;
    cur->desc.algo = (uint8_t)t->algo;
    cur->desc.count = t->count;
    cur->desc.root = ci->rooted ? t->root : -1;
    cur->esize = rc_dtype_size(t->dtype);
    cur->stream = bytes >= comm->stream_min;
    cur->reduce = ci->reduces ? rc_reduce_get(t->dtype, t->op) : NULL;
    cur->scale = ci->reduces && t->op == RC_AVG ? rc_scale_get(t->dtype) : NULL;
}

/* One rank: every collective is a copy (or nothing). */
static void run_alone(const rc_task_t *t) {
    size_t es = rc_dtype_size(t->dtype);
    const void *src = t->sendbuf;
    void *dst = t->recvbuf;
    if (t->coll == RC_COLL_BARRIER || t->coll == RC_COLL_BROADCAST || !src || !dst ||
        src == dst || !t->count)
        return;
    memmove(dst, src, (size_t)t->count * es);
}

rc_status_t rc_task_run(rc_comm_t *comm, const rc_task_t *t, double t_post) {
    if (comm->broken)
        return rc_set_error(comm->broken, "%s: communicator failed earlier: %s",
                            rc_coll_name(t->coll), comm->broken_msg);
    if (t->coll == RC_COLL_SEND || t->coll == RC_COLL_RECV) return RC_ERR_INTERNAL;
    double t0 = rc_now(); /* this rank's arrival in the call (straggler.c) */
    uint32_t seq = comm->seq;
    rc_status_t st = RC_OK;
    rc_strag_record(comm, seq, t->quiet ? NAN : t0);
    if (comm->size == 1) {
        comm->seq++;
        run_alone(t);
    } else {
        set_cur(comm, t);
        comm->tp->publish(comm);
        RC_LOG(RC_INFO, "rank %d %s #%u count=%llu %s%s%s root=%d: algorithm %s%s, %zu-byte "
               "chunks%s",
               comm->rank, rc_coll_name(t->coll), seq, (unsigned long long)t->count,
               rc_dtype_name(t->dtype), coll_info[t->coll].reduces ? " " : "",
               coll_info[t->coll].reduces ? rc_op_name(t->op) : "", comm->cur.desc.root,
               rc_algo_name(t->algo),
               t->coll == RC_COLL_ALLREDUCE && t->algo == RC_ALGO_DIRECT &&
                       rc_shm_ll_ok(comm, (size_t)t->count * comm->cur.esize)
                   ? " (one cache line per rank)" : "",
               comm->chunk_bytes, comm->cur.stream ? ", streaming stores" : "");
        st = find_algo(t->coll, t->algo)->run(comm, t);
    }
    if (comm->trace_id) rc_trace_op(comm, t, seq, t_post, t0, rc_now(), st);
    if (st == RC_OK && !t->quiet && comm->strag.period_s > 0) st = rc_strag_tick(comm);
    return st;
}

/* ---- argument checks: all before any communication ---- */

static int overlap(const void *a, uint64_t na, const void *b, uint64_t nb) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return na && nb && x < y + nb && y < x + na;
}

/* Checks common to every collective; resolves "auto" and declines. */
static rc_status_t check_coll(rc_comm_t *comm, rc_task_t *t) {
    const char *name = rc_coll_name(t->coll);
    const rc_coll_info_t *ci = &coll_info[t->coll];
    if (!comm) return rc_set_error(RC_ERR_INVALID_ARG, "%s: comm is NULL", name);
    size_t es = rc_dtype_size(t->dtype);
    if ((unsigned)t->dtype >= RC_NUM_DTYPES || es == 0)
        return rc_set_error(RC_ERR_INVALID_ARG, "%s: unknown dtype %d", name, (int)t->dtype);
    if (ci->reduces && ((unsigned)t->op >= RC_NUM_OPS || !rc_op_valid_for(t->dtype, t->op)))
        return rc_set_error(RC_ERR_INVALID_ARG, "%s: op %s is not defined for dtype %s", name,
                            rc_op_name(t->op), rc_dtype_name(t->dtype));
    if (ci->rooted && (t->root < 0 || t->root >= comm->size))
        return rc_set_error(RC_ERR_INVALID_ARG, "%s: root %d is not a rank of this %d-rank "
                            "communicator", name, t->root, comm->size);
    uint64_t mult = ci->blocks ? (uint64_t)comm->size : 1;
    if (t->count > (UINT64_MAX / 4) / es / mult)
        return rc_set_error(RC_ERR_INVALID_ARG, "%s: count %llu is too large", name,
                            (unsigned long long)t->count);
    if ((unsigned)t->algo >= RC_NUM_ALGOS)
        return rc_set_error(RC_ERR_INVALID_ARG, "%s: unknown algorithm %d", name, (int)t->algo);
    if (t->algo == RC_ALGO_AUTO) t->algo = rc_select(comm, t->coll, t->count, t->dtype);
    const rc_algo_row_t *a = find_algo(t->coll, t->algo);
    if (!a) {
        char choices[200] = "";
        for (int i = 0; i < ci->n; i++) {
            strncat(choices, i ? ", " : "", sizeof choices - strlen(choices) - 1);
            strncat(choices, rc_algo_name(ci->rows[i].id), sizeof choices - strlen(choices) - 1);
        }
        return rc_set_error(RC_ERR_INVALID_ARG, "%s: no algorithm \"%s\" (choices: auto, %s)",
                            name, rc_algo_name(t->algo), choices);
    }
    if (a->ok && !a->ok(comm, t)) {
        /* declined (decided the same way on every rank): the table's first row */
        RC_LOG(RC_INFO, "%s: %s declines count=%llu, using %s", name, rc_algo_name(t->algo),
               (unsigned long long)t->count, rc_algo_name(ci->rows[0].id));
        t->algo = ci->rows[0].id;
    }
    return RC_OK;
}

#define NEED(cond, ...)                                                    \
    do {                                                                   \
        if (!(cond)) return rc_set_error(RC_ERR_INVALID_ARG, __VA_ARGS__); \
    } while (0)

/* RINGCOMM_CHECK_NAN=1: the data this rank contributes must be finite.  The
 * rank raises before communicating and fails the communicator, so that its
 * peers raise too instead of waiting for it. */
static rc_status_t check_finite(rc_comm_t *comm, const rc_task_t *t) {
    const void *in = t->sendbuf;
    uint64_t n = t->count;
    const rc_coll_info_t *ci = (unsigned)t->coll < RC_NUM_COLLS ? &coll_info[t->coll] : NULL;
    if (!comm->check_nan || !comm->connected || comm->broken || !in) return RC_OK;
    if (t->coll == RC_COLL_BROADCAST && comm->rank != t->root) return RC_OK;
    if (ci && ci->blocks && (t->coll == RC_COLL_REDUCE_SCATTER || t->coll == RC_COLL_ALLTOALL ||
                             t->coll == RC_COLL_SCATTER))
        n *= (uint64_t)comm->size;
    size_t i = rc_find_nonfinite(in, (size_t)n, t->dtype);
    if (i == (size_t)n) return RC_OK;
    return rc_comm_fail(comm, RC_ERR_INVALID_ARG,
                        "%s on rank %d: the input holds NaN or inf at element %zu (%s); "
                        "RINGCOMM_CHECK_NAN=1 refuses it before communicating",
                        rc_coll_name(t->coll), comm->rank, i, rc_dtype_name(t->dtype));
}

static rc_status_t post(rc_comm_t *comm, rc_task_t *t, rc_request_t **req) {
    RC_CHECK(check_coll(comm, t));
    t->quiet = comm->strag.quiet;
    RC_CHECK(check_finite(comm, t));
    return rc_submit(comm, t, req, NULL);
}

rc_status_t rc_allreduce(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                         rc_dtype_t dt, rc_op_t op, rc_algo_t algo, rc_request_t **req) {
    rc_task_t t = {RC_COLL_ALLREDUCE, sendbuf, recvbuf, count, dt, op, algo, -1, 0};
    uint64_t bytes = count * rc_dtype_size(dt);
    NEED(!count || (sendbuf && recvbuf), "allreduce: NULL buffer with count %llu",
         (unsigned long long)count);
    NEED(sendbuf == recvbuf || !overlap(sendbuf, bytes, recvbuf, bytes),
         "allreduce: sendbuf and recvbuf overlap without being equal");
    return post(comm, &t, req);
}

rc_status_t rc_broadcast(rc_comm_t *comm, void *buf, uint64_t count, rc_dtype_t dt, int root,
                         rc_algo_t algo, rc_request_t **req) {
    rc_task_t t = {RC_COLL_BROADCAST, buf, buf, count, dt, RC_SUM, algo, root, 0};
    NEED(!count || buf, "broadcast: NULL buffer with count %llu", (unsigned long long)count);
    return post(comm, &t, req);
}

rc_status_t rc_reduce(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                      rc_dtype_t dt, rc_op_t op, int root, rc_algo_t algo, rc_request_t **req) {
    rc_task_t t = {RC_COLL_REDUCE, sendbuf, recvbuf, count, dt, op, algo, root, 0};
    uint64_t bytes = count * rc_dtype_size(dt);
    int at_root = comm && comm->rank == root;
    NEED(!count || sendbuf, "reduce: NULL sendbuf with count %llu", (unsigned long long)count);
    NEED(!count || !at_root || recvbuf, "reduce: NULL recvbuf on the root");
    NEED(!at_root || sendbuf == recvbuf || !overlap(sendbuf, bytes, recvbuf, bytes),
         "reduce: sendbuf and recvbuf overlap without being equal");
    if (!at_root) t.recvbuf = NULL;
    return post(comm, &t, req);
}

/* The family whose big buffer holds size blocks of `count` elements.
 * sblocks / rblocks: blocks in sendbuf / recvbuf (1, size, or 0 when this
 * rank does not use the buffer, as gather's recvbuf off the root). */
static rc_status_t post_blocks(rc_comm_t *comm, rc_task_t *t, rc_request_t **req,
                               uint64_t sblocks, uint64_t rblocks, int in_place_ok) {
    const char *name = rc_coll_name(t->coll);
    if (!comm) return rc_set_error(RC_ERR_INVALID_ARG, "%s: comm is NULL", name);
    uint64_t blk = t->count * rc_dtype_size(t->dtype);
    uint64_t ns = blk * sblocks, nr = blk * rblocks;
    if (!sblocks) t->sendbuf = NULL;
    if (!rblocks) t->recvbuf = NULL;
    NEED(!ns || t->sendbuf, "%s: NULL sendbuf with count %llu", name,
         (unsigned long long)t->count);
    NEED(!nr || t->recvbuf, "%s: NULL recvbuf with count %llu", name,
         (unsigned long long)t->count);
    if (ns && nr) {
        /* in place: the small buffer is this rank's block of the big one */
        int big_send = sblocks > rblocks;
        const char *big = big_send ? t->sendbuf : t->recvbuf;
        const void *small = big_send ? (const void *)t->recvbuf : t->sendbuf;
        int in_place = in_place_ok &&
                       small == (const void *)(big + (uint64_t)comm->rank * blk);
        NEED(in_place || !overlap(t->sendbuf, ns, t->recvbuf, nr),
             "%s: sendbuf and recvbuf overlap%s", name,
             in_place_ok ? " (in place means the small buffer is this rank's block of the big one)"
                         : "");
    }
    return post(comm, t, req);
}

rc_status_t rc_allgather(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                         rc_dtype_t dt, rc_algo_t algo, rc_request_t **req) {
    rc_task_t t = {RC_COLL_ALLGATHER, sendbuf, recvbuf, count, dt, RC_SUM, algo, -1, 0};
    return post_blocks(comm, &t, req, 1, (uint64_t)(comm ? comm->size : 0), 1);
}

rc_status_t rc_reduce_scatter(rc_comm_t *comm, const void *sendbuf, void *recvbuf,
                              uint64_t count, rc_dtype_t dt, rc_op_t op, rc_algo_t algo,
                              rc_request_t **req) {
    rc_task_t t = {RC_COLL_REDUCE_SCATTER, sendbuf, recvbuf, count, dt, op, algo, -1, 0};
    return post_blocks(comm, &t, req, (uint64_t)(comm ? comm->size : 0), 1, 1);
}

rc_status_t rc_alltoall(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                        rc_dtype_t dt, rc_algo_t algo, rc_request_t **req) {
    rc_task_t t = {RC_COLL_ALLTOALL, sendbuf, recvbuf, count, dt, RC_SUM, algo, -1, 0};
    uint64_t p = comm ? (uint64_t)comm->size : 0;
    return post_blocks(comm, &t, req, p, p, 0);
}

rc_status_t rc_gather(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                      rc_dtype_t dt, int root, rc_algo_t algo, rc_request_t **req) {
    rc_task_t t = {RC_COLL_GATHER, sendbuf, recvbuf, count, dt, RC_SUM, algo, root, 0};
    int at_root = comm && comm->rank == root;
    return post_blocks(comm, &t, req, 1, at_root ? (uint64_t)comm->size : 0, 1);
}

rc_status_t rc_scatter(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                       rc_dtype_t dt, int root, rc_algo_t algo, rc_request_t **req) {
    rc_task_t t = {RC_COLL_SCATTER, sendbuf, recvbuf, count, dt, RC_SUM, algo, root, 0};
    int at_root = comm && comm->rank == root;
    return post_blocks(comm, &t, req, at_root ? (uint64_t)comm->size : 0, 1, 1);
}

rc_status_t rc_barrier(rc_comm_t *comm, rc_request_t **req) {
    rc_task_t t = {RC_COLL_BARRIER, NULL, NULL, 0, RC_UINT8, RC_SUM, RC_ALGO_AUTO, -1, 0};
    return post(comm, &t, req);
}

/* ---- point-to-point: checked here, run by p2p.c ---- */

static rc_status_t check_p2p(rc_comm_t *comm, rc_task_t *t, int any_ok) {
    const char *name = rc_coll_name(t->coll);
    if (!comm) return rc_set_error(RC_ERR_INVALID_ARG, "%s: comm is NULL", name);
    size_t es = rc_dtype_size(t->dtype);
    NEED((unsigned)t->dtype < RC_NUM_DTYPES && es, "%s: unknown dtype %d", name, (int)t->dtype);
    NEED((t->root >= 0 && t->root < comm->size) || (any_ok && t->root == RC_ANY_SOURCE),
         "%s: %s %d is not a rank of this %d-rank communicator", name,
         t->coll == RC_COLL_SEND ? "dest" : "source", t->root, comm->size);
    NEED(t->tag >= 0, "%s: tag must be >= 0, got %d", name, t->tag);
    NEED(t->count <= (UINT64_MAX / 4) / es, "%s: count %llu is too large", name,
         (unsigned long long)t->count);
    NEED(!t->count || t->sendbuf || t->recvbuf, "%s: NULL buffer with count %llu", name,
         (unsigned long long)t->count);
    return RC_OK;
}

rc_status_t rc_send(rc_comm_t *comm, const void *buf, uint64_t count, rc_dtype_t dt, int dest,
                    int tag, rc_request_t **req) {
    rc_task_t t = {RC_COLL_SEND, buf, NULL, count, dt, RC_SUM, RC_ALGO_DIRECT, dest, tag};
    RC_CHECK(check_p2p(comm, &t, 0));
    RC_CHECK(check_finite(comm, &t));
    return rc_submit(comm, &t, req, NULL);
}

rc_status_t rc_recv(rc_comm_t *comm, void *buf, uint64_t count, rc_dtype_t dt, int source,
                    int tag, int *status_source, rc_request_t **req) {
    rc_task_t t = {RC_COLL_RECV, NULL, buf, count, dt, RC_SUM, RC_ALGO_DIRECT, source, tag};
    RC_CHECK(check_p2p(comm, &t, 1));
    return rc_submit(comm, &t, req, status_source);
}
