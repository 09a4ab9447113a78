/* trace.c - RINGCOMM_TRACE=file.json: a Chrome / Perfetto trace ("Trace
 * Event Format", JSON array) of every operation of this process.
 *
 * One file per process: "%r" in the name becomes the rank of the first
 * communicator (normally the world), "%p" the pid; without either,
 * ".rank<R>" goes before the extension (trace.json -> trace.rank0.json).
 * Each operation is a complete event ("ph":"X") on the track of its
 * communicator: name = collective, args = sequence number, count, dtype,
 * op, root or peer, bytes, algorithm, chunk bytes, status.  Operations that
 * waited in the queue (asynchronous ones) get a "queued" event before them,
 * so the trace shows both phases.  Timestamps are CLOCK_MONOTONIC
 * microseconds: the files of ranks on one host line up when loaded together
 * (python -m ringcomm.trace merges them).  Events are written as they
 * complete (line-buffered by the C library, flushed at exit), so memory does
 * not grow with the run. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

static pthread_mutex_t trace_mu = PTHREAD_MUTEX_INITIALIZER;
static FILE *trace_file;
static int trace_state; /* 0 not decided, 1 on, -1 off */
static int trace_next_comm;

static void trace_close(void) {
    pthread_mutex_lock(&trace_mu);
    if (trace_file) {
        fprintf(trace_file, "{\"name\":\"trace end\",\"ph\":\"i\",\"s\":\"p\",\"pid\":%d,"
                "\"tid\":0,\"ts\":%.3f}\n]\n", (int)getpid(), rc_now() * 1e6);
        fclose(trace_file);
        trace_file = NULL;
    }
    pthread_mutex_unlock(&trace_mu);
}

/* Under trace_mu.  The file name from the pattern (see the head comment). */
static void trace_open(int rank) {
    const char *pat = getenv("RINGCOMM_TRACE");
    trace_state = -1;
    if (!pat || !*pat) return;
    char name[1024];
    size_t n = 0;
    int subst = 0;
    for (const char *c = pat; *c && n + 24 < sizeof name; c++) {
        if (c[0] == '%' && (c[1] == 'r' || c[1] == 'p')) {
            n += (size_t)snprintf(name + n, sizeof name - n, "%d", c[1] == 'r' ? rank : (int)getpid());
            c++;
            subst = 1;
        } else {
            name[n++] = *c;
        }
    }
    name[n] = 0;
    if (!subst) {
        char *dot = strrchr(name, '.'), *slash = strrchr(name, '/');
        char ext[64] = "";
        if (dot && (!slash || dot > slash) && strlen(dot) < sizeof ext) {
            snprintf(ext, sizeof ext, "%s", dot);
            *dot = 0;
        }
        size_t len = strlen(name);
        snprintf(name + len, sizeof name - len, ".rank%d%s", rank, ext);
    }
    trace_file = fopen(name, "w");
    if (!trace_file) {
        rc_log(RC_WARN, "RINGCOMM_TRACE: cannot write %s; tracing is off", name);
        return;
    }
    setvbuf(trace_file, NULL, _IOLBF, 0);
    fprintf(trace_file, "[\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,"
            "\"args\":{\"name\":\"ringcomm rank %d (pid %d)\"}},\n",
            (int)getpid(), rank, (int)getpid());
    trace_state = 1;
    atexit(trace_close);
    RC_LOG(RC_INFO, "tracing every operation to %s", name);
}

/* A communicator starts: its track id (0 when tracing is off). */
int rc_trace_comm(rc_comm_t *comm) {
    pthread_mutex_lock(&trace_mu);
    if (trace_state == 0) trace_open(comm->rank);
    int id = 0;
    if (trace_state == 1) {
        id = ++trace_next_comm;
        fprintf(trace_file, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,"
                "\"args\":{\"name\":\"communicator %d: rank %d of %d\"}},\n",
                (int)getpid(), id, id, comm->rank, comm->size);
    }
    pthread_mutex_unlock(&trace_mu);
    return id;
}

/* One finished operation (t_post: when it was posted; t0..t1: its run). */
void rc_trace_op(rc_comm_t *comm, const rc_task_t *t, uint32_t seq, double t_post, double t0,
                 double t1, rc_status_t st) {
    if (!comm->trace_id) return;
    int pid = (int)getpid();
    uint64_t bytes = t->count * rc_dtype_size(t->dtype);
    char peer[48] = "";
    if (t->coll == RC_COLL_SEND || t->coll == RC_COLL_RECV)
        snprintf(peer, sizeof peer, ",\"peer\":%d,\"tag\":%d", t->root, t->tag);
    else if (t->root >= 0)
        snprintf(peer, sizeof peer, ",\"root\":%d", t->root);
    pthread_mutex_lock(&trace_mu);
    if (trace_file) {
        if (t_post > 0 && t0 - t_post > 1e-6)
            fprintf(trace_file, "{\"name\":\"queued\",\"cat\":\"queue\",\"ph\":\"X\",\"pid\":%d,"
                    "\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f},\n",
                    pid, comm->trace_id, t_post * 1e6, (t0 - t_post) * 1e6);
        fprintf(trace_file, "{\"name\":\"%s\",\"cat\":\"op\",\"ph\":\"X\",\"pid\":%d,\"tid\":%d,"
                "\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"seq\":%u,\"count\":%llu,\"dtype\":\"%s\","
                "\"op\":\"%s\",\"bytes\":%llu,\"algorithm\":\"%s\",\"chunk_bytes\":%zu%s,"
                "\"status\":\"%s\"}},\n",
                rc_coll_name(t->coll), pid, comm->trace_id, t0 * 1e6, (t1 - t0) * 1e6, seq,
                (unsigned long long)t->count, rc_dtype_name(t->dtype), rc_op_name(t->op),
                (unsigned long long)bytes, rc_algo_name(t->algo), comm->chunk_bytes, peer,
                rc_status_string(st));
    }
    pthread_mutex_unlock(&trace_mu);
}
