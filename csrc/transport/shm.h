/* shm.h - the shared-memory transport's segment layout and private state,
 * shared by its files: shm.c (waits, failure checks, data path, events),
 * shm_ll.c (the one-line all-reduce) and shm_setup.c (sizing, making,
 * attaching and checking the segment; connect and close).
 *
 * The segment serves the ranks of one host only (those comm.c routes to
 * this transport, plus this rank): p below is their count and every index
 * inside the segment is a *local* index 0..p-1 (the ranks in global order);
 * the transport's entry points take global ranks and map them (g2l / l2g),
 * and every message names global ranks.
 *
 * Layout of the segment "/ringcomm-<token>-<hash of the host identity>"
 * (created at connect by the host's lowest rank, 0600, O_EXCL, its pages
 * reserved with posix_fallocate so that a full /dev/shm is an error at
 * connect, never a SIGBUS later; the others open it with retries; unlinked
 * by the last rank to map it, so a crash leaves nothing behind; the hash
 * keeps simulated hosts on one machine, RINGCOMM_HOST_ID, apart):
 *
 *   [header 4 KiB][rank info: 64 B x p][acks: 64 B x p x p]
 *   [one-line outboxes: 640 B x p]
 *   [FIFOs: lane 0: 0->0 ... p-1->p-1, lane 1: ...]   (RC_NLANES x p x p)
 *   [cell pools: rank 0: lane 0, lane 1; rank 1: ...] (p x RC_NLANES)
 *
 * Memory grows linearly in p where it matters: the payload lives in cells
 * that each rank owns (a pool per lane of ncells[lane] cells of chunk_bytes,
 * by default 2 MiB for collectives and 1 MiB for point-to-point whatever p
 * is), and a pair of ranks has only a FIFO of `depth` 32-byte entries (the
 * descriptor and the number of the sender's cell that holds the payload),
 * so a host of p ranks needs about p x (3 MiB + p x 0.8 KiB).  (Before,
 * every ordered pair had its own ring of nslots full chunks: 2 x p x p x
 * nslots x chunk_bytes, 256 MiB at 8 ranks.)  docs/design.md has the formula.
 *
 * A FIFO (one per lane and ordered rank pair) is single-producer
 * single-consumer:
 *
 *   line 0: head          (messages posted, written by the sender)
 *   line 1: head_waiters  (receiver sleeps on head: sender must FUTEX_WAKE)
 *   line 2: tail          (messages consumed, written by the receiver)
 *   line 3: tail_waiters  (sender sleeps on tail)
 *   entries: [rc_desc_t 24 B | cell 4 | pad 4] x depth
 *
 * A pool (one per rank and lane) is a control line and the cells:
 *
 *   line 0: returned (bit c: a receiver gave cell c back; the owner takes
 *           them all with one exchange), waiters (owner asleep on returned),
 *           starved (owner found no free cell)
 *   cells:  [payload chunk_bytes] x ncells
 *
 * Sending takes a free cell from the sender's own pool (a private mask; the
 * returned bits are fetched only when the private mask runs out or the
 * lowest free cell is past the few that one stream keeps warm), writes the
 * payload, and posts the entry; receiving lends the cell straight out of
 * the sender's pool (no staging copy); releasing sets the cell's bit in the
 * sender's returned word.  A pair may have at most `depth` messages posted
 * and not released (credits, as before).
 *
 * Deadlock freedom with fewer cells than peers: a rank that finds no free
 * cell marks its pool starved and counts itself in the header's `starving`
 * word; every rank that waits (in any wait of this transport, or in the
 * health call other transports' waits make) and sees starving != 0 copies
 * the starved ranks' messages that it holds but has not yet lent out into
 * private memory and gives their cells back (MPICH nemesis's receivers
 * drain their queue for the same reason).  A rank lends at most one
 * message per lane to a caller that may wait (the fused receive-reduce-send
 * holds one while it takes a cell to send), so with >= 2 cells per lane no
 * set of ranks can hold all of each other's cells: progress is guaranteed
 * whenever every rank involved is inside a call.
 *
 * Counters are 32-bit and wrap; only differences are compared.  Waits spin
 * with `pause`, then sched_yield, then sleep on a futex with a short timeout
 * so that the abort flag, peer liveness and the deadline are checked.
 *
 * Each rank's info line also holds a doorbell: a counter that moves when a
 * point-to-point message arrives for the rank or a p2p slot it filled is
 * freed, so the p2p engine can sleep on one futex for all its peers; and the
 * offset of the word it sleeps on, so that a starved peer can wake it.
 *
 * Single copy (CMA): at connect every rank checks with process_vm_readv that
 * it may read each peer's memory (a probe word whose address it publishes)
 * and publishes the mask of peers it can read.  Large point-to-point
 * messages then go as a 16-byte "ready to send" (address, length): the
 * receiver reads the sender's buffer straight into its own and sets the
 * message's flag in the ack line of the (sender, receiver) pair (64 flags,
 * by message number mod 64).  Where the kernel refuses (Yama ptrace_scope,
 * containers), messages stream through the cells as before.
 *
 * The one-line ("LL") all-reduce: shm_ll.c's head comment.
 */
