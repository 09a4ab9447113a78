/* allreduce_ring.c - ring all-reduce: reduce-scatter then all-gather,
 * chunked and pipelined (bandwidth-optimal).
 *
 * The buffer is cut into p balanced segments (rc_seg_off/len) and every
 * segment into slices of one chunk.  For slice `it` of every segment, rank r
 * runs 2(p-1) steps around the ring r -> r+1 (send right, receive left):
 *
 *   reduce-scatter, step k = 0..p-2:  send seg (r-k), receive seg (r-k-1) and reduce
 *   all-gather,     step k = 0..p-2:  send seg (r+1-k), receive seg (r-k) and copy
 *
 * fused into primitives so each received chunk is read out of shared memory
 * once (p = 4, rank 1's slice loop):
 *
 *   send(seg 1) -> recv_reduce_send(seg 0) -> recv_reduce_send(seg 3)
 *   -> recv_reduce_copy_send(seg 2: now final, scaled for avg)
 *   -> recv_copy_send(seg 1) -> recv_copy_send(seg 0) -> recv(seg 3)
 *
 * Slots hold nslots >= 2 chunks per connection, so a rank is already sending
 * slice it+1 while its neighbour reduces slice it.  Each segment is reduced
 * in one fixed order and its owner's result is copied to everyone, so every
 * rank ends with bitwise identical data.
 *
 * r is the rank's position in the topology order (topo.c: rc_pos_of, the
 * identity on one NUMA/L3 domain) and r+1 the next position's rank, so the
 * ring crosses each domain boundary once; segment s is the s-th of the
 * buffer whoever holds it, so every rank still agrees on the layout.
 *
 * Cost: 2(p-1) alpha per slice + 2(p-1)/p n beta + (p-1)/p n gamma.
 */
#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

rc_status_t rc_allreduce_ring(rc_comm_t *c, const void *in, void *out, uint64_t count) {
    const int p = c->size, r = rc_pos_of(c, c->rank); /* ring position */
    const int right = rc_rank_at(c, r + 1), left = rc_rank_at(c, r - 1);
    const size_t es = c->cur.esize;
    const uint64_t chunk = c->chunk_bytes / es;
    const char *src = (const char *)in;
    char *dst = (char *)out;
    const uint64_t steps = rc_nchunks(rc_seg_len(count, p, 0), chunk);

    for (uint64_t it = 0; it < steps; it++) {
#define SLICE_OFF(s) ((rc_seg_off(count, p, (s)) + it * chunk) * es)
#define SLICE_N(s) rc_slice_len(rc_seg_len(count, p, (s)), chunk, it)
        int s = r;
        /* 1. reduce-scatter step 0: our own slice goes right */
        RC_CHECK(rc_prim_send(c, right, src + (SLICE_N(s) ? SLICE_OFF(s) : 0), SLICE_N(s) * es));
        /* 2. steps 1..p-2: reduce the left's partial with ours, forward it */
        for (int k = 0; k < p - 2; k++) {
            s = rc_mod(r - k - 1, p);
            RC_CHECK(rc_prim_recv_reduce_send(c, left, right, src + SLICE_OFF(s), SLICE_N(s)));
        }
        /* 3. last step: segment r+1 is complete here; keep it and start the all-gather */
        s = rc_ring_next(r, p);
        RC_CHECK(rc_prim_recv_reduce_copy_send(c, left, right, dst + SLICE_OFF(s),
                                               src + SLICE_OFF(s), SLICE_N(s)));
        /* 4. all-gather: copy finished segments and pass them on */
        for (int k = 0; k < p - 2; k++) {
            s = rc_mod(r - k, p);
            RC_CHECK(rc_prim_recv_copy_send(c, left, right, dst + SLICE_OFF(s), SLICE_N(s) * es));
        }
        /* 5. the last finished segment stops here */
        s = rc_mod(r + 2, p);
        RC_CHECK(rc_prim_recv(c, left, dst + SLICE_OFF(s), SLICE_N(s) * es));
#undef SLICE_OFF
#undef SLICE_N
    }
    return RC_OK;
}
