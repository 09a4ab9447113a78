/* progress.c - posting operations, the progress thread, requests.
 *
 * Every operation of a communicator runs in the order it was posted, so
 * that the ranks agree on the order of collectives without exchanging any
 * message about it.  One executor at a time runs them:
 *
 *   - a blocking call on an idle communicator (nothing queued, no executor)
 *     runs on the caller's thread: no hand-off, the latency of the C call;
 *   - otherwise the call is queued and the communicator's progress thread
 *     (started on first need) runs it; a blocking caller sleeps until done.
 *
 * Collectives run to completion on the executor.  Sends and receives are
 * posted into the point-to-point engine (p2p.c) and complete as their
 * chunks move: the executor keeps them moving between collectives and,
 * through the transport's waits, during them.  While p2p operations are
 * pending and nothing else is queued, the progress thread sleeps on the
 * transport's event counter (backing off: spin, yield, futex) and checks the
 * peers' health and the deadline.
 *
 * A request is completed by the executor (status and error text copied into
 * it, then state = DONE with release order); waiters sleep on the
 * communicator's done_word futex, never on the request, so a request freed
 * right after completion is never touched again.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "p2p.h"
#include "transport/transport.h"

static void futex_wait(_Atomic uint32_t *addr, uint32_t val, double max_s) {
    if (max_s <= 0) return;
    struct timespec ts = {(time_t)max_s, (long)((max_s - (double)(time_t)max_s) * 1e9)};
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, &ts, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

void rc_req_complete(rc_comm_t *comm, rc_request_t *r, rc_status_t st) {
    if (comm->trace_id && (r->task.coll == RC_COLL_SEND || r->task.coll == RC_COLL_RECV))
        rc_trace_op(comm, &r->task, r->msg, r->t_post, r->t_start, rc_now(), st);
    r->status = st;
    if (st != RC_OK) snprintf(r->err, sizeof r->err, "%s", rc_last_error());
    atomic_store_explicit(&r->state, RC_REQ_DONE, memory_order_release);
    atomic_fetch_add_explicit(&comm->done_word, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&comm->done_waiters, memory_order_seq_cst))
        futex_wake_all(&comm->done_word);
}

/* There is work for the progress thread (new task, or p2p pending). */
static void kick(rc_comm_t *comm) {
    atomic_fetch_add_explicit(&comm->kick_word, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&comm->kick_waiters, memory_order_seq_cst))
        futex_wake_all(&comm->kick_word);
    comm->tp->kick(comm); /* it may be sleeping on the transport's events */
}

/* ---- the executor's work ---- */

/* Point-to-point traffic moved: the deadline and the warning start over. */
static void p2p_moved(rc_comm_t *comm, double now) {
    comm->p2p_moved_at = now;
    comm->p2p_warned = 0;
}

/* A failed communicator fails its pending sends and receives too. */
static void fail_p2p_if_broken(rc_comm_t *comm) {
    if (comm->broken && comm->p2p_active) rc_p2p_fail_all(comm, comm->broken);
}

static void exec_task(rc_comm_t *comm, rc_request_t *r) {
    if (r->task.coll == RC_COLL_SEND || r->task.coll == RC_COLL_RECV) {
        if (!comm->p2p_active) p2p_moved(comm, rc_now());
        rc_p2p_post(comm, r);
        return;
    }
    atomic_store_explicit(&r->state, RC_REQ_ACTIVE, memory_order_relaxed);
    rc_status_t st = rc_task_run(comm, &r->task, r->t_post);
    if (st != RC_OK) fail_p2p_if_broken(comm);
    rc_req_complete(comm, r, st);
}

/* One round of point-to-point progress; when nothing moved, sleep until an
 * event (at most a couple of ms), then check health and the deadline.
 * Returns < 0 when the communicator failed (every p2p request failed). */
