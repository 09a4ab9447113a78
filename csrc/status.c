/* status.c - status names, the thread-local last-error text, debug logging,
 * environment helpers and the message descriptor helpers. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

static _Thread_local char rc_err_text[1024];

const char *rc_status_string(rc_status_t s) {
    switch (s) {
    case RC_OK: return "RC_OK";
    case RC_INPROGRESS: return "RC_INPROGRESS";
    case RC_ERR_INVALID_ARG: return "RC_ERR_INVALID_ARG";
    case RC_ERR_NOT_SUPPORTED: return "RC_ERR_NOT_SUPPORTED";
    case RC_ERR_NO_MEMORY: return "RC_ERR_NO_MEMORY";
    case RC_ERR_IO: return "RC_ERR_IO";
    case RC_ERR_TIMEOUT: return "RC_ERR_TIMEOUT";
    case RC_ERR_PEER_LOST: return "RC_ERR_PEER_LOST";
    case RC_ERR_MISMATCH: return "RC_ERR_MISMATCH";
    case RC_ERR_INTERNAL: return "RC_ERR_INTERNAL";
    }
    return "RC_ERR_UNKNOWN";
}

const char *rc_last_error(void) { return rc_err_text; }

rc_status_t rc_set_error(rc_status_t st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rc_err_text, sizeof rc_err_text, fmt, ap);
    va_end(ap);
    RC_LOG(RC_WARN, "%s: %s", rc_status_string(st), rc_err_text);
    return st;
}

static int rc_debug_cached = -1;

int rc_debug_level(void) {
    int lvl = __atomic_load_n(&rc_debug_cached, __ATOMIC_RELAXED);
    if (RC_LIKELY(lvl >= 0)) return lvl;
    const char *v = getenv("RINGCOMM_DEBUG");
    lvl = 0;
    if (v) {
        if (!strcasecmp(v, "WARN")) lvl = RC_WARN;
        else if (!strcasecmp(v, "INFO")) lvl = RC_INFO;
        else if (!strcasecmp(v, "TRACE")) lvl = RC_TRACE;
        else lvl = atoi(v) > 0 ? atoi(v) : 0;
    }
    __atomic_store_n(&rc_debug_cached, lvl, __ATOMIC_RELAXED);
    return lvl;
}

void rc_log(int level, const char *fmt, ...) {
    static const char *names[] = {"", "WARN", "INFO", "TRACE"};
    char line[1400];
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(line, sizeof line, "ringcomm %d %s ", (int)getpid(),
                     names[level > 3 ? 3 : level]);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}

double rc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

long long rc_env_ll(const char *name, long long dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (*end == 'k' || *end == 'K') x <<= 10;
    else if (*end == 'm' || *end == 'M') x <<= 20;
    else if (*end == 'g' || *end == 'G') x <<= 30;
    return x;
}

double rc_env_double(const char *name, double dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    return atof(v);
}

const char *rc_algo_name(rc_algo_t a) {
    switch (a) {
    case RC_ALGO_AUTO: return "auto";
    case RC_ALGO_RING: return "ring";
    case RC_ALGO_TREE: return "tree";
    case RC_ALGO_DIRECT: return "direct";
    case RC_ALGO_BINOMIAL: return "binomial";
    case RC_ALGO_CHAIN: return "chain";
    case RC_ALGO_SCATTER_ALLGATHER: return "scatter_allgather";
    case RC_ALGO_RS_GATHER: return "rs_gather";
    case RC_ALGO_PAIRWISE: return "pairwise";
    case RC_ALGO_CMA: return "cma";
    case RC_ALGO_HIER: return "hier";
    default: return "?";
    }
}

const char *rc_coll_name(int coll) {
    switch (coll) {
    case RC_COLL_ALLREDUCE: return "allreduce";
    case RC_COLL_BARRIER: return "barrier";
    case RC_COLL_BROADCAST: return "broadcast";
    case RC_COLL_REDUCE: return "reduce";
    case RC_COLL_ALLGATHER: return "allgather";
    case RC_COLL_REDUCE_SCATTER: return "reduce_scatter";
    case RC_COLL_ALLTOALL: return "alltoall";
    case RC_COLL_GATHER: return "gather";
    case RC_COLL_SCATTER: return "scatter";
    case RC_COLL_SEND: return "send";
    case RC_COLL_RECV: return "recv";
    default: return "none";
    }
}

void rc_desc_format(const rc_desc_t *d, char *buf, size_t len) {
    if (d->coll == RC_COLL_BARRIER) {
        snprintf(buf, len, "barrier #%u", d->seq);
        return;
    }
    int reduces = d->coll == RC_COLL_ALLREDUCE || d->coll == RC_COLL_REDUCE ||
                  d->coll == RC_COLL_REDUCE_SCATTER;
    char root[24] = "";
    if (d->root >= 0) snprintf(root, sizeof root, ", root=%d", (int)d->root);
    snprintf(buf, len, "%s #%u (count=%llu, %s%s%s%s, %s)", rc_coll_name(d->coll), d->seq,
             (unsigned long long)d->count, rc_dtype_name((rc_dtype_t)d->dtype),
             reduces ? ", " : "", reduces ? rc_op_name((rc_op_t)d->op) : "", root,
             rc_algo_name((rc_algo_t)d->algo));
}

int rc_desc_equal(const rc_desc_t *a, const rc_desc_t *b) {
    return a->seq == b->seq && a->coll == b->coll && a->dtype == b->dtype && a->op == b->op &&
           a->algo == b->algo && a->count == b->count && a->root == b->root;
}
