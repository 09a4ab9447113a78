/* allreduce_hier.c - hierarchical all-reduce for ranks on several hosts:
 * reduce-scatter inside each host (shared memory), all-reduce of each
 * slice across hosts among the ranks with the same local index (network),
 * all-gather inside each host.
 *
 * H hosts of L ranks each (comm->grp_ranks, topo.c: hosts in order of
 * their lowest rank, each host's ranks in topology order so that its ring
 * follows NUMA / L3 domains; hosts with different rank counts decline,
 * coll.c falls back to the ring).  With RINGCOMM_HIER_DOMAIN=numa (or l3)
 * on rank 0 the "hosts" are NUMA nodes (L3 groups) instead
 * (docs/topology.md): an explicit switch, since this machine cannot measure
 * where that is faster.  Rank (h, l) is the l-th
 * rank of host h.  The buffer is processed block by block so every message
 * is at most one chunk and the phases stream (a rank is already in the
 * next block's reduce-scatter while a slower one finishes this block):
 *
 *   block = L segments (one per local rank) [x H pieces in ring mode]
 *
 *   host 0:  (0,0) (0,1)         1. ring reduce-scatter over L: (h, l) holds
 *              |     |              segment l+1 summed over its host
 *   host 1:  (1,0) (1,1)         2. all-reduce of that segment across the H
 *                                   ranks (h', l): (the same segment on every
 *                                   host) -> global result of segment l+1
 *                                3. ring all-gather over L: every rank of the
 *                                   host gets every segment
 *
 * Step 2 is "direct" (every rank sends its segment to the H-1 others, each
 * folds them in host order 0..H-1: one message latency, a tree of depth one)
 * when H <= 2, or H <= 8 and the whole call fits one block of L chunks;
 * otherwise a ring over H (segments cut into H pieces of at most a chunk,
 * reduce-scatter + all-gather).  Blocks hold L chunks (direct) or L x H
 * chunks (ring).  Every segment is reduced once, in an order fixed by the
 * layout, and copied to everyone: the result is bitwise identical on every
 * rank and run.  avg scales once, where a segment's sum is complete.
 *
 * Cost (n bytes, shm: a_s b_s, network: a_n b_n):
 *   2(L-1) a_s + 2(L-1)/L n b_s  +  [direct] a_n + (H-1) n/L b_n
 *                                   [ring]   2(H-1) a_n + 2(H-1)/H n/L b_n
 * per block: the network carries n/L per rank instead of the flat ring's
 * 2(p-1)/p n, and only L-fold parallel streams cross hosts.
 */
#include <string.h>

#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

int rc_allreduce_hier_ok(const rc_comm_t *c, uint64_t count, size_t esize) {
    (void)count;
    (void)esize;
    return c->grp_size > 0 && c->grp_ranks != NULL && c->grp_n * c->grp_size == c->size;
}

/* n members: ranks[j * stride], this rank is member i */
typedef struct {
    const int *ranks;
    int stride, n, i;
} grp_t;

static inline int grp_rank(const grp_t *g, int j) { return g->ranks[(size_t)rc_mod(j, g->n) * (size_t)g->stride]; }

/* Piece t (of np) of segment s (of n) of m elements */
static inline uint64_t pc_off(uint64_t m, int n, int s, int np, int t) {
    return rc_seg_off(m, n, s) + rc_seg_off(rc_seg_len(m, n, s), np, t);
}
static inline uint64_t pc_len(uint64_t m, int n, int s, int np, int t) {
    return rc_seg_len(rc_seg_len(m, n, s), np, t);
}

/* 1. Ring reduce-scatter over g of piece t of the g->n segments of
 * [base, base + m): segment i+1 ends summed in dst. */
static rc_status_t ring_rs(rc_comm_t *c, const grp_t *g, const char *src, char *dst,
                           uint64_t base, uint64_t m, int np, int t) {
    const size_t es = c->cur.esize;
    const int n = g->n, i = g->i;
#define OFF(s) ((base + pc_off(m, n, rc_mod(s, n), np, t)) * es)
#define LEN(s) pc_len(m, n, rc_mod(s, n), np, t)
    if (n == 1) {
        if (src != dst && LEN(0)) memcpy(dst + OFF(0), src + OFF(0), LEN(0) * es);
        return RC_OK;
    }
    const int right = grp_rank(g, i + 1), left = grp_rank(g, i - 1);
    RC_CHECK(rc_prim_send(c, right, LEN(i) ? src + OFF(i) : src, LEN(i) * es));
    for (int k = 0; k < n - 2; k++)
        RC_CHECK(rc_prim_recv_reduce_send(c, left, right, src + OFF(i - k - 1), LEN(i - k - 1)));
    return rc_prim_recv_reduce(c, left, dst + OFF(i + 1), src + OFF(i + 1), LEN(i + 1));
}

