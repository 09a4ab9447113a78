/* straggler.c - who the others wait for.
 *
 * Every collective call records this rank's arrival time (rc_now, when the
 * call starts running on this rank) in a ring of the last RC_STRAG_RING
 * calls, indexed by the call's sequence number (the same on every rank):
 * one clock read and two stores per call, no message.  The report
 * (`comm.stragglers()`, src/ringcomm/stragglers.py) all-gathers the
 * recorded times when the user asks for it.
 *
 * RINGCOMM_STRAGGLER=SECONDS (rank 0's value, carried in its address blob
 * like the tuning, so every rank agrees): after every
 * RINGCOMM_STRAGGLER_CALLS (default 256) calls, decided by the call count
 * and so the same on every rank, the ranks gather their arrival times of
 * those calls to rank 0 (a "quiet" gather: not recorded itself).  Rank 0
 * computes each call's lateness per rank (arrival minus the call's
 * earliest arrival, in rank 0's clock: each rank subtracts its offset, which
 * stragglers.py estimates across kernels) and, once SECONDS have passed
 * since its last line, prints one line naming the rank with the highest
 * median lateness when it is well above the others' (>= 1 ms and >= 3x
 * the next rank's), then starts a new window.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "transport/transport.h"

rc_status_t rc_strag_init(rc_comm_t *comm) {
    rc_strag_t *s = &comm->strag;
    s->t = malloc(RC_STRAG_RING * sizeof *s->t);
    s->seq = malloc(RC_STRAG_RING * sizeof *s->seq);
    if (!s->t || !s->seq)
        return rc_set_error(RC_ERR_NO_MEMORY, "comm_create: out of memory (arrival ring)");
    for (int i = 0; i < RC_STRAG_RING; i++) {
        s->t[i] = NAN;
        s->seq[i] = (uint32_t)(i + 1); /* never the sequence number of its slot yet */
    }
    return RC_OK;
}

/* The host part of an address's host identity ("boot/dev/name" or "env:ID"). */
static void host_name(const char *ident, char *out, size_t len) {
    const char *slash = strrchr(ident, '/');
    snprintf(out, len, "%s", strncmp(ident, "env:", 4) == 0 ? ident + 4
                             : slash ? slash + 1 : ident);
}

rc_status_t rc_strag_connect(rc_comm_t *comm, const void *blobs) {
    const rc_addr_t *addrs = blobs;
    rc_strag_t *s = &comm->strag;
    s->period_s = addrs[0].strag_ms / 1000.0;
    s->every = addrs[0].strag_every ? addrs[0].strag_every : 256;
    if (s->every > RC_STRAG_RING) s->every = RC_STRAG_RING;
    s->from_seq = comm->seq;
    if (s->period_s <= 0 || comm->size < 2) {
        s->period_s = 0;
        return RC_OK;
    }
    size_t n = (size_t)s->every * (comm->rank == 0 ? (size_t)comm->size : 1);
    s->buf = malloc(n * sizeof *s->buf);
    if (!s->buf) return rc_set_error(RC_ERR_NO_MEMORY, "comm_connect: out of memory");
    if (comm->rank == 0) {
        size_t p = (size_t)comm->size;
        s->med_sum = calloc(p, sizeof *s->med_sum);
        s->held = calloc(p, sizeof *s->held);
        s->nlast = calloc(p, sizeof *s->nlast);
        s->hosts = calloc(p, sizeof *s->hosts);
        if (!s->med_sum || !s->held || !s->nlast || !s->hosts)
            return rc_set_error(RC_ERR_NO_MEMORY, "comm_connect: out of memory");
        for (int r = 0; r < comm->size; r++)
            host_name(addrs[r].host, s->hosts[r], sizeof s->hosts[r]);
        s->last_line = rc_now();
    }
    return RC_OK;
}

void rc_strag_free(rc_comm_t *comm) {
    rc_strag_t *s = &comm->strag;
    free(s->t);
    free(s->seq);
    free(s->buf);
    free(s->med_sum);
    free(s->held);
    free(s->nlast);
    free(s->hosts);
    memset(s, 0, sizeof *s);
}

