/* mpi.c - transport through MPI point-to-point (compiled only with HAVE_MPI).
 *
 * The only file of the C core that includes mpi.h.  The user's communicator
 * arrives as a Fortran handle (rc_comm_set_mpi, from mpi4py's py2f()); at
 * connect it is duplicated (MPI_Comm_dup), and every message of this
 * ringcomm communicator travels on the duplicate, so the user's own MPI
 * traffic on the same communicator can never match ours.  The ringcomm rank
 * of a peer is its rank in that communicator.
 *
 * Messages (frames) are [rc_desc_t 24 B | comm id 8 B | payload <= chunk_bytes]:
 *
 *   tag 0 (RC_LANE_COLL), tag 1 (RC_LANE_P2P): one FIFO per (lane, peer);
 *   tag 2: control (an abort record: status, rank, text).
 *
 * Receiving: at connect every (lane, peer) gets `nslots` MPI_Irecv posted
 * into its receive slots, in ring order; a slot is re-posted when the
 * caller releases it.  MPI matches messages of one (source, tag, comm) to
 * posted receives in posting order and never lets one overtake another, so
 * the k-th message lands in slot k mod nslots, in place (no unexpected-queue
 * copy while the receiver keeps up).  Every frame's byte count (MPI_Get_count)
 * is checked against its descriptor and chunk_bytes before it is lent out.
 *
 * The comm id (a hash of the communicator's random token, the same on every
 * rank) guards against MPI reusing a freed duplicate's context for a later
 * one while a message sent on the old one is still on its way: a frame
 * with another id fails the call (RC_ERR_MISMATCH), a control message with
 * another id is dropped.  A communicator that failed keeps its duplicate
 * (not freed at close), so late aborts and frames of a failed call land in
 * a context nobody reuses.
 *
 * Sending: `nslots` staging slots per (lane, peer); send_commit posts the
 * slot with MPI_Issend; a slot is reused once its request completes.  A
 * synchronous send completes only when the receiver has matched it with a
 * posted receive, so at most nslots messages per (lane, peer) are in flight
 * unmatched: memory stays bounded as with the shared-memory rings (an eager
 * MPI_Isend would let a fast sender pile a whole message into the
 * receiver's unexpected queue).
 *
 * Progress: MPI_Test on every call; waits test the awaited request, spin a
 * little, then sched_yield, then nanosleep growing from 1 us to 1 ms (more
 * ranks than cores must still progress), keep pending point-to-point work
 * moving, check the control message (a peer's abort) and the deadline.
 *
 * Threads: operations run on the caller's thread or on the communicator's
 * progress thread, while the user's thread may call mpi4py at the same time,
 * so the transport requires MPI_THREAD_MULTIPLE (mpi4py's default) and
 * refuses to connect otherwise.
 *
 * Lifecycle: close completes or cancels every request and frees the
 * duplicate.  An MPI_Finalize that comes first runs the delete callback of
 * an attribute on MPI_COMM_SELF: from then on no ringcomm call enters MPI
 * (calls fail naming MPI_Finalize), and close() only frees memory.
 * Liveness: MPI has none to offer (the launcher usually kills the job when a
 * rank dies); a peer that never answers gives RC_ERR_TIMEOUT naming it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <mpi.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../p2p.h"
#include "transport.h"

#define MPI_HDR 32 /* rc_desc_t, padded: payload 32-byte aligned */
#define TAG_CTL RC_NLANES
#define CTL_MSG 1000
_Static_assert(sizeof(rc_desc_t) <= MPI_HDR, "frame header");

enum { CTL_ABORT = 1, CTL_STATE = 2 };
typedef struct {
    int32_t magic; /* CTL_MAGIC */
    int32_t kind;  /* CTL_ABORT or CTL_STATE */
    int32_t status;
    int32_t rank;
    uint64_t id;   /* the communicator's id (see mpi_comm_id) */
    rc_desc_t desc; /* CTL_STATE: the collective the sender waits in */
    char msg[CTL_MSG]; /* CTL_ABORT: the failure (CTL_STATE messages end before it) */
} mpi_ctl_t;
#define CTL_MAGIC 0x4c544352 /* "RCTL" */
#define CTL_HEAD offsetof(mpi_ctl_t, msg)

typedef struct {
    uint32_t iter;   /* steps so far */
    uint32_t sleeps; /* sleeps so far */
    double t0;       /* when the spinning ended (0: not yet) */
} mpi_backoff_t;

struct rc_mpi {
    MPI_Comm comm;          /* the duplicate (MPI_COMM_NULL: none) */
    int keyval;             /* attribute on MPI_COMM_SELF (MPI_KEYVAL_INVALID: none) */
    size_t stride;          /* bytes of one slot: MPI_HDR + chunk_bytes, aligned */
    uint32_t nslots;
    int p;
    uint64_t id;            /* this communicator's id: in every frame and control message */
    /* [(lane * p + peer) * nslots + slot], contiguous so one MPI_Testsome
     * covers a lane */
    MPI_Request *sreq, *rreq;
    int32_t *rbytes;        /* receive slot: -1 posted (in flight), else frame bytes */
    char *sbuf, *rbuf;
    uint32_t *spos, *rpos;  /* [lane * p + peer]: messages sent / consumed */
    rc_desc_t *known;       /* [peer]: newest collective seen from it (mpi_learn) */
    char *used;             /* [peer]: 1 when MPI carries this peer's traffic */
    /* control */
    MPI_Request ctl_rreq;
    mpi_ctl_t ctl_in;
    MPI_Request *ctl_sreq;  /* [peer]: aborts */
    mpi_ctl_t ctl_out;
    MPI_Request *state_sreq; /* [peer]: states */
    mpi_ctl_t *state_out;   /* [peer] */
    int aborted;            /* abort sent (or received): send none again */
    /* events for the p2p engine */
    _Atomic uint32_t events;
    mpi_backoff_t idle;     /* back-off of consecutive idle event waits */
    uint32_t spin, yields;
    double yield_s;
    /* guard against MPI_Finalize from another thread (see mpi_enter) */
    _Atomic int inflight;
    _Atomic int finalizing;
    int released;           /* MPI objects released (close or the finalize callback) */
    int reqs_valid;         /* the request arrays are initialized */
    int leak;               /* a request never completed: its buffers must stay */
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static const char *lane_name(int lane) { return lane == RC_LANE_COLL ? "collective" : "p2p"; }

/* FNV-1a of the token: equal on every rank of a communicator, different
 * (with overwhelming odds) between communicators. */
static uint64_t mpi_comm_id(const char *token) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *c = (const unsigned char *)token; *c; c++)
        h = (h ^ *c) * 0x100000001b3ull;
    return h;
}

