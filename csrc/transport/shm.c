/* shm.c - same-host transport through one POSIX shared-memory segment.
 *
 * The segment serves the ranks of one host only (those comm.c routes to
 * this transport, plus this rank): p below is their count and every index
 * inside the segment is a *local* index 0..p-1 (the ranks in global order);
 * the transport's entry points take global ranks and map them (g2l / l2g),
 * and every message names global ranks.
 *
 * Layout of the segment "/ringcomm-<token>-<hash of the host identity>"
 * (created at connect by the host's lowest rank, 0600, O_EXCL, the others
 * open it with retries; unlinked by the last rank to map it, so a crash
 * leaves nothing behind; the hash keeps simulated hosts on one machine,
 * RINGCOMM_HOST_ID, apart):
 *
 *   [header 4 KiB][rank info: 64 B x p][acks: 64 B x p x p]
 *   [one-line outboxes: 640 B x p]
 *   [lane 0: channel 0->0 ... p-1->p-1][lane 1: ...]
 *
 * Lane 0 carries collectives, lane 1 point-to-point messages, so that a
 * pending send never sits in front of a collective's chunks.  A channel
 * (one per lane and ordered rank pair) is a single-producer single-consumer
 * ring of `nslots` slots of `chunk_bytes` payload:
 *
 *   line 0: head          (messages posted, written by the sender)
 *   line 1: head_waiters  (receiver sleeps on head: sender must FUTEX_WAKE)
 *   line 2: tail          (messages consumed, written by the receiver)
 *   line 3: tail_waiters  (sender sleeps on tail)
 *   slots:  [rc_desc_t 24 B | pad to 32 | payload chunk_bytes] x nslots
 *
 * Counters are 32-bit and wrap; only differences are compared.  The receiver
 * reads (or reduces) straight out of the slot: no staging copy.  Waits spin
 * with `pause`, then sched_yield, then sleep on a futex with a short timeout
 * so that the abort flag, peer liveness and the deadline are checked.
 *
 * Each rank's info line also holds a doorbell: a counter that moves when a
 * point-to-point message arrives for the rank or a p2p slot it filled is
 * freed, so the p2p engine can sleep on one futex for all its peers.
 *
 * Single copy (CMA): at connect every rank checks with process_vm_readv that
 * it may read each peer's memory (a probe word whose address it publishes)
 * and publishes the mask of peers it can read.  Large point-to-point
 * messages then go as a 16-byte "ready to send" (address, length): the
 * receiver reads the sender's buffer straight into its own and sets the
 * message's flag in the ack line of the (sender, receiver) pair (64 flags,
 * by message number mod 64).  Where the kernel refuses (Yama ptrace_scope,
 * containers), messages stream through the slots as before.
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
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../p2p.h"
#include "transport.h"

#define SHM_MAGIC 0x3230484d53435252ull /* "RRCSMH02": 02 added the one-line outboxes */
#define SHM_HDR_BYTES 4096
#define SHM_SLOT_HDR 32

typedef struct {
    uint64_t magic;
    uint32_t size;
    uint32_t nslots;
    uint64_t chunk_bytes;
    uint64_t slot_stride;
    uint64_t chan_bytes;
    uint64_t total_bytes;
    int32_t algo_env; /* rank 0's communicator-wide tuning */
    uint64_t unused0, unused1; /* were auto thresholds (kept: the layout is fuzzed) */
    uint64_t stream_min;
    _Atomic uint32_t attached;
    _Atomic int32_t abort_state; /* 0 none, 1 being written, 2 set */
    int32_t abort_status;
    int32_t abort_rank;
    char abort_msg[1024];
    _Atomic uint32_t probed; /* ranks that published their single-copy mask */
    rc_tune_t tune;          /* rank 0's "auto" thresholds */
} shm_hdr_t;
_Static_assert(sizeof(shm_hdr_t) <= SHM_HDR_BYTES, "shm header");