static int p2p_round(rc_comm_t *comm, double *next_check) {
    uint32_t seen = comm->tp->events(comm);
    int moved = rc_p2p_progress(comm);
    if (moved < 0) return moved;
    double now = rc_now();
    if (moved > 0 || !comm->p2p_active) {
        p2p_moved(comm, now);
        return moved;
    }
    comm->tp->wait_events(comm, seen, 0.002);
    now = rc_now();
    if (now < *next_check && !atomic_load_explicit(&comm->stop, memory_order_relaxed)) return 0;
    *next_check = now + 0.05;
    char doing[200], what[240];
    rc_p2p_describe(comm, doing, sizeof doing);
    snprintf(what, sizeof what, "in %s", doing);
    rc_status_t st = comm->tp->health(comm, what);
    if (st == RC_OK && atomic_load_explicit(&comm->stop, memory_order_relaxed))
        st = rc_comm_fail(comm, RC_ERR_INVALID_ARG, "rank %d: the communicator was closed %s",
                          comm->rank, what);
    if (st == RC_OK && now - comm->p2p_moved_at > comm->timeout_s / 2 && !comm->p2p_warned) {
        comm->p2p_warned = 1;
        rc_log(RC_WARN, "rank %d has waited %.1f s %s and nothing moved; it fails at %.0f s "
               "(RINGCOMM_TIMEOUT)", comm->rank, now - comm->p2p_moved_at, what, comm->timeout_s);
    }
    if (st == RC_OK && now - comm->p2p_moved_at > comm->timeout_s)
        st = rc_comm_fail(comm, RC_ERR_TIMEOUT,
                          "timeout: rank %d waited %.1f s %s, and nothing moved "
                          "(RINGCOMM_TIMEOUT=%.0f)",
                          comm->rank, now - comm->p2p_moved_at, what, comm->timeout_s);
    if (st != RC_OK) {
        fail_p2p_if_broken(comm);
        return (int)st;
    }
    return 0;
}

static void *progress_main(void *arg) {
    rc_comm_t *comm = arg;
    double next_check = rc_now() + 0.05;
    pthread_mutex_lock(&comm->qmu);
    while (!atomic_load(&comm->stop)) {
        if (!comm->executor && (comm->qhead || comm->p2p_active)) {
            comm->executor = 1;
            rc_request_t *r = comm->qhead;
            if (r) {
                comm->qhead = r->next;
                if (!comm->qhead) comm->qtail = NULL;
                r->next = NULL;
            }
            pthread_mutex_unlock(&comm->qmu);
            if (r) exec_task(comm, r);
            else p2p_round(comm, &next_check);
            pthread_mutex_lock(&comm->qmu);
            comm->executor = 0;
            continue;
        }
        /* nothing to do, or a caller's thread is executing: sleep until kicked */
        uint32_t seen = atomic_load(&comm->kick_word);
        pthread_mutex_unlock(&comm->qmu);
        atomic_fetch_add(&comm->kick_waiters, 1);
        if (!atomic_load(&comm->stop)) futex_wait(&comm->kick_word, seen, 0.1);
        atomic_fetch_sub(&comm->kick_waiters, 1);
        pthread_mutex_lock(&comm->qmu);
    }
    pthread_mutex_unlock(&comm->qmu);
    return NULL;
}

/* Under qmu. */
static rc_status_t ensure_thread(rc_comm_t *comm) {
    if (comm->thread_started) return RC_OK;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* signals stay with the caller's threads */
    int e = pthread_create(&comm->thread, NULL, progress_main, comm);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0)
        return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: cannot start the progress thread: %s",
                            comm->rank, strerror(e));
    comm->thread_started = 1;
    return RC_OK;
}

static void enqueue(rc_comm_t *comm, rc_request_t *r) {
    r->next = NULL;
    if (comm->qtail) comm->qtail->next = r;
    else comm->qhead = r;
    comm->qtail = r;
}