#define FRAME_ID(frame) ((uint64_t *)((char *)(frame) + sizeof(rc_desc_t)))

static size_t ix(const struct rc_mpi *s, int lane, int peer) {
    return (size_t)lane * (size_t)s->p + (size_t)peer;
}

static char *mpi_strerror(int err, char *buf) {
    int len = 0;
    if (MPI_Error_string(err, buf, &len) != MPI_SUCCESS) snprintf(buf, 64, "MPI error %d", err);
    return buf;
}

/* ---- the MPI_Finalize guard ----
 * Every operation that calls MPI enters; the finalize callback sets
 * `finalizing`, waits until no operation is inside, and releases the MPI
 * objects; later operations fail instead of calling a finalized MPI. */
static rc_status_t __attribute__((noinline)) mpi_finalized_error(rc_comm_t *comm) {
    return rc_set_error(RC_ERR_INVALID_ARG,
                        "rank %d: MPI was finalized while this communicator was open (close "
                        "ringcomm communicators that use the MPI transport before MPI_Finalize)",
                        comm->rank);
}

static inline int mpi_enter(struct rc_mpi *s) {
    atomic_fetch_add_explicit(&s->inflight, 1, memory_order_seq_cst);
    if (RC_LIKELY(!atomic_load_explicit(&s->finalizing, memory_order_seq_cst))) return 1;
    atomic_fetch_sub_explicit(&s->inflight, 1, memory_order_seq_cst);
    return 0;
}

static inline void mpi_leave(struct rc_mpi *s) {
    atomic_fetch_sub_explicit(&s->inflight, 1, memory_order_release);
}

/* ---- control messages: a peer's abort ---- */

static void mpi_send_state(rc_comm_t *comm, int peer, int query);
static void mpi_learn(struct rc_mpi *s, int peer, const rc_desc_t *d);

static void mpi_post_ctl(struct rc_mpi *s) {
    if (MPI_Irecv(&s->ctl_in, (int)sizeof s->ctl_in, MPI_BYTE, MPI_ANY_SOURCE, TAG_CTL, s->comm,
                  &s->ctl_rreq) != MPI_SUCCESS)
        s->ctl_rreq = MPI_REQUEST_NULL;
}

/* Control messages that arrived: a peer's abort (the communicator breaks,
 * without telling the others again: the reporter did), or a peer's state
 * (the collective it has been waiting in for a while: same number but
 * described differently is a mismatch, which this rank reports). */
static rc_status_t mpi_check_ctl(rc_comm_t *comm) {
    struct rc_mpi *s = comm->mpi;
    for (;;) {
        if (comm->broken && s->aborted) return rc_set_error(comm->broken, "%s", comm->broken_msg);
        if (s->ctl_rreq == MPI_REQUEST_NULL) return RC_OK;
        int flag = 0, n = 0;
        MPI_Status status;
        int err = MPI_Test(&s->ctl_rreq, &flag, &status);
        if (err == MPI_SUCCESS && !flag) return RC_OK;
        if (err == MPI_SUCCESS) MPI_Get_count(&status, MPI_BYTE, &n);
        mpi_ctl_t *c = &s->ctl_in;
        c->msg[CTL_MSG - 1] = 0;
        int src = err == MPI_SUCCESS ? status.MPI_SOURCE : -1;
        int valid = err == MPI_SUCCESS && n >= (int)CTL_HEAD && c->magic == CTL_MAGIC &&
                    src >= 0 && src < s->p;
        if (valid && c->id != s->id) {
            /* a late message of an earlier communicator whose MPI context
             * this duplicate reuses: not ours */
            RC_LOG(RC_INFO, "rank %d: dropped a control message of another communicator from "
                   "rank %d", comm->rank, src);
            mpi_post_ctl(s);
            continue;
        }
        if (valid && c->kind == CTL_STATE && n == (int)CTL_HEAD) {
            rc_desc_t theirs = c->desc;
            int query = c->status == 1;
            mpi_post_ctl(s);
            mpi_learn(s, src, &theirs);
            if (query) mpi_send_state(comm, src, 0);
            const rc_desc_t *mine = &comm->cur.desc;
            if (mine->coll != RC_COLL_NONE && theirs.coll != RC_COLL_NONE &&
                theirs.seq == mine->seq && !rc_desc_equal(&theirs, mine))
                return rc_comm_mismatch(comm, src, &theirs);
            continue;
        }
        s->aborted = 1; /* no abort of ours goes out over MPI now: the others heard one */
        rc_status_t st = (rc_status_t)c->status;
        if (valid && c->kind == CTL_ABORT && n == (int)sizeof *c && st < 0 &&
            st >= RC_ERR_INTERNAL)
            return rc_comm_adopt_abort(comm, src, st, c->msg, &rc_transport_mpi);
        char e[MPI_MAX_ERROR_STRING + 64] = "";
        if (err != MPI_SUCCESS) mpi_strerror(err, e);
        return rc_comm_fail(comm, RC_ERR_IO,
                            "rank %d: malformed control message (%d bytes) from rank %d over MPI%s%s",
                            comm->rank, n, src, *e ? ": " : "", e);
    }
}

