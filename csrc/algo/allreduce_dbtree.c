/* allreduce_dbtree.c - double binary tree all-reduce (NCCL's scheme), pipelined.
 *
 * Two balanced in-order binary trees over the p ranks; tree A reduces and
 * broadcasts the first half of the buffer, tree B the second half.  Tree B
 * is tree A over mirrored ranks (p - 1 - r) when p is even, shifted ranks
 * (r + 1) when p is odd, so that most leaves of one tree are inner nodes of
 * the other and every rank sends and receives about n bytes in all:
 *
 *   p = 4   tree A:     2          tree B (mirrored):   1
 *                      / \                             / \
 *                     1   3                           2   0
 *                    /                                     \
 *                   0                                       3
 *
 * For every chunk of its half, in both trees (chunk-major, A before B):
 *   up:   acc = own chunk; acc op= left child; acc op= right child (fixed
 *         order: same bits on every run), then to the parent; the root scales
 *         for avg.  The last child's chunk is reduced straight into the
 *         parent's slot (recv_reduce_send).
 *   down: receive the result from the parent, pass it to both children.
 * Each rank runs up for all chunks, then down for all chunks; chunks stream
 * through the tree depth concurrently.
 *
 * The trees are built over positions of the topology order (topo.c; the
 * identity on one domain), then mapped to ranks: an in-order tree's
 * subtrees are runs of consecutive positions, so most edges stay inside a
 * NUMA / L3 domain.
 *
 * Cost: 2 log2(p) alpha + ~2 n beta + n gamma per rank pair of trees; the
 * root of each tree handles only n/2 bytes per direction.
 */
#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

typedef struct {
    int parent, child[2];
} node_t;

/* Balanced in-order binary tree over virtual ranks [0, p): the root of a
 * range is its middle. */
static void btree_node(int p, int v, node_t *nd) {
    int lo = 0, hi = p, parent = -1;
    for (;;) {
        int mid = lo + (hi - lo) / 2;
        if (v == mid) {
            nd->parent = parent;
            nd->child[0] = lo < mid ? lo + (mid - lo) / 2 : -1;
            nd->child[1] = mid + 1 < hi ? mid + 1 + (hi - mid - 1) / 2 : -1;
            return;
        }
        parent = mid;
        if (v < mid) hi = mid;
        else lo = mid + 1;
    }
}

/* Tree t (0 = A, 1 = B) node of position r, in positions. */
static void dbtree_node(int p, int r, int t, node_t *nd) {
    int v = t == 0 ? r : (p % 2 == 0 ? p - 1 - r : (r + 1) % p);
    btree_node(p, v, nd);
    if (t == 1) {
        int *ids[3] = {&nd->parent, &nd->child[0], &nd->child[1]};
        for (int i = 0; i < 3; i++)
            if (*ids[i] >= 0) *ids[i] = p % 2 == 0 ? p - 1 - *ids[i] : rc_mod(*ids[i] - 1, p);
    }
}

static rc_status_t tree_up(rc_comm_t *c, const node_t *nd, const char *src, char *dst, size_t n) {
    const size_t bytes = n * c->cur.esize;
    int kids[2], nk = 0;
    for (int i = 0; i < 2; i++)
        if (nd->child[i] >= 0) kids[nk++] = nd->child[i];
    const char *acc = src;
    for (int i = 0; i < nk; i++) {
        if (i == nk - 1 && nd->parent >= 0) /* last child: straight into the parent's slot */
            return rc_prim_recv_reduce_send(c, kids[i], nd->parent, acc, n);
        RC_CHECK(rc_prim_recv_reduce(c, kids[i], dst, acc, n));
        acc = dst;
    }
    if (nd->parent >= 0) return rc_prim_send(c, nd->parent, src, bytes); /* a leaf */
    if (c->cur.scale && n) c->cur.scale(dst, n, (double)c->size);      /* the root */
    return RC_OK;
}

static rc_status_t tree_down(rc_comm_t *c, const node_t *nd, char *dst, size_t n) {
    const size_t bytes = n * c->cur.esize;
    if (nd->parent >= 0) RC_CHECK(rc_prim_recv(c, nd->parent, dst, bytes));
    for (int i = 0; i < 2; i++)
        if (nd->child[i] >= 0) RC_CHECK(rc_prim_send(c, nd->child[i], dst, bytes));
    return RC_OK;
}

rc_status_t rc_allreduce_dbtree(rc_comm_t *c, const void *in, void *out, uint64_t count) {
    const int p = c->size, r = c->rank;
    const size_t es = c->cur.esize;
    const uint64_t chunk = c->chunk_bytes / es;
    const uint64_t half[2] = {count - count / 2, count / 2};
    const uint64_t base[2] = {0, count - count / 2};
    const uint64_t steps = rc_nchunks(half[0], chunk);
    node_t nd[2];
    dbtree_node(p, rc_pos_of(c, r), 0, &nd[0]);
    dbtree_node(p, rc_pos_of(c, r), 1, &nd[1]);
    for (int t = 0; t < 2; t++) { /* positions -> ranks */
        int *ids[3] = {&nd[t].parent, &nd[t].child[0], &nd[t].child[1]};
        for (int i = 0; i < 3; i++)
            if (*ids[i] >= 0) *ids[i] = rc_rank_at(c, *ids[i]);
    }

    for (int phase = 0; phase < 2; phase++) {
        for (uint64_t it = 0; it < steps; it++) {
            for (int t = 0; t < 2; t++) {
                uint64_t n = rc_slice_len(half[t], chunk, it);
                size_t off = n ? (size_t)((base[t] + it * chunk) * es) : 0;
                if (phase == 0)
                    RC_CHECK(tree_up(c, &nd[t], (const char *)in + off, (char *)out + off, n));
                else
                    RC_CHECK(tree_down(c, &nd[t], (char *)out + off, n));
            }
        }
    }
    return RC_OK;
}
