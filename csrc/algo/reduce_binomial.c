/* reduce_binomial.c - binomial-tree reduce to the root, pipelined by chunk
 * (latency-oriented: log2(p) levels).
 *
 * Ranks are renumbered relative to the root, v = (r - root) mod p, and the
 * tree is pattern.h's binomial tree over v.  p = 6, root = 0:
 *
 *            0           for every chunk, rank v folds in its children's
 *          / | \         partial results in increasing order v+1, v+2, v+4
 *         1  2  4        (a fixed order: the same bits on every run):
 *            |  |          acc = x_v op y_(v+1) op y_(v+2) op y_(v+4)
 *            3  5        and passes acc to its parent.
 *
 * v counts positions of the topology order (topo.c; the identity on one
 * domain) from the root's: subtrees are runs of consecutive positions, so
 * children share their parent's NUMA / L3 domain where the sizes allow.
 *
 * Where acc lives: a leaf sends its input chunk as is; an interior rank
 * accumulates in c->scratch (chunk_bytes of private memory: the caller's
 * sendbuf stays untouched) and reduces its LAST child's chunk straight into
 * the parent's slot (recv_reduce_send), so the final sum of each level is
 * written once; the root accumulates in recvbuf (may alias sendbuf) and
 * scales the finished chunk for avg.
 *
 * The buffer is cut into k = ceil(n / chunk) chunks of chunk_bytes / esize
 * elements (at least one, possibly empty, message per link even for n = 0);
 * all levels work on consecutive chunks at once: log2(p) + k - 1 steps.  The
 * tree is acyclic, so the waits cannot close a cycle for any nslots.
 *
 * Cost: (log2(p) + k - 1) (alpha + chunk beta + chunk gamma); the root
 * receives and reduces log2(p) n: small messages.
 */
#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

rc_status_t rc_reduce_binomial(rc_comm_t *c, const rc_task_t *t) {
    const int p = c->size, root = t->root;
    const int base = rc_pos_of(c, root), v = rc_mod(rc_pos_of(c, c->rank) - base, p);
    const size_t es = c->cur.esize;
    const uint64_t chunk = c->chunk_bytes / es;
    const uint64_t count = t->count, steps = rc_nchunks(count, chunk);
    const int limit = rc_binom_child_limit(v, p);
    const int parent = v ? rc_rank_at(c, rc_binom_parent(v) + base) : -1;
    const char *src = (const char *)t->sendbuf;
    char *dst = (char *)t->recvbuf;
    int kids[32], nk = 0; /* children in increasing v, as real ranks */
    for (int d = 1; d < limit && v + d < p; d <<= 1) kids[nk++] = rc_rank_at(c, v + d + base);

    for (uint64_t it = 0; it < steps; it++) {
        const uint64_t n = rc_slice_len(count, chunk, it);
        const size_t off = n ? (size_t)(it * chunk * es) : 0;
        const char *in = n ? src + off : src;
        if (parent < 0) {
            /* the root: acc in recvbuf; p >= 2, so there is a child */
            char *out = n ? dst + off : dst;
            const char *acc = in;
            for (int i = 0; i < nk; i++) {
                RC_CHECK(rc_prim_recv_reduce(c, kids[i], out, acc, (size_t)n));
                acc = out;
            }
            if (c->cur.scale && n) c->cur.scale(out, (size_t)n, (double)p);
            continue;
        }
        if (nk == 0) { /* a leaf: our chunk as is */
            RC_CHECK(rc_prim_send(c, parent, in, (size_t)(n * es)));
            continue;
        }
        /* interior: children 0..nk-2 into scratch, the last one into the parent's slot */
        const char *acc = in;
        for (int i = 0; i < nk - 1; i++) {
            RC_CHECK(rc_prim_recv_reduce(c, kids[i], c->scratch, acc, (size_t)n));
            acc = (const char *)c->scratch;
        }
        RC_CHECK(rc_prim_recv_reduce_send(c, kids[nk - 1], parent, acc, (size_t)n));
    }
    return RC_OK;
}
