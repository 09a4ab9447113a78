/* broadcast_chain.c - pipelined chain broadcast: root -> root+1 -> ... -> root-1
 * (bandwidth-optimal for large messages).
 *
 * With v = (r - root) mod p, rank v receives every chunk from v-1 and
 * forwards it to v+1 in one fused step (recv_copy_send: the chunk is read
 * out of the left's slot once, into our buffer and the right's slot):
 *
 *   root --c2 c1 c0--> v1 --c1 c0--> v2 --c0--> ... --> v(p-1)
 *   v = 0:        send(next, chunk i)
 *   0 < v < p-1:  recv_copy_send(prev, next, chunk i)
 *   v = p-1:      recv(prev, chunk i)
 *
 * v counts positions of the topology order (topo.c; the identity on one
 * domain) from the root's, so the chain crosses each domain boundary once.
 *
 * The buffer is cut into k = ceil(n / chunk) chunks of chunk_bytes / esize
 * elements (at least one, possibly empty, message per link even for n = 0).
 * All links carry chunks at once: p - 1 + k - 1 pipeline steps.  A chain has
 * no cycle of waits, so it cannot deadlock for any nslots >= 1.
 *
 * Cost: (p + k - 2) (alpha + chunk beta) ~ (p - 1) alpha + n beta for k >> p:
 * every rank sends and receives n bytes once, the minimum.
 */
#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

rc_status_t rc_broadcast_chain(rc_comm_t *c, const rc_task_t *t) {
    const int p = c->size, root = t->root;
    const int me = rc_pos_of(c, c->rank), v = rc_mod(me - rc_pos_of(c, root), p);
    const int prev = rc_rank_at(c, me - 1), next = rc_rank_at(c, me + 1);
    const size_t es = c->cur.esize;
    const uint64_t chunk = c->chunk_bytes / es;
    const uint64_t count = t->count, steps = rc_nchunks(count, chunk);
    char *buf = (char *)t->recvbuf;

    for (uint64_t it = 0; it < steps; it++) {
        const uint64_t n = rc_slice_len(count, chunk, it);
        char *at = n ? buf + it * chunk * es : buf;
        const size_t bytes = (size_t)(n * es);
        if (v == 0)
            RC_CHECK(rc_prim_send(c, next, at, bytes));
        else if (v < p - 1)
            RC_CHECK(rc_prim_recv_copy_send(c, prev, next, at, bytes));
        else
            RC_CHECK(rc_prim_recv(c, prev, at, bytes));
    }
    return RC_OK;
}
