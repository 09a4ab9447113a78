/* reduce_rs_gather.c - reduce as a ring reduce-scatter plus a gather of the
 * finished segments to the root, pipelined by chunk (large messages).
 *
 * The buffer is cut into p balanced segments (rc_seg_off/len) and each
 * segment into slices of one chunk.  For slice `it` of every segment, rank r
 * runs the reduce-scatter half of allreduce_ring.c around r -> r+1, then the
 * owner of each finished segment hands it to the root:
 *
 *   1. send slice of segment r to the right (our own input);
 *   2. steps k = 0..p-3: receive segment r-k-1 from the left, reduce it with
 *      ours straight into the right's slot (recv_reduce_send);
 *   3. segment r+1 is complete once ours is folded in: a non-root reduces it
 *      straight into the ROOT's slot (recv_reduce_send to the root); the
 *      root reduces it into recvbuf;
 *   4. the root receives the other p-1 finished segments into recvbuf, from
 *      owners root+1, root+2, ..., root-1 (segment o+1 from owner o), and
 *      scales every finished slice once for avg.
 *
 *   p = 4, root = 0 (owner of s1), slice it:
 *      0 -> 1 -> 2 -> 3 -> 0 (reduce-scatter: s0..s3 complete at 3, 0, 1, 2)
 *      1 --s2--> 0,  2 --s3--> 0,  3 --s0--> 0 (after 3's last ring message)
 *
 * Chunk arithmetic: k = ceil(len(segment 0) / chunk) slices of chunk_bytes /
 * esize elements; shorter segments send empty slices at the end, and n = 0
 * still sends one empty message per link.  Each segment is reduced in one
 * fixed order (around the ring from its first rank to its owner), so the
 * result does not depend on timing.  Non-roots only read their sendbuf;
 * with recvbuf == sendbuf the root writes a slice only after its last read.
 *
 * Topology: r, o and the ring are positions of the topology order (topo.c;
 * the identity on one domain), segments are labelled by position.
 *
 * Deadlock freedom: the ring is allreduce_ring.c's (nslots >= 2); a gather
 * link carries one message per slice and the root drains slice it before it
 * starts slice it+1's ring, which every owner needs before it can get two
 * slices ahead of the root.
 *
 * Cost: (p - 1) alpha per slice + (p-1)/p n beta + (p-1)/p n gamma for the
 * reduce-scatter, then alpha + (p-1)/p n beta into the root (its link is the
 * bottleneck: ~2(p-1)/p n beta), against log2(p) n for the binomial tree.
 */
#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

/* Slice `it` of segment s: its elements; *off gets its byte offset (0 when empty). */
static inline size_t slice(uint64_t count, int p, int s, uint64_t chunk, uint64_t it, size_t es,
                           size_t *off) {
    uint64_t n = rc_slice_len(rc_seg_len(count, p, s), chunk, it);
    *off = n ? (size_t)((rc_seg_off(count, p, s) + it * chunk) * es) : 0;
    return (size_t)n;
}

rc_status_t rc_reduce_rs_gather(rc_comm_t *c, const rc_task_t *t) {
    const int p = c->size, r = rc_pos_of(c, c->rank), root = t->root; /* r: ring position */
    const int right = rc_rank_at(c, r + 1), left = rc_rank_at(c, r - 1);
    const size_t es = c->cur.esize;
    const uint64_t chunk = c->chunk_bytes / es;
    const uint64_t count = t->count, steps = rc_nchunks(rc_seg_len(count, p, 0), chunk);
    const char *src = (const char *)t->sendbuf;
    char *dst = (char *)t->recvbuf;
    size_t n, off;

    for (uint64_t it = 0; it < steps; it++) {
        /* 1. our own slice goes right */
        n = slice(count, p, r, chunk, it, es, &off);
        RC_CHECK(rc_prim_send(c, right, src + off, n * es));
        /* 2. fold ours into the left's partial, forward it */
        for (int k = 0; k < p - 2; k++) {
            n = slice(count, p, rc_mod(r - k - 1, p), chunk, it, es, &off);
            RC_CHECK(rc_prim_recv_reduce_send(c, left, right, src + off, n));
        }
        /* 3. segment r+1 is finished here: into the root's slot, or recvbuf at the root */
        n = slice(count, p, rc_ring_next(r, p), chunk, it, es, &off);
        if (c->rank != root) {
            RC_CHECK(rc_prim_recv_reduce_send(c, left, root, src + off, n));
            continue;
        }
        RC_CHECK(rc_prim_recv_reduce(c, left, dst + off, src + off, n));
        if (c->cur.scale && n) c->cur.scale(dst + off, n, (double)p);
        /* 4. the root gathers the other finished segments, owners in a fixed order */
        for (int k = 1; k < p; k++) {
            const int o = (r + k) % p; /* owner position; r is the root's */
            n = slice(count, p, rc_ring_next(o, p), chunk, it, es, &off);
            RC_CHECK(rc_prim_recv(c, rc_rank_at(c, o), dst + off, n * es));
            if (c->cur.scale && n) c->cur.scale(dst + off, n, (double)p);
        }
    }
    return RC_OK;
}
