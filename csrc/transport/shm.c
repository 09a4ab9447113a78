/* shm.c - same-host transport through one POSIX shared-memory segment:
 * the waits and their failure checks, the data path over per-rank cell
 * pools and per-pair FIFOs (the layout and the protocol: shm.h's head
 * comment), the p2p events, and single copy.  Making and attaching the
 * segment: shm_setup.c; the one-line all-reduce: shm_ll.c.
 */
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/uio.h>

#include "../p2p.h"

const uint64_t rc_shm_probe_word = 0x52434d4150524f42ull; /* "RCMAPROB" */

/* from, to: local indices */
static _Atomic uint8_t *shm_acks(const rc_comm_t *comm, int from, int to) {
    const struct rc_shm *s = comm->shm;
    return (_Atomic uint8_t *)((char *)s->base + shm_acks_off(s->nl) +
                               ((size_t)from * (size_t)s->nl + (size_t)to) * SHM_ACK_FLAGS);
}

static void shm_ring_info(shm_rankinfo_t *ri) {
    atomic_fetch_add_explicit(&ri->bell, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&ri->bell_waiters, memory_order_seq_cst))
        shm_futex_wake(&ri->bell, 1);
}

/* ring global rank `rank`'s doorbell */
static void shm_ring(rc_comm_t *comm, int rank) {
    shm_ring_info(&comm->shm->info[comm->shm->g2l[rank]]);
}

/* ---- cells: giving back, draining for a starved owner ---- */

/* Give cell c back to local rank q's pool of the lane. */
static inline void shm_cell_return(struct rc_shm *s, int q, int lane, uint32_t c) {
    shm_pool_t *pl = shm_pool(s, q, lane);
    atomic_fetch_or_explicit(&pl->returned, 1u << c, memory_order_seq_cst);
    if (RC_UNLIKELY(atomic_load_explicit(&pl->waiters, memory_order_seq_cst)))
        shm_futex_wake(&pl->returned, 1);
    if (RC_UNLIKELY(atomic_load_explicit(&pl->starved, memory_order_relaxed)))
        shm_ring_info(&s->info[q]); /* a p2p engine that could not send sleeps on its bell */
}

static void *shm_spare_get(struct rc_shm *s, size_t bytes) {
    void *b = s->spare;
    if (b) {
        s->spare = *(void **)b;
        return b;
    }
    return malloc(bytes > sizeof(void *) ? bytes : sizeof(void *));
}

static void shm_spare_put(struct rc_shm *s, void *b) {
    *(void **)b = s->spare;
    s->spare = b;
}

/* Some rank of this host has no free cell: copy the messages of starved
 * senders that this rank holds, but has not lent to a caller that may be
 * using them, into private memory and give their cells back (shm.h). */
static void __attribute__((noinline)) shm_drain(rc_comm_t *comm) {
    struct rc_shm *s = comm->shm;
    for (int q = 0; q < s->nl; q++) {
        if (q == s->me) continue;
        for (int lane = 0; lane < RC_NLANES; lane++) {
            if (!atomic_load_explicit(&shm_pool(s, q, lane)->starved, memory_order_acquire))
                continue;
            shm_end_t *e = &s->rx[lane * comm->size + s->l2g[q]];
            uint32_t head = atomic_load_explicit(&e->f->head, memory_order_acquire);
            if (head == e->pos) continue;
            if (!e->copy && !(e->copy = calloc(s->depth, sizeof *e->copy))) return;
            for (uint32_t pos = e->pos; pos != head && pos - e->pos < s->depth; pos++) {
                uint32_t k = pos % s->depth;
                if ((pos == e->pos && e->pinned) || e->copy[k]) continue;
                const shm_entry_t *en = &e->f->e[k];
                uint32_t c = en->cell, bytes = en->desc.bytes;
                /* nonsense is left in place: the receive reports it */
                if (c >= s->ncells[lane] || bytes > comm->chunk_bytes) continue;
                void *b = shm_spare_get(s, comm->chunk_bytes);
                if (!b) return;
                memcpy(b, shm_cell(s, q, lane, c), bytes);
                e->copy[k] = b;
                shm_cell_return(s, q, lane, c);
            }
        }
    }
}

static inline void shm_drain_if_starving(rc_comm_t *comm) {
    if (RC_UNLIKELY(atomic_load_explicit(&comm->shm->hdr->starving, memory_order_acquire)))
        shm_drain(comm);
}