typedef struct {
    _Atomic int32_t pid;
    _Atomic uint32_t pub; /* seqlock: odd while desc is being written */
    rc_desc_t desc;
    _Atomic uint32_t bell;         /* p2p doorbell (see the head comment) */
    _Atomic uint32_t bell_waiters; /* the owner sleeps on bell: FUTEX_WAKE it */
    uint64_t probe_addr;           /* CMA probe word in this rank's memory */
    _Atomic uint64_t cma_mask;     /* bit q: this rank can read rank q's memory */
    char pad[RC_CACHELINE - 32 - sizeof(rc_desc_t)];
} shm_rankinfo_t;
_Static_assert(sizeof(shm_rankinfo_t) == RC_CACHELINE, "rank info");

typedef struct {
    _Alignas(RC_CACHELINE) _Atomic uint32_t head;
    _Alignas(RC_CACHELINE) _Atomic uint32_t head_waiters;
    _Alignas(RC_CACHELINE) _Atomic uint32_t tail;
    _Alignas(RC_CACHELINE) _Atomic uint32_t tail_waiters;
} shm_chan_t;

/* One line of a rank's one-line outbox (see the head comment). */
typedef struct {
    _Alignas(RC_CACHELINE) _Atomic uint32_t flag; /* k + 1 for the owner's k-th LL call */
    uint32_t seq;                                 /* the call's comm->cur.desc */
    uint8_t dtype, op, coll, algo;
    uint32_t count;
    unsigned char payload[RC_SHM_LL_BYTES];
} shm_ll_line_t;
_Static_assert(sizeof(shm_ll_line_t) == RC_CACHELINE, "one-line message");

typedef struct {
    shm_ll_line_t line[RC_SHM_LL_LINES];           /* written by the owner */
    _Alignas(RC_CACHELINE) _Atomic uint32_t consumed; /* LL calls the owner finished reading */
    _Atomic uint32_t consumed_waiters;             /* writers asleep on consumed */
    _Alignas(RC_CACHELINE) _Atomic uint32_t waiters; /* readers asleep on a line's flag */
} shm_ll_t;
_Static_assert(sizeof(shm_ll_t) == (RC_SHM_LL_LINES + 2) * RC_CACHELINE, "one-line outbox");

typedef struct {
    shm_chan_t *ch;
    char *slots;
    uint32_t pos;    /* my counter: messages posted (tx) or consumed (rx) */
    uint32_t other;  /* last seen value of the other side's counter */
} shm_end_t;

struct rc_shm {
    char name[96];
    void *base;
    size_t bytes;
    shm_hdr_t *hdr;
    shm_rankinfo_t *info;
    int unlinked;
    /* indexed by *global* rank (entries of ranks on other hosts unused), so
     * the data path needs no translation */
    shm_end_t *tx; /* [lane * size + peer]: channel me -> peer */
    shm_end_t *rx; /* [lane * size + peer]: channel peer -> me */
    uint32_t spin;
    uint32_t yields;
    size_t slot_stride; /* copied from the header once checked */
    int nl;        /* ranks on this segment (this host) */
    int me;        /* this rank's local index */
    int *l2g;      /* [local index] = global rank */
    int *g2l;      /* [global rank] = local index, -1 for ranks elsewhere */
    shm_rankinfo_t *self; /* info[me] */
    int *pidfd;    /* [local index]: pidfd_open of the peer's process (-1: none) */
    shm_ll_t *ll;  /* [local index]: one-line outboxes */
    uint32_t ll_k;    /* LL calls made on this communicator (the same on every rank) */
    uint32_t ll_free; /* cached: LL calls k with k + 1 <= ll_free may write their line */
};

/* ------------------------------------------------------------------ */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val, long ns) {
    struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT, val, &ts, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
}

#define SHM_ACK_FLAGS 64 /* per (sender, receiver): one cache line of flags (p2p.c's RC_P2P_MAX_ACKS) */

static size_t shm_acks_off(int p) { return SHM_HDR_BYTES + (size_t)p * sizeof(shm_rankinfo_t); }

static size_t shm_ll_off(int p) { return shm_acks_off(p) + (size_t)p * (size_t)p * SHM_ACK_FLAGS; }

static size_t shm_lanes_off(int p) { return shm_ll_off(p) + (size_t)p * sizeof(shm_ll_t); }

static size_t shm_total_bytes(int p, size_t chan_bytes) {
    return shm_lanes_off(p) + (size_t)RC_NLANES * (size_t)p * (size_t)p * chan_bytes;
}