#ifndef RC_SHM_H
#define RC_SHM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "transport.h"

#define SHM_MAGIC 0x3330484d53435252ull      /* "RRCSMH03": 03 moved payloads into per-rank cell pools */
#define SHM_MAGIC_FAILED 0x4c4941464d435252ull /* "RRCMFAIL": the creator could not make it (abort_msg says why) */
#define SHM_HDR_BYTES 4096
#define SHM_ENTRY_BYTES 32
#define SHM_MAX_CELLS 32 /* cells per pool: one 32-bit returned word (a futex) */
#define SHM_ACK_FLAGS 64 /* per (sender, receiver): one cache line of flags (p2p.c's RC_P2P_MAX_ACKS) */

typedef struct {
    uint64_t magic;
    uint32_t size;
    uint32_t nslots;        /* FIFO depth (may be below the communicator's nslots: shm_setup.c) */
    uint64_t chunk_bytes;
    uint64_t slot_stride;   /* cell stride */
    uint64_t chan_bytes;    /* FIFO bytes */
    uint64_t total_bytes;
    int32_t algo_env; /* rank 0's communicator-wide tuning */
    uint64_t ncells[2]; /* cells per pool, collective and point-to-point lane */
    uint64_t stream_min;
    _Atomic uint32_t attached;
    _Atomic int32_t abort_state; /* 0 none, 1 being written, 2 set */
    int32_t abort_status;
    int32_t abort_rank;
    char abort_msg[1024];   /* also the creator's reason under SHM_MAGIC_FAILED */
    _Atomic uint32_t probed; /* ranks that published their single-copy mask */
    rc_tune_t tune;          /* rank 0's "auto" thresholds */
    _Alignas(RC_CACHELINE) _Atomic uint32_t starving; /* ranks waiting for a free cell */
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
    _Atomic uint64_t sleep_off;    /* segment offset of the word the owner sleeps on (0: none) */
} shm_rankinfo_t;
_Static_assert(sizeof(shm_rankinfo_t) == RC_CACHELINE, "rank info");

typedef struct {
    rc_desc_t desc;
    uint32_t cell; /* the sender's cell holding the payload */
    uint32_t pad;
} shm_entry_t;
_Static_assert(sizeof(shm_entry_t) == SHM_ENTRY_BYTES, "FIFO entry");

typedef struct {
    _Alignas(RC_CACHELINE) _Atomic uint32_t head;
    _Alignas(RC_CACHELINE) _Atomic uint32_t head_waiters;
    _Alignas(RC_CACHELINE) _Atomic uint32_t tail;
    _Alignas(RC_CACHELINE) _Atomic uint32_t tail_waiters;
    _Alignas(RC_CACHELINE) shm_entry_t e[]; /* depth entries */
} shm_fifo_t;

typedef struct {
    _Alignas(RC_CACHELINE) _Atomic uint32_t returned;
    _Atomic uint32_t waiters;
    _Atomic uint32_t starved;
} shm_pool_t;
#define SHM_POOL_CTL RC_CACHELINE /* the control line before the cells */

/* One line of a rank's one-line outbox (shm_ll.c). */
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