/* ---- failure paths (slow, out of line) ---- */

static rc_status_t shm_check_abort(rc_comm_t *comm) {
    shm_hdr_t *h = comm->shm->hdr;
    if (RC_LIKELY(atomic_load_explicit(&h->abort_state, memory_order_acquire) != 2)) return RC_OK;
    return rc_comm_adopt_abort(comm, h->abort_rank, (rc_status_t)h->abort_status, h->abort_msg,
                               &rc_transport_shm);
}

/* Is the peer's process gone?  A pidfd (Linux >= 5.3) turns readable when
 * the process exits, even while it is an unreaped zombie, and never names a
 * recycled pid; without one, kill(pid, 0) plus the zombie state in
 * /proc/<pid>/stat. */
static int shm_peer_dead(rc_comm_t *comm, int r /* local */, pid_t *pid_out) {
    struct rc_shm *s = comm->shm;
    pid_t pid = atomic_load_explicit(&s->info[r].pid, memory_order_relaxed);
    *pid_out = pid;
    if (pid <= 0) return 0;
    if (s->pidfd && s->pidfd[r] >= 0) {
        struct pollfd pfd = {s->pidfd[r], POLLIN, 0};
        return poll(&pfd, 1, 0) > 0;
    }
    if (kill(pid, 0) != 0) return errno == ESRCH;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *close_paren = strrchr(buf, ')');
    return close_paren && (close_paren[2] == 'Z' || close_paren[2] == 'X');
}

/* Read a peer's published descriptor (seqlock); 0 when it kept changing. */
static int shm_peer_desc(rc_comm_t *comm, int peer /* local */, rc_desc_t *theirs) {
    shm_rankinfo_t *ri = &comm->shm->info[peer];
    for (int tries = 0; tries < 100; tries++) {
        uint32_t v0 = atomic_load_explicit(&ri->pub, memory_order_acquire);
        if (v0 & 1u) continue;
        memcpy(theirs, (const void *)&ri->desc, sizeof *theirs);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&ri->pub, memory_order_relaxed) != v0) continue;
        return 1;
    }
    return 0;
}

/* 1 when the peer is in the same collective call (same sequence number) but
 * described differently. */
static int shm_peer_mismatch(rc_comm_t *comm, int peer /* local */, rc_desc_t *theirs) {
    if (!shm_peer_desc(comm, peer, theirs)) return 0;
    if (theirs->seq != comm->cur.desc.seq || theirs->coll == RC_COLL_NONE) return 0;
    return !rc_desc_equal(theirs, &comm->cur.desc);
}

/* The awaited peer's published call, when it is a later one (comm.c). */
static int shm_peer_left(rc_comm_t *comm, int peer /* global */, rc_desc_t *theirs) {
    int q = comm->shm->g2l[peer];
    return q >= 0 && shm_peer_desc(comm, q, theirs) && rc_comm_peer_is_ahead(comm, theirs);
}

/* The stall inspector (as Horovod's): which ranks have not reached this
 * collective, and the last call each of them did reach. */
static void shm_stragglers(rc_comm_t *comm, char *buf, size_t len) {
    const struct rc_shm *s = comm->shm;
    size_t n = 0;
    buf[0] = 0;
    for (int q = 0; q < s->nl && n + 80 < len; q++) {
        rc_desc_t d;
        int r = s->l2g[q];
        if (q == s->me || !shm_peer_desc(comm, q, &d)) continue;
        if (d.coll != RC_COLL_NONE && d.seq == comm->cur.desc.seq) continue; /* arrived */
        char last[180] = "no collective yet";
        if (d.coll != RC_COLL_NONE) {
            memcpy(last, "last in ", 8);
            rc_desc_format(&d, last + 8, sizeof last - 8);
        }
        n += (size_t)snprintf(buf + n, len - n, "%s%d (%s)", n ? ", " : "", r, last);
    }
    if (!n) snprintf(buf, len, "none (every rank is in this call)");
    if (s->nl < comm->size && n + 40 < len)
        snprintf(buf + strlen(buf), len - strlen(buf), "; ranks on other hosts not inspected");
}