/* Tell `peer` which collective this rank is in (it compares: see
 * mpi_check_ctl); with `query`, it answers with its own. */
static void mpi_send_state(rc_comm_t *comm, int peer, int query) {
    struct rc_mpi *s = comm->mpi;
    if (peer == comm->rank || !s->used[peer]) return;
    if (s->state_sreq[peer] != MPI_REQUEST_NULL) {
        int flag = 0;
        if (MPI_Test(&s->state_sreq[peer], &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || !flag)
            return; /* the previous one is still on its way */
    }
    mpi_ctl_t *c = &s->state_out[peer];
    memset(c, 0, CTL_HEAD);
    c->magic = CTL_MAGIC;
    c->kind = CTL_STATE;
    c->status = query;
    c->rank = comm->rank;
    c->id = s->id;
    c->desc = comm->cur.desc;
    if (MPI_Isend(c, (int)CTL_HEAD, MPI_BYTE, peer, TAG_CTL, s->comm, &s->state_sreq[peer]) !=
        MPI_SUCCESS)
        s->state_sreq[peer] = MPI_REQUEST_NULL;
}

/* Tell every peer (best effort: small eager sends, completed or cancelled
 * at close). */
static void mpi_abort(rc_comm_t *comm, rc_status_t st, const char *msg) {
    struct rc_mpi *s = comm->mpi;
    if (!s || s->aborted || s->comm == MPI_COMM_NULL || !s->ctl_sreq) return;
    if (!mpi_enter(s)) return;
    s->aborted = 1;
    memset(&s->ctl_out, 0, CTL_HEAD);
    s->ctl_out.magic = CTL_MAGIC;
    s->ctl_out.kind = CTL_ABORT;
    s->ctl_out.status = st;
    s->ctl_out.rank = comm->rank;
    s->ctl_out.id = s->id;
    snprintf(s->ctl_out.msg, sizeof s->ctl_out.msg, "%s", msg);
    for (int q = 0; q < s->p; q++)
        if (s->used[q] && q != comm->rank)
            MPI_Isend(&s->ctl_out, (int)sizeof s->ctl_out, MPI_BYTE, q, TAG_CTL, s->comm,
                      &s->ctl_sreq[q]);
    mpi_leave(s);
}

/* ---- waiting ---- */

typedef struct {
    uint32_t iter;
    mpi_backoff_t b;
    double t0, next_check;
    int warned;
    int stated; /* this rank's state went to the awaited peer */
    double ahead_since; /* the awaited peer was first seen in a later call */
} mpi_wait_t;

/* One step of a back-off: spin (`spin` steps), then sched_yield (at least
 * `yields` steps and for `yield_s` seconds), then nanosleep from 1 us
 * doubling to 1 ms.  MPI moves a large message only while both sides call
 * into it (a rendezvous, a pipelined copy through a bounce buffer), so a
 * wait keeps polling at yield speed for a while before it sleeps: sleeping
 * at once made a 16 MiB all-reduce 20x slower. */
static void mpi_backoff(const struct rc_mpi *s, mpi_backoff_t *b) {
    uint32_t k = b->iter < UINT32_MAX ? b->iter++ : b->iter;
    if (k < s->spin) {
        for (int i = 0; i < 16; i++) cpu_relax();
        return;
    }
    double now = rc_now();
    if (b->t0 == 0) b->t0 = now;
    if (k < s->spin + s->yields || now - b->t0 < s->yield_s) {
        sched_yield();
        return;
    }
    long ns = b->sleeps >= 10 ? 1000000L : 1000L << b->sleeps;
    b->sleeps++;
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

/* What this rank knows of `peer`'s progress: the newest collective of its
 * frames and of its state answers. */
static void mpi_learn(struct rc_mpi *s, int peer, const rc_desc_t *d) {
    rc_desc_t *k = &s->known[peer];
    if (d->coll == RC_COLL_NONE) return;
    if (k->coll == RC_COLL_NONE || (int32_t)(d->seq - k->seq) >= 0) *k = *d;
}

/* The stall inspector over MPI: the peers whose messages and state answers
 * do not show them in this collective, with the last one they do show. */
static void mpi_stragglers(rc_comm_t *comm, char *buf, size_t len) {
    struct rc_mpi *s = comm->mpi;
    size_t n = 0;
    buf[0] = 0;
    for (int r = 0; r < comm->size && n + 80 < len; r++) {
        const rc_desc_t *d = &s->known[r];
        if (r == comm->rank || !s->used[r]) continue;
        if (d->coll != RC_COLL_NONE && d->seq == comm->cur.desc.seq) continue; /* arrived */
        char last[180] = "no collective yet";
        if (d->coll != RC_COLL_NONE) {
            memcpy(last, "last in ", 8);
            rc_desc_format(d, last + 8, sizeof last - 8);
        }
        n += (size_t)snprintf(buf + n, len - n, "%s%d (%s)", n ? ", " : "", r, last);
    }
    if (!n) snprintf(buf, len, "none (every rank is in this call)");
}

/* One step of a collective's wait (the awaited request was not done):
 * back off, keep point-to-point work moving, check aborts and the deadline. */
static rc_status_t mpi_wait_step(rc_comm_t *comm, int peer, const char *what, mpi_wait_t *w) {
    struct rc_mpi *s = comm->mpi;
    if (w->iter == 0) w->t0 = w->next_check = rc_now();
    w->iter++;
    mpi_backoff(s, &w->b);
    if (RC_UNLIKELY(atomic_load_explicit(&s->finalizing, memory_order_relaxed)))
        return mpi_finalized_error(comm);
    if (RC_UNLIKELY(atomic_load_explicit(&comm->stop, memory_order_relaxed)))
        return rc_comm_fail(comm, RC_ERR_INVALID_ARG,
                            "rank %d: the communicator was closed during a call", comm->rank);
    if (comm->p2p_active) {
        int moved = rc_p2p_progress(comm);
        if (moved < 0) return (rc_status_t)moved;
    }
    if (w->iter < s->spin && (w->iter & 63) != 0) return RC_OK;
    RC_CHECK(mpi_check_ctl(comm));
    double now = rc_now();
    if (now < w->next_check) return RC_OK;
    w->next_check = now + 0.05;
    if (comm->ntps > 1) {
        /* what the other transports know (mux.c): an abort another rank of
         * this host recorded in shared memory reaches this rank only there */
        char doing[64];
        snprintf(doing, sizeof doing, "waiting to %s rank %d", what, peer);
        RC_CHECK(rc_mux_others_health(comm, &rc_transport_mpi, doing));
    }
    if (!w->stated && now - w->t0 >= 0.05) {
        /* a slow peer, or one in another call: every peer compares (a
         * mismatch) and answers with its own state (the stall inspector) */
        w->stated = 1;
        for (int q = 0; q < comm->size; q++) mpi_send_state(comm, q, 1);
    }
    /* The peer's state says it is in a later call.  Its messages of this
     * one may still be in flight (MPI orders only a tag's messages), so
     * give them a second before calling it a mismatch. */
    if (rc_comm_peer_is_ahead(comm, &s->known[peer]))
        RC_CHECK(rc_comm_peer_left(comm, peer, what, &s->known[peer], &w->ahead_since, 1.0));
    return rc_comm_wait_check(comm, w->t0, what, peer, " over MPI",
                              "by their messages and state answers; ", mpi_stragglers, &w->warned);
}

/* ---- receive slots ---- */

static rc_status_t __attribute__((noinline))
mpi_fail_call(rc_comm_t *comm, int err, const char *call, int lane, int peer) {
    char e[MPI_MAX_ERROR_STRING + 64];
    return rc_comm_fail(comm, RC_ERR_IO, "rank %d: %s (%s lane, rank %d) failed: %s", comm->rank,
                        call, lane_name(lane), peer, mpi_strerror(err, e));
}

/* A receive completed: check the frame against its descriptor and chunk_bytes. */
static rc_status_t mpi_rx_done(rc_comm_t *comm, int lane, int peer, size_t i,
                               const MPI_Status *status) {
    struct rc_mpi *s = comm->mpi;
    int n = -1;
    if (status->MPI_ERROR != MPI_SUCCESS && status->MPI_ERROR != MPI_ERR_PENDING)
        return mpi_fail_call(comm, status->MPI_ERROR, "MPI_Irecv", lane, peer);
    MPI_Get_count(status, MPI_BYTE, &n);
    const rc_desc_t *d = (const rc_desc_t *)(s->rbuf + i * s->stride);
    if (n >= MPI_HDR && *FRAME_ID(d) != s->id)
        return rc_comm_fail(comm, RC_ERR_MISMATCH,
                            "rank %d: a message from rank %d on the %s lane belongs to another "
                            "communicator (an earlier one, closed here while rank %d was still "
                            "sending on it)", comm->rank, peer, lane_name(lane), peer);
    if (n < MPI_HDR || (size_t)n > MPI_HDR + comm->chunk_bytes ||
        (size_t)d->bytes != (size_t)n - MPI_HDR)
        return rc_comm_fail(comm, RC_ERR_IO,
                            "rank %d: malformed message from rank %d on the %s lane over MPI: "
                            "%d bytes, its descriptor says %u payload bytes + %d header "
                            "(chunk %zu)", comm->rank, peer, lane_name(lane), n,
                            n >= MPI_HDR ? d->bytes : 0u, MPI_HDR, comm->chunk_bytes);
    s->rbytes[i] = n;
    return RC_OK;
}

static rc_status_t mpi_post_recv(rc_comm_t *comm, int lane, int peer, size_t i) {
    struct rc_mpi *s = comm->mpi;
    s->rbytes[i] = -1;
    int err = MPI_Irecv(s->rbuf + i * s->stride, (int)s->stride, MPI_BYTE, peer, lane, s->comm,
                        &s->rreq[i]);
    if (err != MPI_SUCCESS) {
        s->rreq[i] = MPI_REQUEST_NULL;
        return mpi_fail_call(comm, err, "MPI_Irecv", lane, peer);
    }
    return RC_OK;
}

/* ---- data path ---- */

static rc_status_t mpi_send_acquire(rc_comm_t *comm, int lane, int peer, void **buf, int wait) {
    struct rc_mpi *s = comm->mpi;
    if (RC_UNLIKELY(!mpi_enter(s))) return mpi_finalized_error(comm);
    size_t i = ix(s, lane, peer) * s->nslots + s->spos[ix(s, lane, peer)] % s->nslots;
    rc_status_t st = RC_OK;
    mpi_wait_t w = {0};
    while (s->sreq[i] != MPI_REQUEST_NULL) {
        int flag = 0, err = MPI_Test(&s->sreq[i], &flag, MPI_STATUS_IGNORE);
        if (RC_UNLIKELY(err != MPI_SUCCESS)) {
            s->sreq[i] = MPI_REQUEST_NULL;
            st = mpi_fail_call(comm, err, "MPI_Issend", lane, peer);
            break;
        }
        if (flag) break;
        if (!wait) {
            st = RC_INPROGRESS;
            break;
        }
        if ((st = mpi_wait_step(comm, peer, "send to", &w)) != RC_OK) break;
    }
    if (st == RC_OK) *buf = s->sbuf + i * s->stride + MPI_HDR;
    mpi_leave(s);
    return st;
}

static rc_status_t mpi_send_commit(rc_comm_t *comm, int lane, int peer, const rc_desc_t *d) {
    struct rc_mpi *s = comm->mpi;
    if (RC_UNLIKELY(!mpi_enter(s))) return mpi_finalized_error(comm);
    size_t k = ix(s, lane, peer), i = k * s->nslots + s->spos[k] % s->nslots;
    rc_status_t st = RC_OK;
    if (RC_UNLIKELY(d->bytes > comm->chunk_bytes)) {
        st = rc_comm_fail(comm, RC_ERR_INTERNAL, "rank %d: a %u-byte message to rank %d exceeds "
                          "the %zu-byte chunk", comm->rank, d->bytes, peer, comm->chunk_bytes);
    } else {
        char *slot = s->sbuf + i * s->stride;
        memcpy(slot, d, sizeof *d);
        *FRAME_ID(slot) = s->id;
        int err = MPI_Issend(slot, (int)(MPI_HDR + d->bytes), MPI_BYTE, peer, lane, s->comm,
                             &s->sreq[i]);
        if (RC_UNLIKELY(err != MPI_SUCCESS)) {
            s->sreq[i] = MPI_REQUEST_NULL;
            st = mpi_fail_call(comm, err, "MPI_Issend", lane, peer);
        } else {
            s->spos[k]++;
        }
    }
    mpi_leave(s);
    return st;
}

static rc_status_t mpi_recv_acquire(rc_comm_t *comm, int lane, int peer, const void **buf,
                                    rc_desc_t *d, int wait) {
    struct rc_mpi *s = comm->mpi;
    if (RC_UNLIKELY(!mpi_enter(s))) return mpi_finalized_error(comm);
    size_t i = ix(s, lane, peer) * s->nslots + s->rpos[ix(s, lane, peer)] % s->nslots;
    rc_status_t st = RC_OK;
    mpi_wait_t w = {0};
    while (s->rbytes[i] < 0) {
        if (RC_UNLIKELY(s->rreq[i] == MPI_REQUEST_NULL)) { /* a failed re-post */
            st = rc_set_error(comm->broken ? comm->broken : RC_ERR_INTERNAL, "%s",
                              comm->broken ? comm->broken_msg : "MPI receive slot not posted");
            break;
        }
        int flag = 0;
        MPI_Status status;
        status.MPI_ERROR = MPI_SUCCESS; /* MPI_Test does not set it */
        int err = MPI_Test(&s->rreq[i], &flag, &status);
        if (RC_UNLIKELY(err != MPI_SUCCESS)) {
            s->rreq[i] = MPI_REQUEST_NULL;
            st = mpi_fail_call(comm, err, "MPI_Irecv", lane, peer);
            break;
        }
        if (flag) {
            st = mpi_rx_done(comm, lane, peer, i, &status);
            break;
        }
        if (!wait) {
            st = RC_INPROGRESS;
            break;
        }
        if ((st = mpi_wait_step(comm, peer, "receive from", &w)) != RC_OK) break;
    }
    if (st == RC_OK) {
        const char *slot = s->rbuf + i * s->stride;
        memcpy(d, slot, sizeof *d);
        if (lane == RC_LANE_COLL) mpi_learn(s, peer, d);
        *buf = slot + MPI_HDR;
    }
    mpi_leave(s);
    return st;
}

static void mpi_recv_release(rc_comm_t *comm, int lane, int peer) {
    struct rc_mpi *s = comm->mpi;
    if (RC_UNLIKELY(!mpi_enter(s))) return;
    size_t k = ix(s, lane, peer), i = k * s->nslots + s->rpos[k] % s->nslots;
    s->rpos[k]++;
    mpi_post_recv(comm, lane, peer, i); /* a failure breaks the communicator */
    mpi_leave(s);
}

/* ---- events for the p2p engine ---- */

/* Test every p2p-lane request at once; the number that completed. */
static int mpi_poll_p2p(rc_comm_t *comm) {
    struct rc_mpi *s = comm->mpi;
    size_t base = ix(s, RC_LANE_P2P, 0) * s->nslots;
    int n = s->p * (int)s->nslots, out = 0, moved = 0;
    int local[256];
    MPI_Status stats[256];
    for (int at = 0; at < n; at += 256) {
        int m = n - at < 256 ? n - at : 256;
        for (int j = 0; j < m; j++) stats[j].MPI_ERROR = MPI_SUCCESS; /* set only on errors */
        int err = MPI_Testsome(m, &s->rreq[base + (size_t)at], &out, local, stats);
        if (err != MPI_SUCCESS && err != MPI_ERR_IN_STATUS) {
            mpi_fail_call(comm, err, "MPI_Testsome", RC_LANE_P2P, -1);
            return 1;
        }
        for (int j = 0; out != MPI_UNDEFINED && j < out; j++) {
            size_t i = base + (size_t)at + (size_t)local[j];
            int peer = (int)((size_t)(at + local[j]) / s->nslots);
            mpi_rx_done(comm, RC_LANE_P2P, peer, i, &stats[j]);
            moved++;
        }
        err = MPI_Testsome(m, &s->sreq[base + (size_t)at], &out, local, MPI_STATUSES_IGNORE);
        if (err != MPI_SUCCESS && err != MPI_ERR_IN_STATUS) {
            mpi_fail_call(comm, err, "MPI_Testsome", RC_LANE_P2P, -1);
            return 1;
        }
        if (out != MPI_UNDEFINED) moved += out;
    }
    return moved;
}

static uint32_t mpi_events(rc_comm_t *comm) {
    return atomic_load_explicit(&comm->mpi->events, memory_order_acquire);
}

static void mpi_kick(rc_comm_t *comm) {
    atomic_fetch_add_explicit(&comm->mpi->events, 1, memory_order_release);
}

/* Until the event counter moves (a p2p message arrived, a p2p send
 * completed, a kick, a peer's abort) or max_s passes, polling MPI with a
 * back-off that carries over from one call to the next while nothing moves
 * (an idle pending receive costs a poll per ms, not a core). */
static void mpi_wait_events(rc_comm_t *comm, uint32_t seen, double max_s) {
    struct rc_mpi *s = comm->mpi;
    if (!mpi_enter(s)) return;
    double end = rc_now() + max_s;
    for (;;) {
        if (atomic_load_explicit(&s->events, memory_order_acquire) != seen) {
            memset(&s->idle, 0, sizeof s->idle);
            break;
        }
        int moved = mpi_poll_p2p(comm);
        if (moved || (s->ctl_rreq != MPI_REQUEST_NULL && mpi_check_ctl(comm) != RC_OK)) {
            atomic_fetch_add_explicit(&s->events, moved ? (uint32_t)moved : 1u,
                                      memory_order_release);
            memset(&s->idle, 0, sizeof s->idle);
            break;
        }
        if (comm->broken || rc_now() >= end) break;
        mpi_backoff(s, &s->idle);
    }
    mpi_leave(s);
}

static rc_status_t mpi_health(rc_comm_t *comm, const char *doing) {
    struct rc_mpi *s = comm->mpi;
    (void)doing; /* MPI tells nothing of a peer's liveness: the deadline names it */
    if (!mpi_enter(s)) return mpi_finalized_error(comm);
    rc_status_t st = comm->broken ? rc_set_error(comm->broken, "%s", comm->broken_msg)
                                  : mpi_check_ctl(comm);
    mpi_leave(s);
    return st;
}

static void mpi_publish(rc_comm_t *comm) {
    (void)comm; /* every frame carries its descriptor: mismatches show there */
}

/* ---- lifecycle ---- */

static int mpi_can_connect(const rc_addr_t *self, const rc_addr_t *peer) {
    (void)self;
    (void)peer;
    return 1;
}

static rc_status_t mpi_create(rc_comm_t *comm) {
    struct rc_mpi *s = calloc(1, sizeof *s);
    if (!s) return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", comm->rank);
    comm->mpi = s;
    s->comm = MPI_COMM_NULL;
    s->keyval = MPI_KEYVAL_INVALID;
    s->ctl_rreq = MPI_REQUEST_NULL;
    return RC_OK;
}

/* Complete (bounded) every non-null request of r[0..n): receives are
 * cancelled first; sends are never cancelled (MPI-4 deprecates it, and
 * MPICH over UCX crashes in it), they get `secs` to complete.  What is still
 * pending then is freed (MPI finishes it in the background): 0 is returned,
 * and the buffers must be kept. */
static int mpi_drain(MPI_Request *r, size_t n, double secs, int recv) {
    for (size_t i = 0; recv && i < n; i++)
        if (r[i] != MPI_REQUEST_NULL) MPI_Cancel(&r[i]);
    double end = rc_now() + secs;
    for (;;) {
        int pending = 0;
        for (size_t i = 0; i < n; i++) {
            if (r[i] == MPI_REQUEST_NULL) continue;
            int flag = 0;
            if (MPI_Test(&r[i], &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS) r[i] = MPI_REQUEST_NULL;
            else if (!flag) pending = 1;
        }
        if (!pending || rc_now() > end) break;
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    int all = 1;
    for (size_t i = 0; i < n; i++) {
        if (r[i] == MPI_REQUEST_NULL) continue;
        MPI_Request_free(&r[i]);
        all = 0;
    }
    return all;
}

/* Release every MPI object (not the memory): close, or the MPI_Finalize
 * callback.  Sends get a moment to complete (the peers received what the
 * finished calls sent); receives are cancelled. */
static void mpi_release(rc_comm_t *comm) {
    struct rc_mpi *s = comm->mpi;
    if (s->released) return;
    s->released = 1;
    int finalized = 1;
    MPI_Finalized(&finalized);
    if (finalized) return;
    size_t n = (size_t)RC_NLANES * (size_t)s->p * s->nslots;
    double grace = comm->broken ? 0.1 : 2.0;
    if (s->reqs_valid) { /* else connect failed before the arrays held requests */
        if (!mpi_drain(s->sreq, n, grace, 0)) s->leak = 1;
        if (!mpi_drain(s->rreq, n, 0.5, 1)) s->leak = 1;
        if (!mpi_drain(s->ctl_sreq, (size_t)s->p, 0.1, 0)) s->leak = 1;
        if (!mpi_drain(s->state_sreq, (size_t)s->p, 0.1, 0)) s->leak = 1;
    }
    if (!mpi_drain(&s->ctl_rreq, 1, 0.5, 1)) s->leak = 1;
    /* A failed communicator keeps its duplicate: messages of the failed
     * call may still arrive, and must not land in a reused context. */
    if (s->comm != MPI_COMM_NULL && !comm->broken) MPI_Comm_free(&s->comm);
    else if (s->comm != MPI_COMM_NULL)
        RC_LOG(RC_INFO, "rank %d: the MPI duplicate of a failed communicator is kept (not "
               "freed) so late messages cannot reach a later one", comm->rank);
    s->comm = MPI_COMM_NULL;
    if (s->leak)
        RC_LOG(RC_WARN, "rank %d: MPI requests of a closed communicator never completed; "
               "their buffers are kept", comm->rank);
}

/* MPI_Finalize deletes MPI_COMM_SELF's attributes first (and close
 * deletes ours, after releasing everything): from here on no ringcomm call
 * enters MPI; wait until none is inside.  The requests are left to
 * MPI_Finalize: cancelling receives from inside it crashed MPICH over UCX
 * (a mutex still held when Finalize destroys it), and MPI tears them down
 * anyway (UCX may warn that requests were not returned).  Python closes
 * ringcomm's MPI communicators before mpi4py finalizes (bootstrap.py), so
 * this is the path of an explicit MPI_Finalize before close() only. */
static int mpi_finalize_cb(MPI_Comm self, int keyval, void *attr, void *extra) {
    (void)self;
    (void)keyval;
    (void)attr;
    rc_comm_t *comm = extra;
    struct rc_mpi *s = comm->mpi;
    atomic_store_explicit(&s->finalizing, 1, memory_order_seq_cst);
    while (atomic_load_explicit(&s->inflight, memory_order_seq_cst) != 0) {
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    s->released = 1;
    return MPI_SUCCESS;
}

static void *mpi_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, RC_CACHELINE, bytes ? bytes : RC_CACHELINE) != 0) return NULL;
    return p;
}

static const char *thread_level_name(int l) {
    return l == MPI_THREAD_SINGLE       ? "MPI_THREAD_SINGLE"
           : l == MPI_THREAD_FUNNELED   ? "MPI_THREAD_FUNNELED"
           : l == MPI_THREAD_SERIALIZED ? "MPI_THREAD_SERIALIZED"
                                        : "MPI_THREAD_MULTIPLE";
}

static rc_status_t mpi_connect(rc_comm_t *comm, const rc_addr_t *addrs) {
    struct rc_mpi *s = comm->mpi;
    (void)addrs;
    int over = comm->oversubscribed;
    s->spin = (uint32_t)rc_env_ll("RINGCOMM_SPIN", over ? 30 : 4000);
    s->yields = (uint32_t)rc_env_ll("RINGCOMM_YIELDS", over ? 20 : 200);
    /* then yield-polling for this long before sleeping (see mpi_backoff) */
    s->yield_s = (double)rc_env_ll("RINGCOMM_MPI_YIELD_US", 5000) * 1e-6;
    int inited = 0, finalized = 0, level = MPI_THREAD_SINGLE, err;
    char e[MPI_MAX_ERROR_STRING + 64];
    if (!comm->has_mpi)
        return rc_set_error(RC_ERR_NOT_SUPPORTED,
                            "rank %d: the MPI transport needs the MPI communicator this "
                            "communicator was made from (Communicator.from_mpi, or ringcomm.init() "
                            "under mpirun); this one was not (torch Store or split)",
                            comm->rank);
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (!inited || finalized)
        return rc_set_error(RC_ERR_NOT_SUPPORTED,
                            "rank %d: MPI is %s in the libmpi ringcomm was built with; if mpi4py "
                            "initialized MPI, it uses another libmpi (ringcomm's MPI transport "
                            "must be built against the MPI your mpi4py uses)",
                            comm->rank, finalized ? "finalized" : "not initialized");
    MPI_Query_thread(&level);
    if (level < MPI_THREAD_MULTIPLE)
        return rc_set_error(RC_ERR_NOT_SUPPORTED,
                            "rank %d: the MPI transport needs MPI_THREAD_MULTIPLE (ringcomm calls "
                            "MPI from its progress thread while yours may call MPI too), but MPI "
                            "was initialized with %s; initialize it with MPI_THREAD_MULTIPLE "
                            "(mpi4py's default: mpi4py.rc.thread_level = 'multiple')",
                            comm->rank, thread_level_name(level));
    MPI_Comm user = MPI_Comm_f2c((MPI_Fint)comm->mpi_fhandle);
    int urank = -1, usize = -1;
    if (user == MPI_COMM_NULL || MPI_Comm_rank(user, &urank) != MPI_SUCCESS ||
        MPI_Comm_size(user, &usize) != MPI_SUCCESS || urank != comm->rank ||
        usize != comm->size)
        return rc_set_error(RC_ERR_INVALID_ARG,
                            "rank %d: the MPI communicator given (handle %lld: rank %d of %d) "
                            "does not have this communicator's ranks (rank %d of %d)",
                            comm->rank, comm->mpi_fhandle, urank, usize, comm->rank, comm->size);
    /* collective over the user's communicator: every rank gets here */
    err = MPI_Comm_dup(user, &s->comm);
    if (err != MPI_SUCCESS) {
        s->comm = MPI_COMM_NULL;
        return rc_set_error(RC_ERR_IO, "rank %d: MPI_Comm_dup failed: %s", comm->rank,
                            mpi_strerror(err, e));
    }
    MPI_Comm_set_errhandler(s->comm, MPI_ERRORS_RETURN);
    MPI_Comm_set_name(s->comm, "ringcomm");
    /* Communicator-wide tuning: rank 0's decides.  comm_connect has already
     * adopted rank 0's from its address blob (the "auto" thresholds too);
     * this checks that the chunking agrees. */
    uint64_t tune[4] = {comm->chunk_bytes, comm->nslots, (uint64_t)comm->algo_env,
                        comm->stream_min};
    err = MPI_Bcast(tune, 4, MPI_UINT64_T, 0, s->comm);
    if (err != MPI_SUCCESS)
        return rc_set_error(RC_ERR_IO, "rank %d: MPI_Bcast of rank 0's settings failed: %s",
                            comm->rank, mpi_strerror(err, e));
    if (tune[0] < 64 || tune[0] > (1u << 30) || tune[0] % 64 || tune[1] < 2 || tune[1] > 1024 ||
        tune[2] >= RC_NUM_ALGOS)
        return rc_set_error(RC_ERR_MISMATCH, "rank %d: rank 0's settings over MPI are invalid "
                            "(chunk %llu, %llu slots)", comm->rank,
                            (unsigned long long)tune[0], (unsigned long long)tune[1]);
    if (comm->ntps == 1) {
        comm->chunk_bytes = (size_t)tune[0];
        comm->nslots = (uint32_t)tune[1];
        comm->algo_env = (int)tune[2];
        comm->stream_min = tune[3];
    } else if (tune[0] != comm->chunk_bytes || tune[1] != comm->nslots) {
        return rc_set_error(RC_ERR_MISMATCH, "rank %d: chunk %zu B x %u slots, rank 0 has "
                            "%llu B x %llu (set RINGCOMM_CHUNK_BYTES / RINGCOMM_NSLOTS alike "
                            "on every rank)", comm->rank, comm->chunk_bytes, comm->nslots,
                            (unsigned long long)tune[0], (unsigned long long)tune[1]);
    }
    int p = s->p = comm->size;
    s->id = mpi_comm_id(comm->token);
    s->nslots = comm->nslots;
    s->stride = RC_ALIGN_UP(MPI_HDR + comm->chunk_bytes, RC_CACHELINE);
    if (s->stride > (size_t)INT32_MAX)
        return rc_set_error(RC_ERR_INVALID_ARG, "rank %d: chunk %zu B is too large for MPI",
                            comm->rank, comm->chunk_bytes);
    size_t nreq = (size_t)RC_NLANES * (size_t)p * s->nslots;
    s->used = calloc((size_t)p, 1);
    s->known = calloc((size_t)p, sizeof *s->known);
    s->spos = calloc((size_t)RC_NLANES * (size_t)p, sizeof *s->spos);
    s->rpos = calloc((size_t)RC_NLANES * (size_t)p, sizeof *s->rpos);
    s->sreq = malloc(nreq * sizeof *s->sreq);
    s->rreq = malloc(nreq * sizeof *s->rreq);
    s->rbytes = malloc(nreq * sizeof *s->rbytes);
    s->ctl_sreq = malloc((size_t)p * sizeof *s->ctl_sreq);
    s->state_sreq = malloc((size_t)p * sizeof *s->state_sreq);
    s->state_out = calloc((size_t)p, sizeof *s->state_out);
    if (!s->state_sreq || !s->state_out ||!s->used || !s->known || !s->spos || !s->rpos || !s->sreq || !s->rreq || !s->rbytes ||
        !s->ctl_sreq)
        return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", comm->rank);
    for (size_t i = 0; i < nreq; i++) {
        s->sreq[i] = s->rreq[i] = MPI_REQUEST_NULL;
        s->rbytes[i] = -1;
    }
    int npeers = 0;
    s->reqs_valid = 1;
    for (int q = 0; q < p; q++) {
        s->ctl_sreq[q] = s->state_sreq[q] = MPI_REQUEST_NULL;
        /* this rank too: p2p.c sends to itself through the transport */
        s->used[q] = rc_peer_is(comm, q, &rc_transport_mpi);
        npeers += s->used[q];
    }
    /* one slot array for every (lane, peer): the pages of peers MPI does not
     * serve (shared memory does, or this rank) are never touched, so they
     * cost address space only */
    size_t per = (size_t)s->nslots * s->stride;
    s->sbuf = mpi_alloc(nreq * s->stride);
    s->rbuf = mpi_alloc(nreq * s->stride);
    if (!s->sbuf || !s->rbuf)
        return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory for %d x %zu bytes of MPI "
                            "slots", comm->rank, 2 * RC_NLANES * npeers, per);
    for (int lane = 0; lane < RC_NLANES; lane++)
        for (int q = 0; q < p; q++)
            for (uint32_t k = 0; s->used[q] && k < s->nslots; k++)
                RC_CHECK(mpi_post_recv(comm, lane, q, ix(s, lane, q) * s->nslots + k));
    mpi_post_ctl(s);
    if (s->ctl_rreq == MPI_REQUEST_NULL)
        return rc_set_error(RC_ERR_IO, "rank %d: MPI_Irecv of control messages failed",
                            comm->rank);
    /* release our MPI objects if MPI_Finalize comes before close */
    if (MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, mpi_finalize_cb, &s->keyval, comm) ==
        MPI_SUCCESS) {
        if (MPI_Comm_set_attr(MPI_COMM_SELF, s->keyval, comm) != MPI_SUCCESS) {
            MPI_Comm_free_keyval(&s->keyval);
            s->keyval = MPI_KEYVAL_INVALID;
        }
    } else {
        s->keyval = MPI_KEYVAL_INVALID;
    }
    if (rc_debug_level() >= RC_INFO) {
        char lib[MPI_MAX_LIBRARY_VERSION_STRING] = "";
        int len = 0;
        MPI_Get_library_version(lib, &len);
        lib[strcspn(lib, "\n")] = 0;
        for (int q = 0; q < p; q++)
            if (s->used[q] && q != comm->rank)
                RC_LOG(RC_INFO, "rank %d -> rank %d: transport mpi (MPI rank %d on a duplicate "
                       "of the user's communicator; tags 0/1 coll/p2p, 2 control; %u x %zu B "
                       "slots per lane; %s)", comm->rank, q, q, s->nslots, comm->chunk_bytes, lib);
    }
    return RC_OK;
}