/* A blocking call, run on the caller's thread as the executor. */
static rc_status_t run_inline(rc_comm_t *comm, const rc_task_t *t, int *source) {
    if (t->coll != RC_COLL_SEND && t->coll != RC_COLL_RECV) {
        rc_status_t st = rc_task_run(comm, t, 0);
        if (st != RC_OK) fail_p2p_if_broken(comm);
        return st;
    }
    rc_request_t r;
    memset(&r, 0, sizeof r);
    r.task = *t;
    r.comm = comm;
    r.internal = 1;
    if (!comm->p2p_active) p2p_moved(comm, rc_now());
    rc_status_t st = rc_p2p_post(comm, &r);
    double next_check = rc_now() + 0.05; /* health checks only once a wait gets long */
    while (st == RC_OK && atomic_load_explicit(&r.state, memory_order_acquire) != RC_REQ_DONE) {
        int m = p2p_round(comm, &next_check);
        if (m < 0) break;
    }
    if (atomic_load_explicit(&r.state, memory_order_acquire) != RC_REQ_DONE)
        return rc_set_error(RC_ERR_INTERNAL, "rank %d: %s did not complete", comm->rank,
                            rc_coll_name(t->coll));
    if (r.status != RC_OK) return rc_set_error(r.status, "%s", r.err);
    if (source) *source = r.source;
    return RC_OK;
}

static rc_status_t wait_done(rc_request_t *r, double timeout_s) {
    rc_comm_t *comm = r->comm;
    double t0 = timeout_s >= 0 ? rc_now() : 0;
    while (atomic_load_explicit(&r->state, memory_order_acquire) != RC_REQ_DONE) {
        uint32_t seen = atomic_load_explicit(&comm->done_word, memory_order_seq_cst);
        atomic_fetch_add_explicit(&comm->done_waiters, 1, memory_order_seq_cst);
        double slice = 0.1;
        if (timeout_s >= 0) {
            double left = timeout_s - (rc_now() - t0);
            if (left <= 0) {
                atomic_fetch_sub(&comm->done_waiters, 1);
                return rc_set_error(RC_ERR_TIMEOUT,
                                    "wait: the %s request on rank %d is still running after "
                                    "%.3g s (it stays valid: wait again or test)",
                                    rc_coll_name(r->task.coll), comm->rank, timeout_s);
            }
            if (left < slice) slice = left;
        }
        if (atomic_load_explicit(&r->state, memory_order_acquire) != RC_REQ_DONE)
            futex_wait(&comm->done_word, seen, slice);
        atomic_fetch_sub_explicit(&comm->done_waiters, 1, memory_order_seq_cst);
    }
    if (r->status != RC_OK) return rc_set_error(r->status, "%s", r->err);
    return RC_OK;
}

/* The busy guard: one caller at a time per communicator (calls from two
 * threads could reach the ranks in different orders). */
static rc_status_t enter(rc_comm_t *comm, const rc_task_t *t) {
    const char *what = rc_coll_name(t->coll);
    if (!comm->connected)
        return rc_set_error(RC_ERR_INVALID_ARG, "%s: communicator is not connected (or closed)",
                            what);
    if (comm->broken)
        return rc_set_error(comm->broken, "%s: communicator failed earlier: %s", what,
                            comm->broken_msg);
    if (atomic_exchange(&comm->busy, 1))
        return rc_set_error(RC_ERR_INVALID_ARG,
                            "%s on rank %d: the communicator is already in use by another "
                            "thread; calls on one communicator must not overlap",
                            what, comm->rank);
    return RC_OK;
}