static rc_status_t shm_slow_checks(rc_comm_t *comm, int peer, double t0, const char *what,
                                   int *warned, _Atomic uint32_t *word, uint32_t seen) {
    RC_CHECK(shm_check_abort(comm));
    const struct rc_shm *s = comm->shm;
    for (int q = 0; q < s->nl; q++) {
        int r = s->l2g[q];
        if (q == s->me) continue;
        rc_desc_t theirs;
        if (shm_peer_mismatch(comm, q, &theirs)) return rc_comm_mismatch(comm, r, &theirs);
        pid_t pid;
        if (shm_peer_dead(comm, q, &pid)) {
            /* It posted what this rank waits for and then exited (its part
             * of the call was done: the last ring step, then close and exit,
             * as a shrink()'s survivors do without MPI_Finalize): this step
             * completes; a later wait on it fails. */
            if (atomic_load_explicit(word, memory_order_acquire) != seen) return RC_OK;
            char mine[160];
            rc_desc_format(&comm->cur.desc, mine, sizeof mine);
            return rc_comm_fail(comm, RC_ERR_PEER_LOST,
                                "rank %d (pid %d) is gone: rank %d was in %s, waiting to %s rank %d",
                                r, (int)pid, comm->rank, mine, what, peer);
        }
    }
    return rc_comm_wait_check(comm, t0, what, peer, "", "", shm_stragglers, warned);
}

/* Abort record and the liveness of every peer (`doing`: for the message);
 * also gives back a starved peer's cells. */
static rc_status_t shm_health(rc_comm_t *comm, const char *doing) {
    const struct rc_shm *s = comm->shm;
    RC_CHECK(shm_check_abort(comm));
    shm_drain_if_starving(comm); /* other transports' waits call this: they drain too */
    for (int q = 0; q < s->nl; q++) {
        if (q == s->me) continue;
        pid_t pid;
        if (shm_peer_dead(comm, q, &pid))
            return rc_comm_fail(comm, RC_ERR_PEER_LOST, "rank %d (pid %d) is gone: rank %d was %s",
                                s->l2g[q], (int)pid, comm->rank, doing);
    }
    return RC_OK;
}

/* While a collective waits, pending sends and receives keep moving, and
 * so does every other transport in use (peers on other hosts: their
 * health call moves queued network sends and reports a lost peer, so a
 * wait on this host never holds back a chain that crosses hosts). */
static rc_status_t shm_wait_side_work(rc_comm_t *comm, const char *doing) {
    if (RC_UNLIKELY(atomic_load_explicit(&comm->stop, memory_order_relaxed)))
        return rc_comm_fail(comm, RC_ERR_INVALID_ARG,
                            "rank %d: the communicator was closed during a call", comm->rank);
    if (comm->p2p_active) {
        int moved = rc_p2p_progress(comm);
        if (moved < 0) return (rc_status_t)moved;
    }
    if (doing) {
        rc_status_t st = rc_mux_others_health(comm, &rc_transport_shm, doing);
        /* A rank of this host that failed first (its record written before
         * it told the other hosts) is the cause; a connection closed by a
         * remote rank that gave up because of it is only the consequence. */
        shm_hdr_t *h = comm->shm->hdr;
        if (st != RC_OK && atomic_load_explicit(&h->abort_state, memory_order_acquire) == 2 &&
            h->abort_rank != comm->rank)
            return shm_check_abort(comm);
        return st;
    }
    return RC_OK;
}

/* Wait until *word != seen (what = "receive from" / "send to").  *waiters
 * counts the sleepers (several readers may sleep on one word).  `extra`
 * (NULL: none) runs with the slow checks: a failure only the caller can see. */

/* Wait until *word != seen (what = "receive from" / "send to").  *waiters
 * counts the sleepers (several readers may sleep on one word).  `extra`
 * (NULL: none) runs with the slow checks: a failure only the caller can see.
 * A rank that waits also drains for a starved peer (shm.h), and says which
 * word it sleeps on so that such a peer can wake it. */
