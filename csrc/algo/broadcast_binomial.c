/* broadcast_binomial.c - binomial-tree broadcast from the root, pipelined by
 * chunk (latency-oriented: log2(p) levels).
 *
 * Ranks are renumbered relative to the root, v = (r - root) mod p, and the
 * tree is pattern.h's binomial tree over v (parent = v with its lowest set
 * bit cleared).  p = 6, root = 0:
 *
 *            0
 *          / | \
 *         4  2  1        for every chunk: receive it from the parent, then
 *         |  |           send it to the children, largest subtree first
 *         5  3           (v + 4, v + 2, v + 1), so the deepest path starts first
 *
 * v counts positions of the topology order (topo.c; the identity on one
 * domain) from the root's: subtrees are runs of consecutive positions, so
 * children share their parent's NUMA / L3 domain where the sizes allow.
 *
 * The buffer is cut into k = ceil(n / chunk) chunks of chunk_bytes / esize
 * elements (at least one, possibly empty, message per link even for n = 0);
 * chunk i leaves the root while chunk i-1 is one level further down, so the
 * whole broadcast takes log2(p) + k - 1 pipeline steps, not log2(p) * k.
 * The tree is acyclic, so a full slot only ever waits on a subtree that
 * drains: no deadlock for any nslots >= 1.
 *
 * Cost: (log2(p) + k - 1) (alpha + chunk beta); the root sends the whole
 * buffer once per child (log2(p) n beta at the root): small messages.
 */
#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

rc_status_t rc_broadcast_binomial(rc_comm_t *c, const rc_task_t *t) {
    const int p = c->size, root = t->root;
    const int base = rc_pos_of(c, root), v = rc_mod(rc_pos_of(c, c->rank) - base, p);
    const size_t es = c->cur.esize;
    const uint64_t chunk = c->chunk_bytes / es;
    const uint64_t count = t->count, steps = rc_nchunks(count, chunk);
    const int limit = rc_binom_child_limit(v, p);
    const int parent = v ? rc_rank_at(c, rc_binom_parent(v) + base) : -1;
    char *buf = (char *)t->recvbuf;
    int top = 1; /* one past the largest child offset */
    while (top < limit && v + top < p) top <<= 1;

    for (uint64_t it = 0; it < steps; it++) {
        const uint64_t n = rc_slice_len(count, chunk, it);
        char *at = n ? buf + it * chunk * es : buf;
        const size_t bytes = (size_t)(n * es);
        /* 1. the chunk arrives from the parent (the root has it already) */
        if (parent >= 0) RC_CHECK(rc_prim_recv(c, parent, at, bytes));
        /* 2. and goes to the children, largest subtree first */
        for (int d = top >> 1; d >= 1; d >>= 1)
            RC_CHECK(rc_prim_send(c, rc_rank_at(c, v + d + base), at, bytes));
    }
    return RC_OK;
}
