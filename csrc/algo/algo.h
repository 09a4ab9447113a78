/* algo.h - algorithm entry points.  Each sees only the chunk primitives and
 * comm->cur (set up by coll.c); each file opens with its schedule and cost. */
#ifndef RC_ALGO_H
#define RC_ALGO_H

#include "../core.h"

typedef rc_status_t (*rc_allreduce_fn)(rc_comm_t *c, const void *in, void *out, uint64_t count);
/* 1 when the algorithm can run this call (decided identically on every rank). */
typedef int (*rc_allreduce_ok_fn)(const rc_comm_t *c, uint64_t count, size_t esize);

rc_status_t rc_allreduce_ring(rc_comm_t *c, const void *in, void *out, uint64_t count);
rc_status_t rc_allreduce_dbtree(rc_comm_t *c, const void *in, void *out, uint64_t count);
rc_status_t rc_allreduce_binomial(rc_comm_t *c, const void *in, void *out, uint64_t count);
rc_status_t rc_allreduce_direct(rc_comm_t *c, const void *in, void *out, uint64_t count);
int rc_allreduce_direct_ok(const rc_comm_t *c, uint64_t count, size_t esize);

rc_status_t rc_barrier_dissemination(rc_comm_t *c);

#endif