static void mpi_close(rc_comm_t *comm) {
    struct rc_mpi *s = comm->mpi;
    if (!s) return;
    int finalized = 1;
    MPI_Finalized(&finalized);
    if (!finalized && !s->released) {
        mpi_release(comm);
        if (s->keyval != MPI_KEYVAL_INVALID) {
            int keyval = s->keyval;
            /* runs the callback, which finds everything released */
            MPI_Comm_delete_attr(MPI_COMM_SELF, keyval);
            MPI_Comm_free_keyval(&keyval);
        }
    }
    free(s->sreq);
    free(s->rreq);
    free(s->rbytes);
    free(s->ctl_sreq);
    free(s->state_sreq);
    free(s->spos);
    free(s->rpos);
    free(s->known);
    free(s->used);
    comm->mpi = NULL;
    if (s->leak && !finalized) return; /* MPI may still touch the slots (logged): kept */
    free(s->sbuf);
    free(s->rbuf);
    free(s->state_out);
    free(s);
}

const rc_transport_ops_t rc_transport_mpi = {
    .name = "mpi",
    .can_connect = mpi_can_connect,
    .create = mpi_create,
    .connect = mpi_connect,
    .send_acquire = mpi_send_acquire,
    .send_commit = mpi_send_commit,
    .recv_acquire = mpi_recv_acquire,
    .recv_release = mpi_recv_release,
    .events = mpi_events,
    .wait_events = mpi_wait_events,
    .kick = mpi_kick,
    .health = mpi_health,
    .publish = mpi_publish,
    .abort = mpi_abort,
    .close = mpi_close,
};
