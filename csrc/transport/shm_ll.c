/* shm_ll.c - the shared-memory transport's one-line all-reduce.
 *
 * One-line ("LL") all-reduce (rc_shm_allreduce_ll, for calls of at most
 * RC_SHM_LL_BYTES when every rank is on this host): each rank owns an
 * outbox of RC_SHM_LL_LINES 64-byte lines
 *
 *   [flag 4 | seq 4 | dtype op coll algo 4 | count 4 | payload 48]
 *
 * and writes its contribution to its k-th LL call of the communicator into
 * line k % RC_SHM_LL_LINES, the flag (k + 1) last with release; every peer
 * spins on that one line, so the data travels with the flag: one cache-line
 * transfer per reader instead of head, then slot, then tail.  The
 * descriptor in the line is checked like a slot message's.  A line is
 * reused only once every reader's "consumed" counter (own line, single
 * writer) shows it has finished the call that used it.  The check is
 * cached, and the cache is fed for free: a peer posts its line of call k
 * only after storing consumed = k at the end of call k - 1, so having read
 * every peer's line of call k proves every consumed >= k (acquire on the
 * flag, release on the post).  The consumed lines are therefore read only
 * if that proof ever falls short (never, as all-reduce needs every line:
 * kept as the guard of the invariant), and the fast path touches no line
 * but the outboxes.  Readers that sleep count themselves in the
 * owner's ll waiters word (a counter, several readers may sleep on one
 * line) and the owner wakes them all.
 */
#include <string.h>

#include "shm.h"

int rc_shm_ll_ok(const rc_comm_t *c, size_t bytes) {
    /* comm->tp is the shared-memory table itself only when every peer is on
     * this host (mux.c), so local indices are the global ranks */
    return c->tp == &rc_transport_shm && c->size >= 2 && bytes <= RC_SHM_LL_BYTES && c->shm &&
           c->shm->nl == c->size;
}

static void shm_ll_desc(const shm_ll_line_t *l, rc_desc_t *d) {
    memset(d, 0, sizeof *d);
    d->seq = l->seq;
    d->coll = l->coll;
    d->dtype = l->dtype;
    d->op = l->op;
    d->algo = l->algo;
    d->count = l->count;
    d->root = -1;
}

/* While waiting for `peer`'s line: a peer whose part of a different
 * collective was only sending (a broadcast root) may have moved on, so its
 * published descriptor no longer shows the call; the message it left in
 * our collective slot ring does (this call reads no slot, so the oldest
 * unread message is from this call or a later one). */
static rc_status_t shm_ll_peek_slots(rc_comm_t *c, int peer) {
    rc_desc_t d;
    if (!rc_shm_peek_coll(c, peer, &d)) return RC_OK;
    if (d.seq != c->cur.desc.seq || rc_desc_equal(&d, &c->cur.desc)) return RC_OK;
    return rc_comm_mismatch(c, peer, &d);
}

/* Before writing the line of call `want - 1`: every reader has finished
 * the call that last used it (consumed >= want - RC_SHM_LL_LINES). */
static rc_status_t __attribute__((noinline)) shm_ll_reclaim(rc_comm_t *c, uint32_t want) {
    struct rc_shm *s = c->shm;
    uint32_t need = want - RC_SHM_LL_LINES, lowest = 0;
    int first = 1;
    for (int q = 0; q < s->nl; q++) {
        if (q == s->me) continue;
        _Atomic uint32_t *w = &s->ll[q].consumed;
        uint32_t v = atomic_load_explicit(w, memory_order_acquire);
        while ((int32_t)(v - need) < 0) {
            RC_CHECK(rc_shm_wait_change(c, q, w, v, &s->ll[q].consumed_waiters, "send to", NULL));
            v = atomic_load_explicit(w, memory_order_acquire);
        }
        if (first || (int32_t)(v - lowest) < 0) lowest = v;
        first = 0;
    }
    s->ll_free = lowest + RC_SHM_LL_LINES;
    return RC_OK;
}

rc_status_t rc_shm_allreduce_ll(rc_comm_t *c, const void *in, void *out, uint64_t count) {
    struct rc_shm *s = c->shm;
    const int p = s->nl, me = s->me;
    const size_t n = (size_t)count, bytes = n * c->cur.esize;
    const uint32_t k = s->ll_k++, want = k + 1, idx = k % RC_SHM_LL_LINES;
    const rc_desc_t *cur = &c->cur.desc;

    if (RC_UNLIKELY((int32_t)(s->ll_free - want) < 0)) RC_CHECK(shm_ll_reclaim(c, want));
    shm_ll_t *ob = &s->ll[me];
    shm_ll_line_t *mine = &ob->line[idx];
    mine->seq = cur->seq;
    mine->dtype = cur->dtype;
    mine->op = cur->op;
    mine->coll = cur->coll;
    mine->algo = cur->algo;
    mine->count = (uint32_t)cur->count;
    if (bytes) memcpy(mine->payload, in, bytes);
    /* seq_cst store then load: pairs with a sleeping reader's waiters
     * increment + flag load (as head / head_waiters) */
    atomic_store_explicit(&mine->flag, want, memory_order_seq_cst);
    if (RC_UNLIKELY(atomic_load_explicit(&ob->waiters, memory_order_seq_cst)))
        shm_futex_wake(&mine->flag, 0x7fffffff);

    /* Every contribution from the lines (our own too, so in == out needs no
     * copy aside), reduced in rank order 0..p-1 like allreduce_direct.c:
     * bitwise the same result on every rank and on either path. */
    for (int q = 0; q < p; q++) {
        const shm_ll_line_t *l = &s->ll[q].line[idx];
        if (q != me) {
            uint32_t f = atomic_load_explicit(&l->flag, memory_order_acquire);
            while (RC_UNLIKELY(f != want)) {
                RC_CHECK(rc_shm_wait_change(c, q, (_Atomic uint32_t *)&l->flag, f, &s->ll[q].waiters,
                                         "receive from", shm_ll_peek_slots));
                f = atomic_load_explicit(&l->flag, memory_order_acquire);
            }
            if (RC_UNLIKELY(l->seq != cur->seq || l->coll != cur->coll ||
                            l->dtype != cur->dtype || l->op != cur->op ||
                            l->algo != cur->algo || l->count != cur->count)) {
                rc_desc_t theirs;
                shm_ll_desc(l, &theirs);
                return rc_comm_mismatch(c, q, &theirs);
            }
        }
        if (!n) continue;
        if (q == 0) memcpy(out, l->payload, bytes);
        else c->cur.reduce(out, out, l->payload, n);
    }
    if (c->cur.scale && n) c->cur.scale(out, n, (double)p);
    /* every peer's post of call k: each has finished call k - 1 */
    s->ll_free = k + RC_SHM_LL_LINES;

    atomic_store_explicit(&ob->consumed, want, memory_order_seq_cst);
    if (RC_UNLIKELY(atomic_load_explicit(&ob->consumed_waiters, memory_order_seq_cst)))
        shm_futex_wake(&ob->consumed, 0x7fffffff);
    return RC_OK;
}