/* This rank's end of one FIFO. */
typedef struct {
    shm_fifo_t *f;
    uint32_t pos;    /* my counter: messages posted (tx) or consumed (rx) */
    uint32_t other;  /* last seen value of the other side's counter */
    int32_t cell;    /* tx: the cell lent by send_acquire, not yet posted (-1: none);
                      * rx: the cell of the message lent by recv_acquire */
    int32_t q;       /* the peer's local index */
    uint8_t pinned;  /* rx: the message at pos is lent to a caller that may wait */
    void **copy;     /* rx: [depth] private copies of drained messages (NULL: none yet) */
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
    shm_end_t *tx; /* [lane * size + peer]: FIFO me -> peer */
    shm_end_t *rx; /* [lane * size + peer]: FIFO peer -> me */
    uint32_t spin;
    uint32_t yields;
    uint32_t depth;           /* FIFO entries (header's nslots) */
    uint32_t ncells[RC_NLANES];
    uint32_t hot;             /* cells one stream keeps warm (depth + 1) */
    size_t cell_stride;
    size_t fifo_bytes;        /* one FIFO */
    size_t pools_off;         /* where rank 0's pools begin */
    size_t pool_bytes;        /* one rank's pools, both lanes */
    uint32_t free[RC_NLANES]; /* my cells not in use (private) */
    int starving[RC_NLANES];  /* this rank counts in hdr->starving for the lane */
    void *spare;              /* private chunk buffers for drained messages (a list) */
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

/* ---- layout arithmetic (one place: shm_setup.c sizes, shm.c addresses) ---- */

static inline size_t shm_fifo_bytes(uint32_t depth) {
    return sizeof(shm_fifo_t) + (size_t)depth * SHM_ENTRY_BYTES;
}
static inline size_t shm_acks_off(int p) {
    return SHM_HDR_BYTES + (size_t)p * sizeof(shm_rankinfo_t);
}
static inline size_t shm_ll_off(int p) {
    return shm_acks_off(p) + (size_t)p * (size_t)p * SHM_ACK_FLAGS;
}
static inline size_t shm_fifos_off(int p) { return shm_ll_off(p) + (size_t)p * sizeof(shm_ll_t); }
/* one rank's pools: [ctl | ncells[0] cells][ctl | ncells[1] cells], page aligned */
static inline size_t shm_pool_bytes(size_t stride, uint64_t c0, uint64_t c1) {
    return RC_ALIGN_UP(2 * SHM_POOL_CTL + (c0 + c1) * stride, 4096);
}
static inline size_t shm_pools_off(int p, size_t fifo) {
    return RC_ALIGN_UP(shm_fifos_off(p) + (size_t)RC_NLANES * (size_t)p * (size_t)p * fifo, 4096);
}
static inline size_t shm_total_bytes(int p, size_t fifo, size_t pool) {
    return shm_pools_off(p, fifo) + (size_t)p * pool;
}

static inline shm_fifo_t *shm_fifo(const struct rc_shm *s, int lane, int from, int to) {
    size_t p = (size_t)s->nl;
    return (shm_fifo_t *)((char *)s->base + shm_fifos_off(s->nl) +
                          (((size_t)lane * p + (size_t)from) * p + (size_t)to) * s->fifo_bytes);
}
/* local rank q's pool of the lane, and its cell c */
static inline shm_pool_t *shm_pool(const struct rc_shm *s, int q, int lane) {
    size_t off = s->pools_off + (size_t)q * s->pool_bytes;
    if (lane) off += SHM_POOL_CTL + (size_t)s->ncells[0] * s->cell_stride;
    return (shm_pool_t *)((char *)s->base + off);
}
static inline char *shm_cell(const struct rc_shm *s, int q, int lane, uint32_t c) {
    return (char *)shm_pool(s, q, lane) + SHM_POOL_CTL + (size_t)c * s->cell_stride;
}

/* ---- small helpers ---- */

static inline void shm_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline void shm_futex_wait(_Atomic uint32_t *addr, uint32_t val, long ns) {
    struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT, val, &ts, NULL, 0);
}

static inline void shm_futex_wake(_Atomic uint32_t *addr, int n) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* ---- shared between the files ---- */

typedef rc_status_t (*shm_wait_check_fn)(rc_comm_t *comm, int peer);
/* shm.c: wait until *word != seen (what = "receive from" / "send to");
 * *waiters counts the sleepers; `extra` (NULL: none) runs with the slow
 * checks: a failure only the caller can see. */
rc_status_t rc_shm_wait_change(rc_comm_t *comm, int peer, _Atomic uint32_t *word, uint32_t seen,
                               _Atomic uint32_t *waiters, const char *what,
                               shm_wait_check_fn extra);
/* shm.c: the oldest unread collective message from `peer` (global), if
 * any: 1 and its descriptor. */
int rc_shm_peek_coll(rc_comm_t *comm, int peer, rc_desc_t *d);
/* shm_setup.c: the lifecycle ops of the table (shm.c). */
rc_status_t rc_shm_create(rc_comm_t *comm);
rc_status_t rc_shm_connect(rc_comm_t *comm, const rc_addr_t *addrs);
void rc_shm_close(rc_comm_t *comm);
extern const uint64_t rc_shm_probe_word;
/* shm_setup.c: bytes free in /dev/shm (~0: unknown). */
unsigned long long rc_shm_dir_free(void);

#endif /* RC_SHM_H */