/* from, to: local indices */
static _Atomic uint8_t *shm_acks(const rc_comm_t *comm, int from, int to) {
    const struct rc_shm *s = comm->shm;
    return (_Atomic uint8_t *)((char *)s->base + shm_acks_off(s->nl) +
                               ((size_t)from * (size_t)s->nl + (size_t)to) * SHM_ACK_FLAGS);
}

/* from, to: local indices */
static shm_chan_t *shm_chan(const rc_comm_t *comm, int lane, int from, int to) {
    const struct rc_shm *s = comm->shm;
    size_t p = (size_t)s->nl, chan = sizeof(shm_chan_t) + comm->nslots * s->slot_stride;
    size_t off = shm_lanes_off((int)p) + (((size_t)lane * p + (size_t)from) * p + (size_t)to) * chan;
    return (shm_chan_t *)((char *)s->base + off);
}

/* FNV-1a: simulated hosts on one machine get different segment names */
static void shm_name(const rc_comm_t *comm, const char *host, char *buf, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *c = (const unsigned char *)host; *c; c++)
        h = (h ^ *c) * 0x100000001b3ull;
    snprintf(buf, len, "/ringcomm-%s-%016llx", comm->token, (unsigned long long)h);
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
                                   int *warned) {
    RC_CHECK(shm_check_abort(comm));
    const struct rc_shm *s = comm->shm;
    for (int q = 0; q < s->nl; q++) {
        int r = s->l2g[q];
        if (q == s->me) continue;
        rc_desc_t theirs;
        if (shm_peer_mismatch(comm, q, &theirs)) return rc_comm_mismatch(comm, r, &theirs);
        pid_t pid;
        if (shm_peer_dead(comm, q, &pid)) {
            char mine[160];
            rc_desc_format(&comm->cur.desc, mine, sizeof mine);
            return rc_comm_fail(comm, RC_ERR_PEER_LOST,
                                "rank %d (pid %d) is gone: rank %d was in %s, waiting to %s rank %d",
                                r, (int)pid, comm->rank, mine, what, peer);
        }
    }
    return rc_comm_wait_check(comm, t0, what, peer, "", "", shm_stragglers, warned);
}