rc_status_t rc_submit(rc_comm_t *comm, const rc_task_t *t, rc_request_t **req, int *source) {
    RC_CHECK(enter(comm, t));
    rc_status_t st = RC_OK;
    int p2p = t->coll == RC_COLL_SEND || t->coll == RC_COLL_RECV;
    if (req) {
        rc_request_t *r = calloc(1, sizeof *r);
        if (!r) {
            atomic_store(&comm->busy, 0);
            return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", comm->rank);
        }
        r->task = *t;
        r->comm = comm;
        r->source = -1;
        if (comm->trace_id) r->t_post = rc_now();
        pthread_mutex_lock(&comm->qmu);
        if (p2p && !comm->executor && !comm->qhead) {
            /* posting a send or receive does not block: do it here */
            comm->executor = 1;
            pthread_mutex_unlock(&comm->qmu);
            exec_task(comm, r);
            if (comm->p2p_active && rc_p2p_progress(comm) > 0) p2p_moved(comm, rc_now());
            pthread_mutex_lock(&comm->qmu);
            comm->executor = 0;
        } else {
            enqueue(comm, r);
        }
        if (comm->qhead || comm->p2p_active) st = ensure_thread(comm);
        pthread_mutex_unlock(&comm->qmu);
        kick(comm);
        *req = r;
        atomic_store(&comm->busy, 0);
        return st;
    }
    pthread_mutex_lock(&comm->qmu);
    if (!comm->executor && !comm->qhead) {
        comm->executor = 1;
        pthread_mutex_unlock(&comm->qmu);
        st = run_inline(comm, t, source);
        pthread_mutex_lock(&comm->qmu);
        comm->executor = 0;
        int more = comm->qhead || comm->p2p_active;
        rc_status_t st2 = more ? ensure_thread(comm) : RC_OK;
        pthread_mutex_unlock(&comm->qmu);
        if (more) kick(comm);
        if (st == RC_OK) st = st2;
    } else {
        rc_request_t r;
        memset(&r, 0, sizeof r);
        r.task = *t;
        r.comm = comm;
        r.internal = 1;
        r.source = -1;
        if (comm->trace_id) r.t_post = rc_now();
        enqueue(comm, &r);
        st = ensure_thread(comm);
        pthread_mutex_unlock(&comm->qmu);
        kick(comm);
        if (st == RC_OK) st = wait_done(&r, -1);
        if (st == RC_OK && source) *source = r.source;
    }
    atomic_store(&comm->busy, 0);
    return st;
}

void rc_progress_shutdown(rc_comm_t *comm) {
    pthread_mutex_lock(&comm->qmu);
    atomic_store(&comm->stop, 1);
    int started = comm->thread_started;
    pthread_mutex_unlock(&comm->qmu);
    if (started) {
        kick(comm);
        pthread_join(comm->thread, NULL);
        comm->thread_started = 0;
    }
    /* what never ran fails; nothing runs any more */
    rc_request_t *r = comm->qhead;
    comm->qhead = comm->qtail = NULL;
    while (r) {
        rc_request_t *next = r->next;
        rc_set_error(RC_ERR_INVALID_ARG,
                     "%s on rank %d: the communicator was closed before the operation ran",
                     rc_coll_name(r->task.coll), comm->rank);
        rc_req_complete(comm, r, RC_ERR_INVALID_ARG);
        r = next;
    }
    if (comm->p2p_active) {
        rc_set_error(RC_ERR_INVALID_ARG, "rank %d: the communicator was closed before the send "
                     "or receive completed", comm->rank);
        rc_p2p_fail_all(comm, RC_ERR_INVALID_ARG);
    }
}

/* ---- requests ---- */

rc_status_t rc_request_test(rc_request_t *r, int *done) {
    if (!r || !done) return rc_set_error(RC_ERR_INVALID_ARG, "request_test: NULL argument");
    *done = atomic_load_explicit(&r->state, memory_order_acquire) == RC_REQ_DONE;
    if (!*done) return RC_OK;
    if (r->status != RC_OK) return rc_set_error(r->status, "%s", r->err);
    return RC_OK;
}

rc_status_t rc_request_wait(rc_request_t *r, double timeout_s) {
    if (!r) return rc_set_error(RC_ERR_INVALID_ARG, "request_wait: request is NULL");
    return wait_done(r, timeout_s);
}

int rc_request_source(const rc_request_t *r) { return r ? r->source : -1; }

void rc_request_free(rc_request_t *r) {
    if (!r) return;
    if (atomic_load_explicit(&r->state, memory_order_acquire) != RC_REQ_DONE) wait_done(r, -1);
    free(r);
}
