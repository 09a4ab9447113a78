/* allreduce_binomial.c - binomial-tree reduce to rank 0, then binomial broadcast,
 * both pipelined by chunk (latency-oriented: log2(p) levels).
 *
 * Tree over p = 8 (parent = rank with its lowest set bit cleared):
 *
 *            0
 *          / | \
 *         1  2  4
 *            |  | \
 *            3  5  6
 *                  |
 *                  7
 *
 * Up:   for every chunk, a rank reduces its children's chunks into its own,
 *       children in increasing rank order (a fixed order: same bits on every
 *       run), then sends the chunk to its parent.  Rank 0 scales for avg.
 * Down: for every chunk, a rank receives the result from its parent and sends
 *       it to its children, largest subtree first.
 * Leaves send straight out of their input; chunks stream through all levels
 * at once (depth + nchunks steps, not depth x nchunks).
 *
 * Ranks above are positions of the topology order (topo.c; the identity on
 * one domain): subtrees are runs of consecutive positions, so children
 * share their parent's NUMA / L3 domain where the sizes allow.
 *
 * Cost: 2 log2(p) alpha + 2 n beta + n gamma (the root moves the whole buffer
 * once per child): the better choice only for small messages.
 */
#include <string.h>

#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

rc_status_t rc_allreduce_binomial(rc_comm_t *c, const void *in, void *out, uint64_t count) {
    const int p = c->size, r = rc_pos_of(c, c->rank); /* tree position */
    const size_t es = c->cur.esize;
    const uint64_t chunk = c->chunk_bytes / es;
    const uint64_t steps = rc_nchunks(count, chunk);
    const int limit = rc_binom_child_limit(r, p);
    const int parent = r ? rc_rank_at(c, rc_binom_parent(r)) : -1;
    const char *src = (const char *)in;
    char *dst = (char *)out;
    int nchild = 0;
    for (int d = 1; d < limit && r + d < p; d <<= 1) nchild++;

    /* Up: reduce towards rank 0. */
    for (uint64_t it = 0; it < steps; it++) {
        uint64_t n = rc_slice_len(count, chunk, it);
        size_t off = (size_t)(n ? it * chunk * es : 0);
        const char *acc = src + off; /* the chunk as reduced so far */
        for (int d = 1; d < limit && r + d < p; d <<= 1) {
            RC_CHECK(rc_prim_recv_reduce(c, rc_rank_at(c, r + d), dst + off, acc, (size_t)n));
            acc = dst + off;
        }
        if (parent >= 0) {
            RC_CHECK(rc_prim_send(c, parent, acc, (size_t)(n * es)));
        } else {
            if (nchild == 0 && n && dst != src) memcpy(dst + off, src + off, n * es);
            if (c->cur.scale && n) c->cur.scale(dst + off, (size_t)n, (double)p);
        }
    }
    /* Down: broadcast from rank 0, largest subtree first. */
    int top = 1;
    while (top < limit && r + top < p) top <<= 1;
    for (uint64_t it = 0; it < steps; it++) {
        uint64_t n = rc_slice_len(count, chunk, it);
        size_t off = (size_t)(n ? it * chunk * es : 0);
        if (parent >= 0) RC_CHECK(rc_prim_recv(c, parent, dst + off, (size_t)(n * es)));
        for (int d = top >> 1; d >= 1; d >>= 1)
            RC_CHECK(rc_prim_send(c, rc_rank_at(c, r + d), dst + off, (size_t)(n * es)));
    }
    return RC_OK;
}