/* 3. Ring all-gather over g of piece t: member i holds segment i+1 in dst. */
static rc_status_t ring_ag(rc_comm_t *c, const grp_t *g, char *dst, uint64_t base, uint64_t m,
                           int np, int t) {
    const size_t es = c->cur.esize;
    const int n = g->n, i = g->i;
    if (n == 1) return RC_OK;
    const int right = grp_rank(g, i + 1), left = grp_rank(g, i - 1);
    RC_CHECK(rc_prim_send(c, right, dst + OFF(i + 1), LEN(i + 1) * es));
    for (int k = 0; k < n - 2; k++)
        RC_CHECK(rc_prim_recv_copy_send(c, left, right, dst + OFF(i - k), LEN(i - k) * es));
    return rc_prim_recv(c, left, dst + OFF(i + 2), LEN(i + 2) * es);
#undef OFF
#undef LEN
}

/* 2, ring mode: all-reduce in place of [base, base + m) over g, cut into
 * g->n pieces (each at most a chunk); scales for avg where a piece completes. */
static rc_status_t ring_allreduce(rc_comm_t *c, const grp_t *g, char *buf, uint64_t base,
                                  uint64_t m) {
    const size_t es = c->cur.esize;
    const int n = g->n, i = g->i;
#define OFF(s) ((base + rc_seg_off(m, n, rc_mod(s, n))) * es)
#define LEN(s) rc_seg_len(m, n, rc_mod(s, n))
    const int right = grp_rank(g, i + 1), left = grp_rank(g, i - 1);
    RC_CHECK(rc_prim_send(c, right, buf + OFF(i), LEN(i) * es));
    for (int k = 0; k < n - 2; k++)
        RC_CHECK(rc_prim_recv_reduce_send(c, left, right, buf + OFF(i - k - 1), LEN(i - k - 1)));
    RC_CHECK(rc_prim_recv_reduce_copy_send(c, left, right, buf + OFF(i + 1), buf + OFF(i + 1),
                                           LEN(i + 1)));
    for (int k = 0; k < n - 2; k++)
        RC_CHECK(rc_prim_recv_copy_send(c, left, right, buf + OFF(i - k), LEN(i - k) * es));
    return rc_prim_recv(c, left, buf + OFF(i + 2), LEN(i + 2) * es);
#undef OFF
#undef LEN
}

/* 2, direct mode: [at, at + m) (at most a chunk) to every member, folded in
 * member order 0..n-1 in scratch on every member, copied back. */
static rc_status_t direct_allreduce(rc_comm_t *c, const grp_t *g, char *at, uint64_t m) {
    const size_t bytes = (size_t)m * c->cur.esize;
    const int n = g->n, i = g->i;
    char *acc = (char *)c->scratch;
    for (int k = 1; k < n; k++) RC_CHECK(rc_prim_send(c, grp_rank(g, i + k), at, bytes));
    if (i == 0) {
        if (bytes) memcpy(acc, at, bytes);
    } else {
        RC_CHECK(rc_prim_recv(c, grp_rank(g, 0), acc, bytes));
    }
    for (int j = 1; j < n; j++) {
        if (j == i) {
            if (m) c->cur.reduce(acc, acc, at, (size_t)m);
        } else {
            RC_CHECK(rc_prim_recv_reduce(c, grp_rank(g, j), acc, acc, (size_t)m));
        }
    }
    if (bytes) memcpy(at, acc, bytes);
    return RC_OK;
}

rc_status_t rc_allreduce_hier(rc_comm_t *c, const void *in, void *out, uint64_t count) {
    const int L = c->grp_size, H = c->grp_n, l = c->grp_lidx, h = c->grp_idx;
    const size_t es = c->cur.esize;
    const uint64_t chunk = c->chunk_bytes / es;
    const char *src = (const char *)in;
    char *dst = (char *)out;
    const grp_t local = {c->grp_ranks + (size_t)h * (size_t)L, 1, L, l};
    const grp_t cross = {c->grp_ranks + l, L, H, h};
    /* the segment this rank owns after step 1 */
    const int own = rc_mod(l + 1, L);
    const int ring = H > 8 || (H > 2 && count > (uint64_t)L * chunk);
    const int np = ring ? H : 1;
    const uint64_t block = (uint64_t)L * (uint64_t)np * chunk;
    const uint64_t nblocks = rc_nchunks(count, block);

    for (uint64_t b = 0; b < nblocks; b++) {
        const uint64_t base = b * block;
        const uint64_t m = count - base < block ? count - base : block;
        /* 1. reduce-scatter inside the host, piece by piece */
        for (int t = 0; t < np; t++) RC_CHECK(ring_rs(c, &local, src, dst, base, m, np, t));
        /* 2. the owned segment across hosts */
        const uint64_t so = base + rc_seg_off(m, L, own), sl = rc_seg_len(m, L, own);
        if (ring) {
            RC_CHECK(ring_allreduce(c, &cross, dst, so, sl));
        } else {
            if (H > 1) RC_CHECK(direct_allreduce(c, &cross, dst + so * es, sl));
            if (c->cur.scale && sl) c->cur.scale(dst + so * es, (size_t)sl, (double)c->size);
        }
        /* 3. all-gather inside the host */
        for (int t = 0; t < np; t++) RC_CHECK(ring_ag(c, &local, dst, base, m, np, t));
    }
    return RC_OK;
}