rc_status_t __attribute__((noinline))
rc_shm_wait_change(rc_comm_t *comm, int peer, _Atomic uint32_t *word, uint32_t seen,
                   _Atomic uint32_t *waiters, const char *what, shm_wait_check_fn extra) {
    struct rc_shm *s = comm->shm;
    for (uint32_t i = 0; i < s->spin; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != seen) return RC_OK;
        shm_cpu_relax();
    }
    double t0 = rc_now(), next_check = t0, ahead_since = 0;
    int warned = 0;
    char doing_buf[64], *doing = NULL;
    if (comm->ntps > 1) {
        snprintf(doing_buf, sizeof doing_buf, "waiting to %s rank %d", what, peer);
        doing = doing_buf;
    }
    const uint64_t off = (uint64_t)((char *)word - (char *)s->base);
    for (uint32_t i = 0;; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != seen) return RC_OK;
        shm_drain_if_starving(comm);
        if (i < s->yields) {
            sched_yield();
        } else {
            atomic_store_explicit(&s->self->sleep_off, off, memory_order_relaxed);
            atomic_fetch_add_explicit(waiters, 1, memory_order_seq_cst);
            if (atomic_load_explicit(word, memory_order_seq_cst) == seen)
                shm_futex_wait(word, seen, 2000000L); /* 2 ms: re-check flags then */
            atomic_fetch_sub_explicit(waiters, 1, memory_order_relaxed);
            atomic_store_explicit(&s->self->sleep_off, 0, memory_order_relaxed);
        }
        /* A failure recorded by a rank that got past this step (it saw our
         * peer's post first, e.g. a mismatch in the next call): the post is
         * visible now, so this step completes; the failure shows at the next
         * wait.  (Word re-read after the record: no window between them.) */
        if (RC_UNLIKELY(atomic_load_explicit(&s->hdr->abort_state, memory_order_acquire) == 2) &&
            atomic_load_explicit(word, memory_order_acquire) != seen)
            return RC_OK;
        RC_CHECK(shm_check_abort(comm));
        RC_CHECK(shm_wait_side_work(comm, doing));
        double now = rc_now();
        if (now >= next_check) {
            if (extra) RC_CHECK(extra(comm, peer));
            RC_CHECK(shm_slow_checks(comm, peer, t0, what, &warned, word, seen));
            rc_desc_t later;
            /* the peer's later call seen (acquire) and still nothing here:
             * what it did in this call is complete, and it was not this.
             * After 0.2 s: a rank that received the peer's part of the call
             * names both calls, which this rank cannot (its text wins). */
            if (shm_peer_left(comm, peer, &later) &&
                atomic_load_explicit(word, memory_order_acquire) == seen)
                RC_CHECK(rc_comm_peer_left(comm, peer, what, &later, &ahead_since, 0.2));
            next_check = now + 0.05;
        }
    }
}

/* ---- data path ---- */

static void shm_unstarve(struct rc_shm *s, int lane) {
    s->starving[lane] = 0;
    atomic_store_explicit(&shm_pool(s, s->me, lane)->starved, 0, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->hdr->starving, 1, memory_order_seq_cst);
}

/* Wake the ranks that hold messages of ours and sleep, so that they drain. */
static void shm_wake_holders(rc_comm_t *comm, int lane) {
    struct rc_shm *s = comm->shm;
    for (int q = 0; q < s->nl; q++) {
        if (q == s->me) continue;
        shm_end_t *e = &s->tx[lane * comm->size + s->l2g[q]];
        if (atomic_load_explicit(&e->f->tail, memory_order_relaxed) == e->pos) continue;
        uint64_t off = atomic_load_explicit(&s->info[q].sleep_off, memory_order_seq_cst);
        if (off && off % 4 == 0 && off + 4 <= s->bytes)
            shm_futex_wake((_Atomic uint32_t *)((char *)s->base + off), 0x7fffffff);
    }
}

/* No free cell: mark the pool starved (the ranks that hold our messages
 * copy them out and give the cells back), and wait for a returned cell
 * unless !wait.  *m: the returned cells. */
static rc_status_t __attribute__((noinline))
shm_starve(rc_comm_t *comm, int lane, int peer, int wait, uint32_t *m) {
    struct rc_shm *s = comm->shm;
    shm_pool_t *pl = shm_pool(s, s->me, lane);
    if (!s->starving[lane]) {
        s->starving[lane] = 1;
        atomic_store_explicit(&pl->starved, 1, memory_order_seq_cst);
        atomic_fetch_add_explicit(&s->hdr->starving, 1, memory_order_seq_cst);
        RC_LOG(RC_TRACE, "rank %d: all %u cells of lane %d are in use: the peers give them back",
               comm->rank, s->ncells[lane], lane);
    }
    for (;;) {
        *m = atomic_exchange_explicit(&pl->returned, 0, memory_order_acquire);
        if (*m) break;
        if (!wait) return RC_INPROGRESS; /* still starved: the releases ring our bell */
        shm_wake_holders(comm, lane);
        RC_CHECK(rc_shm_wait_change(comm, peer, &pl->returned, 0, &pl->waiters, "send to", NULL));
    }
    shm_unstarve(s, lane);
    return RC_OK;
}

