/* algo.h - algorithm entry points.  Each sees only the chunk primitives,
 * the task (buffers, count, root) and comm->cur (reduction kernel, element
 * size, descriptor: set up by coll.c); each file opens with its schedule and
 * cost.  An algorithm's `ok` function may decline a call (decided the same
 * way on every rank); coll.c then falls back to the collective's default. */
#ifndef RC_ALGO_H
#define RC_ALGO_H

#include "../core.h"

typedef rc_status_t (*rc_algo_fn)(rc_comm_t *c, const rc_task_t *t);
typedef int (*rc_algo_ok_fn)(const rc_comm_t *c, const rc_task_t *t);

/* all-reduce (count elements, sendbuf -> recvbuf, may be in place) */
rc_status_t rc_allreduce_ring(rc_comm_t *c, const void *in, void *out, uint64_t count);
rc_status_t rc_allreduce_dbtree(rc_comm_t *c, const void *in, void *out, uint64_t count);
rc_status_t rc_allreduce_binomial(rc_comm_t *c, const void *in, void *out, uint64_t count);
rc_status_t rc_allreduce_direct(rc_comm_t *c, const void *in, void *out, uint64_t count);
int rc_allreduce_direct_ok(const rc_comm_t *c, uint64_t count, size_t esize);
rc_status_t rc_allreduce_cma(rc_comm_t *c, const void *in, void *out, uint64_t count);
int rc_allreduce_cma_ok(const rc_comm_t *c, uint64_t count, size_t esize);
rc_status_t rc_allreduce_hier(rc_comm_t *c, const void *in, void *out, uint64_t count);
int rc_allreduce_hier_ok(const rc_comm_t *c, uint64_t count, size_t esize);

/* broadcast: t->recvbuf (count elements) from t->root, in place */
rc_status_t rc_broadcast_binomial(rc_comm_t *c, const rc_task_t *t);
rc_status_t rc_broadcast_chain(rc_comm_t *c, const rc_task_t *t);
rc_status_t rc_broadcast_scatter_allgather(rc_comm_t *c, const rc_task_t *t);

/* reduce: t->sendbuf (count) from everyone, result in t->recvbuf on t->root
 * (recvbuf may equal sendbuf there; other ranks' recvbuf is unused and their
 * sendbuf is left unchanged) */
rc_status_t rc_reduce_binomial(rc_comm_t *c, const rc_task_t *t);
rc_status_t rc_reduce_rs_gather(rc_comm_t *c, const rc_task_t *t);

/* all-gather: t->sendbuf (count) -> block `rank` of t->recvbuf (size * count);
 * sendbuf may already be that block (in place) */
rc_status_t rc_allgather_ring(rc_comm_t *c, const rc_task_t *t);
rc_status_t rc_allgather_direct(rc_comm_t *c, const rc_task_t *t);
int rc_allgather_direct_ok(const rc_comm_t *c, const rc_task_t *t);
rc_status_t rc_allgather_cma(rc_comm_t *c, const rc_task_t *t);
int rc_allgather_cma_ok(const rc_comm_t *c, const rc_task_t *t);

/* reduce-scatter: t->sendbuf (size * count) -> t->recvbuf (count): block
 * `rank` of the reduction; recvbuf may be block `rank` of sendbuf */
rc_status_t rc_reduce_scatter_ring(rc_comm_t *c, const rc_task_t *t);
rc_status_t rc_reduce_scatter_direct(rc_comm_t *c, const rc_task_t *t);
int rc_reduce_scatter_direct_ok(const rc_comm_t *c, const rc_task_t *t);

/* all-to-all: block j of t->sendbuf (size * count) goes to rank j, block i of
 * t->recvbuf comes from rank i; not in place */
rc_status_t rc_alltoall_pairwise(rc_comm_t *c, const rc_task_t *t);
rc_status_t rc_alltoall_cma(rc_comm_t *c, const rc_task_t *t);
int rc_alltoall_cma_ok(const rc_comm_t *c, const rc_task_t *t);

/* gather: t->sendbuf (count) from every rank -> block i of t->recvbuf
 * (size * count) on t->root; scatter: the reverse */
rc_status_t rc_gather_direct(rc_comm_t *c, const rc_task_t *t);
rc_status_t rc_scatter_direct(rc_comm_t *c, const rc_task_t *t);

rc_status_t rc_barrier_dissemination(rc_comm_t *c);

#endif
