/* broadcast_scatter_allgather.c - broadcast as scatter from the root plus a
 * ring all-gather of the segments (van de Geijn), pipelined by chunk.
 *
 * With v = (r - root) mod p, the buffer is cut into p balanced segments
 * (rc_seg_off/len; the first n % p hold one element more) and segment v is
 * rank v's.  For slice `it` (one chunk of every segment):
 *
 *   1. scatter: the root sends slice it of segment w to rank w, w = 1..p-1
 *      (one message per peer per slice, so no peer's slots fill while
 *      another waits for its first segment);
 *   2. all-gather around the ring v -> v+1, steps k = 0..p-2: rank v sends
 *      segment v-k and receives segment v-k-1 (fused: recv_copy_send).
 *      The root already holds every segment, so it only sends (segments
 *      0, p-1, ..., 2, out of its own buffer) and rank p-1 only receives:
 *      the link p-1 -> root of a plain ring would carry nothing new.
 *
 *   p = 4, slice it:   root --s1--> v1   root --s2--> v2   root --s3--> v3
 *                      root --s0,s3,s2--> v1 --s1,s0,s3--> v2 --s2,s1,s0--> v3
 *
 * v counts positions of the topology order (topo.c; the identity on one
 * domain) from the root's, so the ring follows NUMA and L3 domains.
 *
 * Deadlock freedom: every link points from a lower v to a higher one, so
 * waits cannot close a cycle; each scatter link carries one message per
 * slice, so the root blocks on a peer only while that peer is two slices
 * behind, and that peer waits only for slices the root has finished.
 *
 * Chunk arithmetic: k = ceil(len(segment 0) / chunk) slices of chunk_bytes /
 * esize elements; shorter segments send empty slices at the end, and n = 0
 * still sends one empty message per link (a mismatched peer is detected).
 *
 * Cost: 2(p-1) alpha per slice + 2(p-1)/p n beta at the root (the
 * bottleneck; other ranks send and receive ~n); pays off over the chain
 * only when latency per hop dominates.
 */
#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

rc_status_t rc_broadcast_scatter_allgather(rc_comm_t *c, const rc_task_t *t) {
    const int p = c->size, root = t->root;
    const int me = rc_pos_of(c, c->rank), base = rc_pos_of(c, root);
    const int v = rc_mod(me - base, p);
    const int right = rc_rank_at(c, me + 1), left = rc_rank_at(c, me - 1);
    const size_t es = c->cur.esize;
    const uint64_t chunk = c->chunk_bytes / es;
    const uint64_t count = t->count, steps = rc_nchunks(rc_seg_len(count, p, 0), chunk);
    char *buf = (char *)t->recvbuf;

    for (uint64_t it = 0; it < steps; it++) {
/* slice it of segment s (a relative rank): its elements and its address */
#define SLICE_N(s) rc_slice_len(rc_seg_len(count, p, (s)), chunk, it)
#define SLICE_AT(s) (SLICE_N(s) ? buf + (rc_seg_off(count, p, (s)) + it * chunk) * es : buf)
#define SLICE_BYTES(s) ((size_t)(SLICE_N(s) * es))
        int s;
        if (v == 0) {
            /* 1. scatter: one slice to every peer */
            for (int w = 1; w < p; w++)
                RC_CHECK(rc_prim_send(c, rc_rank_at(c, base + w), SLICE_AT(w), SLICE_BYTES(w)));
            /* 2. all-gather: segments 0, p-1, ..., 2 to the right, from our buffer */
            for (int k = 0; k < p - 1; k++) {
                s = rc_mod(-k, p);
                RC_CHECK(rc_prim_send(c, right, SLICE_AT(s), SLICE_BYTES(s)));
            }
            continue;
        }
        /* 1. our segment from the root */
        RC_CHECK(rc_prim_recv(c, root, SLICE_AT(v), SLICE_BYTES(v)));
        if (v == p - 1) {
            /* 2. the end of the line: receive the others' segments v-1, ..., 0 */
            for (int k = 0; k < p - 1; k++) {
                s = v - k - 1;
                RC_CHECK(rc_prim_recv(c, left, SLICE_AT(s), SLICE_BYTES(s)));
            }
            continue;
        }
        /* 2. ring step 0: our segment goes right; steps 1..p-2: pass segment
         * v-k on as it arrives; the last one (v+1) stops here */
        RC_CHECK(rc_prim_send(c, right, SLICE_AT(v), SLICE_BYTES(v)));
        for (int k = 1; k < p - 1; k++) {
            s = rc_mod(v - k, p);
            RC_CHECK(rc_prim_recv_copy_send(c, left, right, SLICE_AT(s), SLICE_BYTES(s)));
        }
        s = v + 1;
        RC_CHECK(rc_prim_recv(c, left, SLICE_AT(s), SLICE_BYTES(s)));
#undef SLICE_N
#undef SLICE_AT
#undef SLICE_BYTES
    }
    return RC_OK;
}