/* A cell of ours for the next message of the lane: the lowest free one.
 * The returned bits are fetched when none is free, or when the lowest free
 * cell is past the `hot` few that one stream cycles through, so a stream
 * keeps reusing the cells that are warm in cache. */
static inline rc_status_t shm_cell_take(rc_comm_t *comm, int lane, int peer, int wait,
                                        int32_t *cell) {
    struct rc_shm *s = comm->shm;
    uint32_t m = s->free[lane];
    if (RC_UNLIKELY(m == 0 || (uint32_t)__builtin_ctz(m) >= s->hot)) {
        shm_pool_t *pl = shm_pool(s, s->me, lane);
        if (m == 0 || atomic_load_explicit(&pl->returned, memory_order_relaxed))
            m |= atomic_exchange_explicit(&pl->returned, 0, memory_order_acquire);
        if (RC_UNLIKELY(m == 0)) RC_CHECK(shm_starve(comm, lane, peer, wait, &m));
        else if (RC_UNLIKELY(s->starving[lane])) shm_unstarve(s, lane);
    }
    uint32_t c = (uint32_t)__builtin_ctz(m);
    s->free[lane] = m & ~(1u << c);
    *cell = (int32_t)c;
    return RC_OK;
}

static rc_status_t shm_send_acquire(rc_comm_t *comm, int lane, int peer, void **buf, int wait) {
    struct rc_shm *s = comm->shm;
    shm_end_t *e = &s->tx[lane * comm->size + peer];
    while (RC_UNLIKELY(e->pos - e->other >= s->depth)) {
        e->other = atomic_load_explicit(&e->f->tail, memory_order_acquire);
        if (e->pos - e->other < s->depth) break;
        if (!wait) return RC_INPROGRESS;
        RC_CHECK(rc_shm_wait_change(comm, peer, &e->f->tail, e->other, &e->f->tail_waiters,
                                    "send to", NULL));
    }
    if (e->cell < 0) RC_CHECK(shm_cell_take(comm, lane, peer, wait, &e->cell));
    *buf = shm_cell(s, s->me, lane, (uint32_t)e->cell);
    return RC_OK;
}

static rc_status_t shm_send_commit(rc_comm_t *comm, int lane, int peer, const rc_desc_t *d) {
    struct rc_shm *s = comm->shm;
    shm_end_t *e = &s->tx[lane * comm->size + peer];
    if (RC_UNLIKELY(e->cell < 0))
        return rc_comm_fail(comm, RC_ERR_INTERNAL, "rank %d: a message to rank %d was posted "
                            "without a cell", comm->rank, peer);
    shm_entry_t *en = &e->f->e[e->pos % s->depth];
    memcpy(&en->desc, d, sizeof *d);
    en->cell = (uint32_t)e->cell;
    e->cell = -1;
    e->pos++;
    /* seq_cst store then load: pairs with the receiver's waiters store + load. */
    atomic_store_explicit(&e->f->head, e->pos, memory_order_seq_cst);
    if (RC_UNLIKELY(atomic_load_explicit(&e->f->head_waiters, memory_order_seq_cst)))
        shm_futex_wake(&e->f->head, 1);
    if (lane == RC_LANE_P2P) shm_ring(comm, peer);
    return RC_OK;
}

static rc_status_t shm_recv_acquire(rc_comm_t *comm, int lane, int peer, const void **buf,
                                    rc_desc_t *d, int wait) {
    struct rc_shm *s = comm->shm;
    shm_end_t *e = &s->rx[lane * comm->size + peer];
    while (RC_UNLIKELY(e->other == e->pos)) {
        e->other = atomic_load_explicit(&e->f->head, memory_order_acquire);
        if (e->other != e->pos) break;
        if (!wait) return RC_INPROGRESS;
        RC_CHECK(rc_shm_wait_change(comm, peer, &e->f->head, e->pos, &e->f->head_waiters,
                                    "receive from", NULL));
    }
    const uint32_t k = e->pos % s->depth;
    const shm_entry_t *en = &e->f->e[k];
    memcpy(d, &en->desc, sizeof *d);
    if (RC_UNLIKELY(e->copy && e->copy[k])) {
        *buf = e->copy[k];
    } else {
        uint32_t c = en->cell;
        if (RC_UNLIKELY(c >= s->ncells[lane]))
            return rc_comm_fail(comm, RC_ERR_INTERNAL, "rank %d: corrupt message from rank %d: "
                                "cell %u of a pool of %u", comm->rank, peer, c, s->ncells[lane]);
        e->cell = (int32_t)c;
        *buf = shm_cell(s, e->q, lane, c);
    }
    /* a caller that waits while it holds the message (a fused receive-
     * reduce-send taking a cell) must find it where it was lent */
    if (wait) e->pinned = 1;
    return RC_OK;
}

