/* prims.h - chunk primitives (NCCL's shape): each moves at most one chunk
 * (comm->chunk_bytes) between this rank and a peer through the transport's
 * lent slots, fusing the receive with the reduction and the forward so that
 * data is read out of shared memory once.  They use the operation in
 * progress (comm->cur: reduction kernel, element size, descriptor) and check
 * the descriptor of every received message against it. */
#ifndef RC_PRIMS_H
#define RC_PRIMS_H

#include "core.h"

/* The check of a received collective descriptor (also fuzzed). */
int rc_prim_desc_ok(const rc_desc_t *got, const rc_desc_t *cur, size_t want_bytes);

/* to <- src */
rc_status_t rc_prim_send(rc_comm_t *c, int to, const void *src, size_t bytes);
/* dst <- from */
rc_status_t rc_prim_recv(rc_comm_t *c, int from, void *dst, size_t bytes);
/* dst <- src op from   (n elements) */
rc_status_t rc_prim_recv_reduce(rc_comm_t *c, int from, void *dst, const void *src, size_t n);
/* to <- src op from */
rc_status_t rc_prim_recv_reduce_send(rc_comm_t *c, int from, int to, const void *src, size_t n);
/* dst <- (src op from) [scaled for avg]; to <- dst */
rc_status_t rc_prim_recv_reduce_copy_send(rc_comm_t *c, int from, int to, void *dst,
                                          const void *src, size_t n);
/* dst <- from; to <- dst */
rc_status_t rc_prim_recv_copy_send(rc_comm_t *c, int from, int to, void *dst, size_t bytes);

#endif