/* Abort record and the liveness of every peer (`doing`: for the message). */
static rc_status_t shm_health(rc_comm_t *comm, const char *doing) {
    const struct rc_shm *s = comm->shm;
    RC_CHECK(shm_check_abort(comm));
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
typedef rc_status_t (*shm_wait_check_fn)(rc_comm_t *comm, int peer);
static rc_status_t __attribute__((noinline))
shm_wait_change(rc_comm_t *comm, int peer, _Atomic uint32_t *word, uint32_t seen,
                _Atomic uint32_t *waiters, const char *what, shm_wait_check_fn extra) {
    struct rc_shm *s = comm->shm;
    for (uint32_t i = 0; i < s->spin; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != seen) return RC_OK;
        cpu_relax();
    }
    double t0 = rc_now(), next_check = t0, ahead_since = 0;
    int warned = 0;
    char doing_buf[64], *doing = NULL;
    if (comm->ntps > 1) {
        snprintf(doing_buf, sizeof doing_buf, "waiting to %s rank %d", what, peer);
        doing = doing_buf;
    }
    for (uint32_t i = 0;; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != seen) return RC_OK;
        if (i < s->yields) {
            sched_yield();
        } else {
            atomic_fetch_add_explicit(waiters, 1, memory_order_seq_cst);
            if (atomic_load_explicit(word, memory_order_seq_cst) == seen)
                futex_wait(word, seen, 2000000L); /* 2 ms: re-check flags then */
            atomic_fetch_sub_explicit(waiters, 1, memory_order_relaxed);
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
            RC_CHECK(shm_slow_checks(comm, peer, t0, what, &warned));
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

static void shm_ring_info(shm_rankinfo_t *ri) {
    atomic_fetch_add_explicit(&ri->bell, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&ri->bell_waiters, memory_order_seq_cst))
        futex_wake(&ri->bell);
}

/* ring global rank `rank`'s doorbell */
static void shm_ring(rc_comm_t *comm, int rank) {
    shm_ring_info(&comm->shm->info[comm->shm->g2l[rank]]);
}

static rc_status_t shm_send_acquire(rc_comm_t *comm, int lane, int peer, void **buf, int wait) {
    struct rc_shm *s = comm->shm;
    shm_end_t *e = &s->tx[lane * comm->size + peer];
    while (RC_UNLIKELY(e->pos - e->other >= comm->nslots)) {
        e->other = atomic_load_explicit(&e->ch->tail, memory_order_acquire);
        if (e->pos - e->other < comm->nslots) break;
        if (!wait) return RC_INPROGRESS;
        RC_CHECK(shm_wait_change(comm, peer, &e->ch->tail, e->other, &e->ch->tail_waiters,
                                 "send to", NULL));
    }
    char *slot = e->slots + (size_t)(e->pos % comm->nslots) * s->slot_stride;
    *buf = slot + SHM_SLOT_HDR;
    return RC_OK;
}

static rc_status_t shm_send_commit(rc_comm_t *comm, int lane, int peer, const rc_desc_t *d) {
    struct rc_shm *s = comm->shm;
    shm_end_t *e = &s->tx[lane * comm->size + peer];
    char *slot = e->slots + (size_t)(e->pos % comm->nslots) * s->slot_stride;
    memcpy(slot, d, sizeof *d);
    e->pos++;
    /* seq_cst store then load: pairs with the receiver's waiters store + load. */
    atomic_store_explicit(&e->ch->head, e->pos, memory_order_seq_cst);
    if (RC_UNLIKELY(atomic_load_explicit(&e->ch->head_waiters, memory_order_seq_cst)))
        futex_wake(&e->ch->head);
    if (lane == RC_LANE_P2P) shm_ring(comm, peer);
    return RC_OK;
}

static rc_status_t shm_recv_acquire(rc_comm_t *comm, int lane, int peer, const void **buf,
                                    rc_desc_t *d, int wait) {
    struct rc_shm *s = comm->shm;
    shm_end_t *e = &s->rx[lane * comm->size + peer];
    while (RC_UNLIKELY(e->other == e->pos)) {
        e->other = atomic_load_explicit(&e->ch->head, memory_order_acquire);
        if (e->other != e->pos) break;
        if (!wait) return RC_INPROGRESS;
        RC_CHECK(shm_wait_change(comm, peer, &e->ch->head, e->pos, &e->ch->head_waiters,
                                 "receive from", NULL));
    }
    const char *slot = e->slots + (size_t)(e->pos % comm->nslots) * s->slot_stride;
    memcpy(d, slot, sizeof *d);
    *buf = slot + SHM_SLOT_HDR;
    return RC_OK;
}

static void shm_recv_release(rc_comm_t *comm, int lane, int peer) {
    shm_end_t *e = &comm->shm->rx[lane * comm->size + peer];
    e->pos++;
    atomic_store_explicit(&e->ch->tail, e->pos, memory_order_seq_cst);
    if (RC_UNLIKELY(atomic_load_explicit(&e->ch->tail_waiters, memory_order_seq_cst)))
        futex_wake(&e->ch->tail);
    if (lane == RC_LANE_P2P) shm_ring(comm, peer);
}

/* ---- one-line all-reduce (see the head comment) ---- */

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
    struct rc_shm *s = c->shm;
    shm_end_t *e = &s->rx[RC_LANE_COLL * c->size + peer];
    if (atomic_load_explicit(&e->ch->head, memory_order_acquire) == e->pos) return RC_OK;
    rc_desc_t d;
    memcpy(&d, e->slots + (size_t)(e->pos % c->nslots) * s->slot_stride, sizeof d);
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
            RC_CHECK(shm_wait_change(c, q, w, v, &s->ll[q].consumed_waiters, "send to", NULL));
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
        futex_wake_all(&mine->flag);

    /* Every contribution from the lines (our own too, so in == out needs no
     * copy aside), reduced in rank order 0..p-1 like allreduce_direct.c:
     * bitwise the same result on every rank and on either path. */
    for (int q = 0; q < p; q++) {
        const shm_ll_line_t *l = &s->ll[q].line[idx];
        if (q != me) {
            uint32_t f = atomic_load_explicit(&l->flag, memory_order_acquire);
            while (RC_UNLIKELY(f != want)) {
                RC_CHECK(shm_wait_change(c, q, (_Atomic uint32_t *)&l->flag, f, &s->ll[q].waiters,
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
        futex_wake_all(&ob->consumed);
    return RC_OK;
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
        cpu_relax();
    }
    for (uint32_t i = 0; i < s->yields; i++) {
        if (atomic_load_explicit(&ri->bell, memory_order_acquire) != seen) return;
        sched_yield();
    }
    long ns = max_s >= 0.002 ? 2000000L : (long)(max_s * 1e9);
    if (ns <= 0) return;
    atomic_store_explicit(&ri->bell_waiters, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&ri->bell, memory_order_seq_cst) == seen) futex_wait(&ri->bell, seen, ns);
    atomic_store_explicit(&ri->bell_waiters, 0, memory_order_relaxed);
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

static const uint64_t shm_probe_word = 0x52434d4150524f42ull; /* "RCMAPROB" */

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

/* After every rank attached: which peers' memory can this rank read? */
static void shm_cma_probe(rc_comm_t *comm) {
    struct rc_shm *s = comm->shm;
    uint64_t mask = 0;
    for (int q = 0; q < s->nl && q < 64 && s->me < 64; q++) {
        pid_t pid = atomic_load(&s->info[q].pid);
        uint64_t addr = s->info[q].probe_addr, word = 0;
        if (q == s->me || pid <= 0 || !addr) continue;
        struct iovec lv = {&word, sizeof word}, rv = {(void *)(uintptr_t)addr, sizeof word};
        if (process_vm_readv(pid, &lv, 1, &rv, 1, 0) == (ssize_t)sizeof word &&
            word == shm_probe_word)
            mask |= 1ull << q;
    }
    atomic_store_explicit(&s->self->cma_mask, mask, memory_order_release);
    atomic_fetch_add(&s->hdr->probed, 1);
    RC_LOG(RC_INFO, "rank %d: single-copy reads (process_vm_readv) from local indices mask "
           "0x%llx%s",
           comm->rank, (unsigned long long)mask, mask ? "" : " (none: messages use the slots)");
}

/* ---- lifecycle ---- */

static int shm_can_connect(const rc_addr_t *self, const rc_addr_t *peer) {
    return strncmp(self->host, peer->host, sizeof self->host) == 0;
}

static rc_status_t shm_map(rc_comm_t *comm, int fd, size_t bytes) {
    void *base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        return rc_set_error(RC_ERR_IO, "rank %d: mmap of %zu bytes of shared memory %s failed: %s",
                            comm->rank, bytes, comm->shm->name, strerror(errno));
    comm->shm->base = base;
    comm->shm->bytes = bytes;
    comm->shm->hdr = (shm_hdr_t *)base;
    comm->shm->info = (shm_rankinfo_t *)((char *)base + SHM_HDR_BYTES);
    return RC_OK;
}

static void shm_unlink_once(struct rc_shm *s) {
    if (!s->unlinked) {
        shm_unlink(s->name);
        s->unlinked = 1;
    }
}

/* Phase 1: only the back-off; the segment is made at connect, when the
 * ranks of this host are known. */
static rc_status_t shm_create(rc_comm_t *comm) {
    struct rc_shm *s = calloc(1, sizeof *s);
    if (!s) return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", comm->rank);
    comm->shm = s;
    s->unlinked = 1; /* nothing of ours to unlink yet */
    return RC_OK;
}

/* The host's first rank creates and sizes the segment for its nl ranks. */
static rc_status_t shm_make(rc_comm_t *comm, size_t stride, size_t chan, size_t total) {
    struct rc_shm *s = comm->shm;
    int fd = shm_open(s->name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0)
        return rc_set_error(RC_ERR_IO, "rank %d: cannot create shared memory %s: %s", comm->rank,
                            s->name, strerror(errno));
    s->unlinked = 0;
    if (ftruncate(fd, (off_t)total) != 0) {
        int e = errno;
        close(fd);
        shm_unlink_once(s);
        return rc_set_error(RC_ERR_IO, "rank %d: cannot size shared memory %s to %zu bytes: %s",
                            comm->rank, s->name, total, strerror(e));
    }
    rc_status_t st = shm_map(comm, fd, total);
    close(fd);
    if (st != RC_OK) {
        shm_unlink_once(s);
        return st;
    }
    shm_hdr_t *h = s->hdr;
    h->size = (uint32_t)s->nl;
    h->nslots = comm->nslots;
    h->chunk_bytes = comm->chunk_bytes;
    h->slot_stride = stride;
    h->chan_bytes = chan;
    h->total_bytes = total;
    h->algo_env = comm->algo_env;
    h->tune = comm->tune;
    h->stream_min = comm->stream_min;
    atomic_store_explicit((_Atomic uint64_t *)&h->magic, SHM_MAGIC, memory_order_release);
    return RC_OK;
}

/* The other ranks of the host: open the segment once the first rank has
 * made it (retrying until the deadline; failing fast when that rank's
 * process is gone), then check its header. */
static rc_status_t shm_open_made(rc_comm_t *comm, const rc_addr_t *leader) {
    struct rc_shm *s = comm->shm;
    const int first = s->l2g[0];
    double t0 = rc_now(), next_check = t0 + 0.05;
    struct stat sb;
    int fd = -1;
    for (uint32_t i = 0;; i++) {
        if (fd < 0) {
            fd = shm_open(s->name, O_RDWR, 0600);
            if (fd < 0 && errno != ENOENT)
                return rc_set_error(RC_ERR_IO, "rank %d: cannot open shared memory %s created "
                                    "by rank %d: %s", comm->rank, s->name, first, strerror(errno));
        }
        /* ftruncate sizes it in one step: a non-zero size is the final one */
        if (fd >= 0 && fstat(fd, &sb) == 0 && sb.st_size > 0) {
            rc_status_t st = shm_map(comm, fd, (size_t)sb.st_size);
            close(fd);
            RC_CHECK(st);
            break;
        }
        struct timespec ts = {0, i < 20 ? 50000 : 1000000};
        nanosleep(&ts, NULL);
        double now = rc_now();
        if (now < next_check) continue;
        next_check = now + 0.05;
        if (leader->pid > 0 && kill(leader->pid, 0) != 0 && errno == ESRCH) {
            if (fd >= 0) close(fd);
            return rc_set_error(RC_ERR_PEER_LOST, "rank %d: rank %d (pid %d), which creates this "
                                "host's shared memory %s, is gone", comm->rank, first,
                                (int)leader->pid, s->name);
        }
        if (now - t0 > comm->timeout_s) {
            if (fd >= 0) close(fd);
            return rc_set_error(RC_ERR_TIMEOUT, "rank %d: shared memory %s of rank %d (this "
                                "host's first rank) was not ready within %.0f s", comm->rank,
                                s->name, first, comm->timeout_s);
        }
    }
    /* the magic is written last (release): then the header is complete */
    shm_hdr_t *h = s->hdr;
    for (uint32_t i = 0; atomic_load_explicit((_Atomic uint64_t *)&h->magic,
                                              memory_order_acquire) != SHM_MAGIC; i++) {
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
        if ((i & 255) == 255 && rc_now() - t0 > comm->timeout_s) break; /* the check reports it */
    }
    char why[200];
    if (rc_shm_header_check(h, s->bytes, s->nl, why, sizeof why) != RC_OK)
        return rc_set_error(RC_ERR_MISMATCH, "rank %d: shared memory %s is not a valid "
                            "%d-rank ringcomm segment: %s", comm->rank, s->name, s->nl, why);
    /* the chunking comes from rank 0's address for every transport */
    if (h->chunk_bytes != comm->chunk_bytes || h->nslots != comm->nslots)
        return rc_set_error(RC_ERR_MISMATCH, "rank %d: shared memory %s has %u slots of %llu "
                            "bytes, this rank expects %u of %zu", comm->rank, s->name, h->nslots,
                            (unsigned long long)h->chunk_bytes, comm->nslots, comm->chunk_bytes);
    return RC_OK;
}

/* Every field of the creator's header another rank relies on, checked before use
 * (a corrupt or hostile header must not lead to an access outside the
 * mapping).  Also the fuzz target for the header bytes (csrc/fuzz.c). */
rc_status_t rc_shm_header_check(const void *hdr, size_t mapped, int p, char *why, size_t len) {
    shm_hdr_t h;
    if (mapped < sizeof h || p < 1 || p > 65536) {
        snprintf(why, len, "%zu bytes is too small for a header", mapped);
        return RC_ERR_MISMATCH;
    }
    memcpy(&h, hdr, sizeof h);
    const char *bad = NULL;
    if (h.magic != SHM_MAGIC) bad = "bad magic";
    else if (h.size != (uint32_t)p) bad = "another rank count";
    else if (h.nslots < 2 || h.nslots > 1024) bad = "slot count out of [2, 1024]";
    else if (h.chunk_bytes < 64 || h.chunk_bytes > (1u << 30) || h.chunk_bytes % 64) bad = "chunk size";
    else if (h.slot_stride != RC_ALIGN_UP(SHM_SLOT_HDR + h.chunk_bytes, RC_CACHELINE)) bad = "slot stride";
    else if (h.chan_bytes != sizeof(shm_chan_t) + (uint64_t)h.nslots * h.slot_stride) bad = "channel size";
    else if (h.total_bytes != shm_total_bytes(p, h.chan_bytes) || h.total_bytes != mapped)
        bad = "segment size";
    else if (h.algo_env < 0 || h.algo_env >= RC_NUM_ALGOS) bad = "algorithm";
    if (!bad) return RC_OK;
    snprintf(why, len, "%s (header says %u ranks, %u slots of %llu bytes, %llu bytes in all; "
             "mapped %zu)", bad, h.size, h.nslots, (unsigned long long)h.chunk_bytes,
             (unsigned long long)h.total_bytes, mapped);
    return RC_ERR_MISMATCH;
}

size_t rc_shm_header_bytes(void) { return sizeof(shm_hdr_t); }

/* Wait (spin, then 200 us sleeps) until every rank of the segment has
 * bumped *counter; 0 when the communicator's timeout passes first. */
static int shm_wait_count(rc_comm_t *comm, _Atomic uint32_t *counter) {
    double t0 = rc_now();
    for (uint32_t i = 0; atomic_load(counter) < (uint32_t)comm->shm->nl; i++) {
        if (i < 1000) {
            cpu_relax();
        } else {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
        if ((i & 1023) == 0 && rc_now() - t0 > comm->timeout_s) return 0;
    }
    return 1;
}

/* Phase 2: the ranks of this host (the peers comm.c gave this transport,
 * and this rank) map one segment, publish their pids, and the last to
 * attach unlinks it. */
static rc_status_t shm_connect(rc_comm_t *comm, const rc_addr_t *addrs) {
    struct rc_shm *s = comm->shm;
    const int P = comm->size;
    /* Back-off: with a core per rank, spin long (a peer is about to post);
     * with more ranks than cores, spinning steals the peer's core, so spin
     * briefly and yield (MPICH does the same when oversubscribed). */
    int over = comm->oversubscribed;
    s->spin = (uint32_t)rc_env_ll("RINGCOMM_SPIN", over ? 30 : 4000);
    s->yields = (uint32_t)rc_env_ll("RINGCOMM_YIELDS", over ? 4 : 200);
    s->g2l = malloc((size_t)P * sizeof *s->g2l);
    s->l2g = malloc((size_t)P * sizeof *s->l2g);
    s->tx = calloc((size_t)RC_NLANES * P, sizeof *s->tx);
    s->rx = calloc((size_t)RC_NLANES * P, sizeof *s->rx);
    if (!s->g2l || !s->l2g || !s->tx || !s->rx)
        return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", comm->rank);
    s->nl = 0;
    for (int r = 0; r < P; r++) {
        s->g2l[r] = -1;
        if (r == comm->rank || rc_peer_is(comm, r, &rc_transport_shm)) {
            if (r == comm->rank) s->me = s->nl;
            s->g2l[r] = s->nl;
            s->l2g[s->nl++] = r;
        }
    }
    const int p = s->nl;
    shm_name(comm, addrs[comm->rank].host, s->name, sizeof s->name);
    size_t stride = RC_ALIGN_UP(SHM_SLOT_HDR + comm->chunk_bytes, RC_CACHELINE);
    size_t chan = sizeof(shm_chan_t) + (size_t)comm->nslots * stride;
    s->slot_stride = stride;
    if (s->me == 0) RC_CHECK(shm_make(comm, stride, chan, shm_total_bytes(p, chan)));
    else RC_CHECK(shm_open_made(comm, &addrs[s->l2g[0]]));
    s->self = &s->info[s->me];
    s->ll = (shm_ll_t *)((char *)s->base + shm_ll_off(p));
    s->ll_k = 0;
    s->ll_free = RC_SHM_LL_LINES; /* fresh lines: calls 0 .. RC_SHM_LL_LINES - 1 */
    for (int lane = 0; lane < RC_NLANES; lane++) {
        for (int q = 0; q < p; q++) {
            int g = s->l2g[q];
            shm_end_t *tx = &s->tx[lane * P + g], *rx = &s->rx[lane * P + g];
            tx->ch = shm_chan(comm, lane, s->me, q);
            tx->slots = (char *)tx->ch + sizeof(shm_chan_t);
            rx->ch = shm_chan(comm, lane, q, s->me);
            rx->slots = (char *)rx->ch + sizeof(shm_chan_t);
        }
    }
    s->self->probe_addr = (uint64_t)(uintptr_t)&shm_probe_word;
    atomic_store(&s->self->pid, (int32_t)getpid());
    uint32_t n = atomic_fetch_add(&s->hdr->attached, 1) + 1;
    if (n == (uint32_t)p) {
        s->unlinked = 0;
        shm_unlink_once(s);
    }
    /* Wait for every rank to attach: then all pids are known and the name is gone. */
    if (!shm_wait_count(comm, &s->hdr->attached)) {
        if (s->me == 0) {
            s->unlinked = 0;
            shm_unlink_once(s);
        }
        return rc_set_error(RC_ERR_TIMEOUT,
                            "rank %d: only %u of this host's %d ranks attached to shared memory "
                            "%s within %.0f s",
                            comm->rank, atomic_load(&s->hdr->attached), p, s->name,
                            comm->timeout_s);
    }
    shm_cma_probe(comm);
    /* Collectives may read peers' buffers only when every rank can read
     * every other: decided from all masks, so the same on every rank (and
     * never when some ranks are on other hosts). */
    if (!shm_wait_count(comm, &s->hdr->probed))
        return rc_set_error(RC_ERR_TIMEOUT, "rank %d: only %u of this host's %d ranks finished "
                            "connecting within %.0f s", comm->rank, atomic_load(&s->hdr->probed),
                            p, comm->timeout_s);
    comm->cma_all = p <= 64 && p == P;
    for (int q = 0; q < p && comm->cma_all; q++) {
        uint64_t want = (p == 64 ? ~0ull : (1ull << p) - 1) & ~(1ull << q);
        if ((atomic_load(&s->info[q].cma_mask) & want) != want) comm->cma_all = 0;
    }
    s->pidfd = malloc((size_t)p * sizeof *s->pidfd);
    if (!s->pidfd) return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", comm->rank);
    for (int q = 0; q < p; q++) {
        pid_t pid = atomic_load(&s->info[q].pid);
        s->pidfd[q] = -1;
#ifdef SYS_pidfd_open
        if (q != s->me && pid > 0)
            s->pidfd[q] = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
        if (s->pidfd[q] >= 0) fcntl(s->pidfd[q], F_SETFD, FD_CLOEXEC);
    }
    RC_LOG(RC_INFO, "rank %d: shared memory %s for %d ranks of this host (local index %d)",
           comm->rank, s->name, p, s->me);
    return RC_OK;
}

static void shm_close(rc_comm_t *comm) {
    struct rc_shm *s = comm->shm;
    if (!s) return;
    /* Closed before every rank attached: the creator's name may still exist. */
    if (s->me == 0 && s->hdr && atomic_load(&s->hdr->attached) < (uint32_t)s->nl)
        shm_unlink_once(s);
    if (s->base) munmap(s->base, s->bytes);
    for (int q = 0; s->pidfd && q < s->nl; q++)
        if (s->pidfd[q] >= 0) close(s->pidfd[q]);
    free(s->pidfd);
    free(s->tx);
    free(s->rx);
    free(s->g2l);
    free(s->l2g);
    free(s);
    comm->shm = NULL;
}

const rc_transport_ops_t rc_transport_shm = {
    .name = "shm",
    .can_connect = shm_can_connect,
    .create = shm_create,
    .connect = shm_connect,
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
    .close = shm_close,
};