static void shm_recv_release(rc_comm_t *comm, int lane, int peer) {
    struct rc_shm *s = comm->shm;
    shm_end_t *e = &s->rx[lane * comm->size + peer];
    const uint32_t k = e->pos % s->depth;
    if (RC_UNLIKELY(e->copy && e->copy[k])) {
        shm_spare_put(s, e->copy[k]);
        e->copy[k] = NULL;
    } else if (e->cell >= 0) {
        shm_cell_return(s, e->q, lane, (uint32_t)e->cell);
    }
    e->cell = -1;
    e->pinned = 0;
    e->pos++;
    atomic_store_explicit(&e->f->tail, e->pos, memory_order_seq_cst);
    if (RC_UNLIKELY(atomic_load_explicit(&e->f->tail_waiters, memory_order_seq_cst)))
        shm_futex_wake(&e->f->tail, 1);
    if (lane == RC_LANE_P2P) shm_ring(comm, peer);
}

int rc_shm_peek_coll(rc_comm_t *comm, int peer, rc_desc_t *d) {
    struct rc_shm *s = comm->shm;
    shm_end_t *e = &s->rx[RC_LANE_COLL * comm->size + peer];
    if (atomic_load_explicit(&e->f->head, memory_order_acquire) == e->pos) return 0;
    memcpy(d, &e->f->e[e->pos % s->depth].desc, sizeof *d);
    return 1;
}

static uint32_t shm_events(rc_comm_t *comm) {
    return atomic_load_explicit(&comm->shm->self->bell, memory_order_acquire);
}

static void shm_kick(rc_comm_t *comm) { shm_ring_info(comm->shm->self); }

/* Sleep until the doorbell moves or max_s passes: spin, yield, then futex. */
static void shm_wait_events(rc_comm_t *comm, uint32_t seen, double max_s) {
    struct rc_shm *s = comm->shm;
    shm_rankinfo_t *ri = s->self;
    for (uint32_t i = 0; i < s->spin; i++) {
        if (atomic_load_explicit(&ri->bell, memory_order_acquire) != seen) return;
        shm_cpu_relax();
    }
    for (uint32_t i = 0; i < s->yields; i++) {
        if (atomic_load_explicit(&ri->bell, memory_order_acquire) != seen) return;
        sched_yield();
    }
    shm_drain_if_starving(comm);
    long ns = max_s >= 0.002 ? 2000000L : (long)(max_s * 1e9);
    if (ns <= 0) return;
    atomic_store_explicit(&ri->sleep_off, (uint64_t)((char *)&ri->bell - (char *)s->base),
                          memory_order_relaxed);
    atomic_store_explicit(&ri->bell_waiters, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&ri->bell, memory_order_seq_cst) == seen)
        shm_futex_wait(&ri->bell, seen, ns);
    atomic_store_explicit(&ri->bell_waiters, 0, memory_order_relaxed);
    atomic_store_explicit(&ri->sleep_off, 0, memory_order_relaxed);
}