/* The environment's side of the address blob (comm_address). */
void rc_strag_address(rc_addr_t *a) {
    double sec = rc_env_double("RINGCOMM_STRAGGLER", 0);
    long long every = rc_env_ll("RINGCOMM_STRAGGLER_CALLS", 256);
    a->strag_ms = sec > 0 ? (uint32_t)(sec * 1000 < 1 ? 1 : sec * 1000 > 4e9 ? 4e9 : sec * 1000) : 0;
    a->strag_every = (uint16_t)(every < 1 ? 1 : every > RC_STRAG_RING ? RC_STRAG_RING : every);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Rank 0: fold one exchange (times[r * n + c]) into the window; print the
 * line when the window is old enough. */
static void strag_fold(rc_comm_t *comm, const double *times, uint32_t n) {
    rc_strag_t *s = &comm->strag;
    const int p = comm->size;
    double *late = malloc((size_t)p * n * sizeof *late);
    if (!late) return;
    uint32_t m = 0; /* calls every rank recorded */
    for (uint32_t c = 0; c < n; c++) {
        double lo = INFINITY, hi = -INFINITY, second = -INFINITY;
        int last = -1, ok = 1;
        for (int r = 0; r < p && ok; r++) {
            double t = times[(size_t)r * n + c];
            if (isnan(t)) ok = 0;
            if (t < lo) lo = t;
            if (t > hi) {
                second = hi;
                hi = t;
                last = r;
            } else if (t > second) {
                second = t;
            }
        }
        if (!ok) continue;
        for (int r = 0; r < p; r++) late[(size_t)r * n + m] = times[(size_t)r * n + c] - lo;
        s->nlast[last]++;
        s->held[last] += hi - second;
        m++;
    }
    if (m) {
        for (int r = 0; r < p; r++) {
            qsort(late + (size_t)r * n, m, sizeof *late, cmp_double);
            s->med_sum[r] += late[(size_t)r * n + m / 2];
        }
        s->nx++;
        s->ncalls += m;
    }
    free(late);
    double now = rc_now();
    if (now - s->last_line < s->period_s || !s->nx) return;
    int worst = 0;
    double next = 0;
    for (int r = 1; r < p; r++)
        if (s->med_sum[r] > s->med_sum[worst]) worst = r;
    for (int r = 0; r < p; r++)
        if (r != worst && s->med_sum[r] > next) next = s->med_sum[r];
    double med = s->med_sum[worst] / s->nx, other = next / s->nx;
    if (med >= 1e-3 && med >= 3 * other)
        rc_log(RC_WARN, "straggler: rank %d (host %s) arrived last in %u of %u calls in the "
               "last %.1f s, median lateness %.2f ms (the other ranks' at most %.2f ms); the "
               "others waited %.3f s for it (RINGCOMM_STRAGGLER)",
               worst, s->hosts[worst], s->nlast[worst], s->ncalls, now - s->last_line,
               med * 1e3, other * 1e3, s->held[worst]);
    memset(s->med_sum, 0, (size_t)p * sizeof *s->med_sum);
    memset(s->held, 0, (size_t)p * sizeof *s->held);
    memset(s->nlast, 0, (size_t)p * sizeof *s->nlast);
    s->nx = s->ncalls = 0;
    s->last_line = now;
}

rc_status_t rc_strag_tick(rc_comm_t *comm) {
    rc_strag_t *s = &comm->strag;
    if (s->period_s <= 0 || ++s->since < s->every) return RC_OK;
    s->since = 0;
    /* the calls since the last exchange, at most `every` (the newest) */
    uint32_t n = s->every, avail = comm->seq - s->from_seq;
    uint32_t first = avail > n ? comm->seq - n : s->from_seq;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t q = first + i;
        int have = i < avail && s->seq[q % RC_STRAG_RING] == q;
        s->buf[i] = have ? s->t[q % RC_STRAG_RING] - s->offset : NAN;
    }
    rc_task_t t = {RC_COLL_GATHER, s->buf, comm->rank == 0 ? s->buf : NULL, n, RC_FLOAT64,
                   RC_SUM, RC_ALGO_DIRECT, 0, 0, 1};
    /* in place on rank 0: its block 0 is its send buffer */
    rc_status_t st = rc_task_run(comm, &t, 0);
    s->from_seq = comm->seq;
    if (st == RC_OK && comm->rank == 0) strag_fold(comm, s->buf, n);
    return st;
}

/* ---- the C API for the report (stragglers.py) ---- */

uint32_t rc_comm_seq(const rc_comm_t *comm) { return comm ? comm->seq : 0; }

rc_status_t rc_comm_arrivals(const rc_comm_t *comm, uint32_t first, uint32_t n, double *out) {
    if (!comm || (n && !out))
        return rc_set_error(RC_ERR_INVALID_ARG, "comm_arrivals: NULL argument");
    if (!comm->strag.t) return rc_set_error(RC_ERR_INVALID_ARG, "comm_arrivals: no ring");
    for (uint32_t i = 0; i < n; i++) {
        uint32_t q = first + i;
        out[i] = comm->strag.seq[q % RC_STRAG_RING] == q && (int32_t)(comm->seq - q) > 0
                     ? comm->strag.t[q % RC_STRAG_RING] : NAN;
    }
    return RC_OK;
}

rc_status_t rc_comm_set_quiet(rc_comm_t *comm, int quiet) {
    if (!comm) return rc_set_error(RC_ERR_INVALID_ARG, "comm_set_quiet: comm is NULL");
    comm->strag.quiet = quiet != 0;
    return RC_OK;
}

rc_status_t rc_comm_set_clock_offset(rc_comm_t *comm, double offset_s) {
    if (!comm) return rc_set_error(RC_ERR_INVALID_ARG, "comm_set_clock_offset: comm is NULL");
    comm->strag.offset = offset_s;
    return RC_OK;
}

double rc_comm_straggler_period(const rc_comm_t *comm) {
    return comm ? comm->strag.period_s : 0;
}