static void shm_publish(rc_comm_t *comm) {
    shm_rankinfo_t *ri = comm->shm->self;
    uint32_t v = atomic_load_explicit(&ri->pub, memory_order_relaxed);
    atomic_store_explicit(&ri->pub, v + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    memcpy((void *)&ri->desc, &comm->cur.desc, sizeof ri->desc);
    atomic_store_explicit(&ri->pub, v + 2, memory_order_release);
}

static void shm_abort(rc_comm_t *comm, rc_status_t st, const char *msg) {
    struct rc_shm *s = comm->shm;
    if (!s || !s->hdr) return;
    int32_t expect = 0;
    if (!atomic_compare_exchange_strong(&s->hdr->abort_state, &expect, 1)) return;
    s->hdr->abort_status = st;
    s->hdr->abort_rank = comm->rank;
    snprintf(s->hdr->abort_msg, sizeof s->hdr->abort_msg, "%s", msg);
    atomic_store_explicit(&s->hdr->abort_state, 2, memory_order_release);
}

/* ---- single copy (CMA) ---- */

/* Can `peer` read this rank's memory (so a large send may go by address)? */
static int shm_cma_ok(rc_comm_t *comm, int peer) {
    const struct rc_shm *s = comm->shm;
    int q = s->g2l[peer];
    if (s->me >= 64 || q < 0 || q >= 64 || !comm->cma_min) return 0;
    uint64_t m = atomic_load_explicit(&s->info[q].cma_mask, memory_order_acquire);
    return (int)((m >> s->me) & 1u);
}

/* Read `len` bytes at `remote` in `peer`'s memory into dst. */
static rc_status_t shm_cma_read(rc_comm_t *comm, int peer, void *dst, uint64_t remote,
                                size_t len) {
    pid_t pid = atomic_load_explicit(&comm->shm->info[comm->shm->g2l[peer]].pid,
                                     memory_order_relaxed);
    char *d = dst;
    while (len) {
        size_t n = len < (1u << 30) ? len : (1u << 30);
        struct iovec lv = {d, n}, rv = {(void *)(uintptr_t)remote, n};
        ssize_t got = process_vm_readv(pid, &lv, 1, &rv, 1, 0);
        if (got < 0 && errno == ESRCH)
            return rc_comm_fail(comm, RC_ERR_PEER_LOST, "rank %d (pid %d) is gone: rank %d was "
                                "reading its message", peer, (int)pid, comm->rank);
        if (got <= 0)
            return rc_comm_fail(comm, RC_ERR_IO, "rank %d: reading %zu bytes of rank %d's "
                                "message (pid %d) failed: %s", comm->rank, n, peer, (int)pid,
                                got < 0 ? strerror(errno) : "nothing read");
        d += got;
        remote += (uint64_t)got;
        len -= (size_t)got;
    }
    return RC_OK;
}

/* Receiver: message `msg` from `peer` has been read. */
static void shm_ack_set(rc_comm_t *comm, int peer, uint32_t msg) {
    const struct rc_shm *s = comm->shm;
    atomic_store_explicit(&shm_acks(comm, s->g2l[peer], s->me)[msg % SHM_ACK_FLAGS], 1,
                          memory_order_release);
    shm_ring(comm, peer);
}

/* Sender: was message `msg` to `peer` read?  Clears the flag when it was. */
static int shm_ack_take(rc_comm_t *comm, int peer, uint32_t msg) {
    const struct rc_shm *s = comm->shm;
    _Atomic uint8_t *f = &shm_acks(comm, s->me, s->g2l[peer])[msg % SHM_ACK_FLAGS];
    if (!atomic_load_explicit(f, memory_order_acquire)) return 0;
    atomic_store_explicit(f, 0, memory_order_relaxed);
    return 1;
}


/* Phase 1: how much room this host's /dev/shm has (for the chunk size, comm.c). */
static void shm_address(rc_comm_t *comm, rc_addr_t *a) {
    (void)comm;
    unsigned long long f = rc_shm_dir_free(), mib = f >> 20;
    a->shm_free_mib = f == ~0ull ? 0u : mib == 0 ? 1u : mib > 0xfffffffeull ? 0xfffffffeu
                                                                       : (uint32_t)mib;
}

static int shm_can_connect(const rc_addr_t *self, const rc_addr_t *peer) {
    return strncmp(self->host, peer->host, sizeof self->host) == 0;
}

const rc_transport_ops_t rc_transport_shm = {
    .name = "shm",
    .can_connect = shm_can_connect,
    .create = rc_shm_create,
    .address = shm_address,
    .connect = rc_shm_connect,
    .send_acquire = shm_send_acquire,
    .send_commit = shm_send_commit,
    .recv_acquire = shm_recv_acquire,
    .recv_release = shm_recv_release,
    .events = shm_events,
    .wait_events = shm_wait_events,
    .kick = shm_kick,
    .health = shm_health,
    .cma_ok = shm_cma_ok,
    .cma_read = shm_cma_read,
    .ack_set = shm_ack_set,
    .ack_take = shm_ack_take,
    .publish = shm_publish,
    .abort = shm_abort,
    .close = rc_shm_close,
};
