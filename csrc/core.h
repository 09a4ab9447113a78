/* core.h - internal structures and helpers shared by the C core.
 * Nothing here is visible to Python; the public API is include/ringcomm.h. */
#ifndef RC_CORE_H
#define RC_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ringcomm.h"
#include "reduce.h"

#define RC_LIKELY(x) __builtin_expect(!!(x), 1)
#define RC_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define RC_CACHELINE 64
#define RC_ALIGN_UP(x, a) (((x) + ((a) - 1)) / (a) * (a))

/* Return the status of `call` from the enclosing function when it fails. */
#define RC_CHECK(call)                                                     \
    do {                                                                   \
        rc_status_t rc_check_st_ = (call);                                 \
        if (RC_UNLIKELY(rc_check_st_ != RC_OK)) return rc_check_st_;       \
    } while (0)
/* Store the status in `st` and jump to `label` when it fails. */
#define RC_CHECK_GOTO(call, st, label)                                     \
    do {                                                                   \
        (st) = (call);                                                     \
        if (RC_UNLIKELY((st) != RC_OK)) goto label;                        \
    } while (0)

/* ---- errors and logging (status.c) ---- */
/* Set the calling thread's last-error text; returns `st` for tail calls. */
rc_status_t rc_set_error(rc_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* RINGCOMM_DEBUG=WARN|INFO|TRACE: 1, 2, 3 (0 = off). */
int rc_debug_level(void);
void rc_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define RC_WARN 1
#define RC_INFO 2
#define RC_TRACE 3
#define RC_LOG(level, ...)                                                 \
    do {                                                                   \
        if (RC_UNLIKELY(rc_debug_level() >= (level))) rc_log(level, __VA_ARGS__); \
    } while (0)
double rc_now(void);                     /* CLOCK_MONOTONIC seconds */
/* Integer / size environment variables with a default. */
long long rc_env_ll(const char *name, long long dflt);
double rc_env_double(const char *name, double dflt);

/* ---- the descriptor every message carries ----
 * Peers compare it with their own: a different collective, count, dtype, op,
 * root or algorithm in the same call is a mismatch, never silent corruption. */
typedef struct {
    uint32_t seq;      /* collective sequence number on this communicator */
    uint8_t coll;      /* rc_coll_t */
    uint8_t dtype;
    uint8_t op;
    uint8_t algo;
    uint64_t count;
    int32_t root;
    uint32_t bytes;    /* payload bytes of this message (checked separately) */
} rc_desc_t;           /* 24 bytes */

/* "allreduce #3 (count=10, float32, sum, ring)" */
void rc_desc_format(const rc_desc_t *d, char *buf, size_t len);
int rc_desc_equal(const rc_desc_t *a, const rc_desc_t *b); /* ignores bytes */

/* ---- one operation, as posted (coll.c checks it, then runs or queues it) ---- */
typedef struct rc_task {
    rc_coll_t coll;
    const void *sendbuf;
    void *recvbuf;
    uint64_t count;        /* elements (one rank's block for allgather, reduce_scatter, alltoall, gather, scatter) */
    rc_dtype_t dtype;
    rc_op_t op;
    rc_algo_t algo;        /* resolved before the run: never RC_ALGO_AUTO */
    int root;              /* rooted collectives; the peer of send/recv */
    int tag;               /* send/recv */
    int quiet;             /* the straggler report's own call: arrival not recorded (post) */
} rc_task_t;

/* ---- the operation in progress ---- */
typedef struct {
    rc_desc_t desc;
    rc_reduce_fn reduce;   /* NULL for copy-only collectives */
    rc_scale_fn scale;     /* non-NULL only for RC_AVG */
    size_t esize;
    int stream;            /* large call: slot and result writes bypass the cache */
} rc_opctx_t;

/* copy.c: memcpy with non-temporal stores (see there). */
void rc_copy_stream(void *dst, const void *src, size_t bytes);

/* ---- requests (progress.c) ---- */
enum { RC_REQ_QUEUED = 0, RC_REQ_ACTIVE = 1, RC_REQ_DONE = 2 };

struct rc_request {
    rc_task_t task;
    rc_comm_t *comm;
    _Atomic uint32_t state;        /* RC_REQ_* */
    rc_status_t status;            /* valid once DONE */
    int source;                    /* receives: the sender */
    int internal;                  /* on a blocking caller's stack: never freed */
    struct rc_request *next;       /* operation queue, p2p lists */
    double t_post, t_start;        /* trace: when posted, when it started running */
    uint32_t seq;                  /* trace: collective sequence number */
    /* point-to-point progress (p2p.c) */
    uint64_t bytes;                /* message bytes */
    uint64_t off;                  /* bytes moved so far */
    uint64_t chunks;               /* sends: chunks posted so far */
    int rts;                       /* sends: by address (single copy), awaiting the read */
    uint32_t msg;                  /* message number on its (sender, receiver) stream */
    char err[600];                 /* the error text, for the waiting thread */
};

/* "auto" thresholds in bytes (tune.c): defaults < tune file < environment,
 * rank 0's values for every rank (the transport copies them). */
enum {
    RC_TUNE_AR_DIRECT_MAX,   /* all-reduce: direct up to */
    RC_TUNE_AR_BINOMIAL_MAX, /* all-reduce: binomial up to */
    RC_TUNE_AR_TREE_MAX,     /* all-reduce: double binary tree up to */
    RC_TUNE_AR_CMA_MIN,      /* all-reduce: cma from (0: never) */
    RC_TUNE_BC_BINOMIAL_MAX, /* broadcast: binomial up to */
    RC_TUNE_BC_SAG_MIN,      /* broadcast: scatter + all-gather from (0: never) */
    RC_TUNE_RD_BINOMIAL_MAX, /* reduce: binomial up to */
    RC_TUNE_AG_DIRECT_MAX,   /* all-gather (p blocks): direct up to */
    RC_TUNE_AG_CMA_MIN,      /* all-gather (p blocks): cma from (0: never) */
    RC_TUNE_RS_DIRECT_MAX,   /* reduce-scatter (p blocks): direct up to */
    RC_TUNE_A2A_CMA_MIN,     /* all-to-all (p blocks): cma from (0: never) */
    RC_NUM_TUNE
};
enum { RC_TUNE_FROM_DEFAULT, RC_TUNE_FROM_FILE, RC_TUNE_FROM_ENV };
typedef struct {
    uint64_t v[RC_NUM_TUNE];
    uint8_t from[RC_NUM_TUNE];     /* RC_TUNE_FROM_* */
    char source[240];              /* "file PATH" or "built-in defaults (...)" */
} rc_tune_t;

/* straggler.c: every collective call's arrival time on this rank, in a
 * ring of the last RC_STRAG_RING calls (bounded memory), and the periodic
 * report of RINGCOMM_STRAGGLER (rank 0's setting). */
#define RC_STRAG_RING 4096
typedef struct {
    double *t;             /* [RC_STRAG_RING] arrival (rc_now), NaN: a quiet call */
    uint32_t *seq;         /* [RC_STRAG_RING] the call's sequence number */
    int quiet;             /* calls posted now are not recorded (the report's own) */
    double offset;         /* this rank's clock minus rank 0's (stragglers.py, Cristian) */
    double period_s;       /* RINGCOMM_STRAGGLER: print at most every this many s (0: off) */
    uint32_t every;        /* ... after an exchange every this many calls */
    uint32_t since;        /* calls (not quiet) since the last exchange */
    uint32_t from_seq;     /* first call the next exchange covers */
    double *buf;           /* exchange: [every] here, [size * every] on rank 0 */
    /* rank 0: the window since the last line */
    double last_line, *med_sum, *held;
    uint32_t *nlast, nx, ncalls;
    char (*hosts)[64];     /* rank 0: each rank's host name, for the line */
} rc_strag_t;

struct rc_transport_ops;
struct rc_shm;
struct rc_tcp;
struct rc_p2p;

struct rc_comm {
    int rank, size;
    char token[64];
    double timeout_s;
    size_t chunk_bytes;            /* payload bytes per slot (a pipeline chunk) */
    uint32_t nslots;               /* slots per connection */
    int oversubscribed;            /* some machine runs more of our ranks than the CPUs they may
                                    * use (comm_connect; at create: our size against our mask) */
    int chunk_given;               /* chunk_bytes set by RINGCOMM_CHUNK_BYTES or a transport */
    /* Communicator-wide tuning: rank 0's environment decides, the
     * transport hands it to the others (so "auto" agrees everywhere). */
    int algo_env;                  /* RINGCOMM_ALGO as rc_algo_t (AUTO = unset) */
    rc_tune_t tune;                /* auto's thresholds (tune.c) */
    uint64_t stream_min;           /* streaming stores for results from this many bytes */
    int check_nan;                 /* RINGCOMM_CHECK_NAN: refuse NaN/inf inputs */
    uint64_t cma_min;              /* p2p: single copy from this many bytes (0: never) */
    int cma_all;                   /* every rank can read every rank's memory (transport) */
    int trace_id;                  /* RINGCOMM_TRACE track of this communicator (0: off) */
    uint32_t seq;                  /* next collective sequence number */
    int connected;
    _Atomic int busy;              /* a second thread in a call is an error */
    rc_status_t broken;            /* sticky: once a peer failed, every call fails */
    char broken_msg[1200];
    rc_opctx_t cur;                /* the collective in progress */
    const struct rc_transport_ops *tp; /* what algorithms call (one transport, or per peer) */
    const struct rc_transport_ops *tps[4]; /* the transports created in phase 1 */
    int ntps;
    const struct rc_transport_ops **peer_tp; /* per-peer choice (NULL: comm->tp for all) */
    int tp_forced;                 /* RINGCOMM_TRANSPORT named the one transport */
    char tp_allow[64];             /* RINGCOMM_TRANSPORT=shm,tcp: the transports allowed (mux.c) */
    int net_tried;                 /* the network transport was chosen (mux.c, at address) */
    char net_err[240];             /* why no network transport could be created (mux.c) */
    /* Host layout (mux.c, from the address blobs' host identities): hosts
     * in order of their lowest rank, ranks in order within a host. */
    int nhosts;
    int local_size;                /* ranks per host when every host has as many, else 0 */
    int host_idx, local_idx;       /* this rank's host and index on it */
    int *host_ranks;               /* [host * local_size + local index] = rank (uniform only) */
    /* Topology (topo.c, at connect): every rank's (host, package, numa, l3)
     * ids, [rank * 4 + level], and the order rings and trees follow:
     * order[position] = rank, pos[rank] = position; both NULL when the
     * order is the rank order (one domain).  Use rc_rank_at / rc_pos_of. */
    int *topo_ids;
    int *order, *pos;
    int hier_domain;               /* allreduce_hier's "hosts": 0 hosts, 2 NUMA nodes, 3 L3 groups */
    /* allreduce_hier's groups (topo.c): hosts, or with RINGCOMM_HIER_DOMAIN
     * NUMA nodes / L3 groups, in order of their first position, members in
     * position order: grp_ranks[group * grp_size + member] = rank (uniform
     * groups only: grp_size 0 otherwise). */
    int grp_n, grp_size, grp_idx, grp_lidx;
    int *grp_ranks;
    struct rc_shm *shm;            /* shared-memory transport state */
    struct rc_tcp *tcp;            /* tcp transport state */
    struct rc_mpi *mpi;            /* MPI transport state (mpi.c) */
    int has_mpi;                   /* rc_comm_set_mpi gave the user's MPI communicator */
    long long mpi_fhandle;         /* ... as a Fortran handle (MPI_Comm_c2f, mpi4py's py2f) */
    void *scratch;                 /* chunk_bytes of private scratch */

    /* progress.c: posted operations run in post order, by one executor at a
     * time (the caller's thread for a blocking call on an idle
     * communicator, else the progress thread). */
    pthread_mutex_t qmu;
    struct rc_request *qhead, *qtail; /* posted, not yet started */
    int executor;                  /* an executor is running (under qmu) */
    int thread_started;
    pthread_t thread;
    _Atomic int stop;              /* closing: waits give up, the queue is failed */
    _Atomic uint32_t done_word;    /* bumped at every completion (futex) */
    _Atomic uint32_t done_waiters;
    _Atomic uint32_t kick_word;    /* bumped when there is work for the thread (futex) */
    _Atomic uint32_t kick_waiters;
    /* p2p.c: send/recv matching and streaming (executor only) */
    rc_strag_t strag;              /* straggler.c */
    struct rc_p2p *p2p;
    int p2p_active;                /* started point-to-point operations not yet done */
    double p2p_moved_at;           /* when point-to-point traffic last moved (deadline) */
    int p2p_warned;                /* the half-timeout warning was printed since then */
};

/* The rank at ring position `v` (any integer: taken mod size) and the
 * position of `rank` in the communicator's topology order (topo.c). */
static inline int rc_rank_at(const rc_comm_t *c, int v) {
    const int p = c->size, i = ((v % p) + p) % p;
    return c->order ? c->order[i] : i;
}
static inline int rc_pos_of(const rc_comm_t *c, int rank) {
    return c->pos ? c->pos[rank] : rank;
}

/* progress.c */
/* Run (blocking, req == NULL) or post (req != NULL) a checked task.  A
 * blocking receive reports its sender in *source (may be NULL). */
rc_status_t rc_submit(rc_comm_t *comm, const rc_task_t *t, rc_request_t **req, int *source);
/* Complete a request: status, error text, wake waiters.  Executor only. */
void rc_req_complete(rc_comm_t *comm, rc_request_t *r, rc_status_t st);
/* Stop the progress thread and fail what is queued (comm_destroy). */
void rc_progress_shutdown(rc_comm_t *comm);
/* trace.c: RINGCOMM_TRACE */
int rc_trace_comm(rc_comm_t *comm);
void rc_trace_op(rc_comm_t *comm, const rc_task_t *t, uint32_t seq, double t_post, double t0,
                 double t1, rc_status_t st);
/* tune.c: "auto" thresholds at creation (defaults, tune file, environment) */
void rc_tune_init(rc_comm_t *comm);
/* Adopt rank 0's thresholds; those it took from the built-in defaults are
 * re-derived for comm->oversubscribed as decided at connect. */
void rc_tune_adopt(rc_comm_t *comm, const rc_tune_t *rank0);
/* coll.c: run one collective task on the executor. */
/* t_post: when the task was posted (0: not queued) */
rc_status_t rc_task_run(rc_comm_t *comm, const rc_task_t *t, double t_post);

/* straggler.c */
rc_status_t rc_strag_init(rc_comm_t *comm);   /* comm_create: the ring */
/* comm_connect: rank 0's RINGCOMM_STRAGGLER, the host names (addrs). */
rc_status_t rc_strag_connect(rc_comm_t *comm, const void *addrs);
void rc_strag_free(rc_comm_t *comm);
static inline void rc_strag_record(rc_comm_t *comm, uint32_t seq, double t) {
    comm->strag.t[seq % RC_STRAG_RING] = t;
    comm->strag.seq[seq % RC_STRAG_RING] = seq;
}
/* After a call (not quiet) that succeeded: every `every` calls, the
 * periodic exchange (a quiet gather to rank 0), and rank 0's line. */
rc_status_t rc_strag_tick(rc_comm_t *comm);

/* Mark the communicator failed: sets the last error, makes the failure
 * sticky, and tells the peers (through the transport) so that they fail too
 * instead of waiting for this rank. Returns st. */
rc_status_t rc_comm_fail(rc_comm_t *comm, rc_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A peer is in this collective (same sequence number) but called it
 * differently (`theirs`): rc_comm_fail with RC_ERR_MISMATCH and the text
 * "collective mismatch: rank R called X but rank Q called Y". */
rc_status_t rc_comm_mismatch(rc_comm_t *comm, int other_rank, const rc_desc_t *theirs);
/* The awaited peer is in a later collective (rc_comm_peer_is_ahead): the
 * mismatch failure that says so, once it has lasted `grace` seconds
 * (*since: when first seen, 0 before; RC_OK until then) (comm.c). */
int rc_comm_peer_is_ahead(const rc_comm_t *comm, const rc_desc_t *later);
rc_status_t rc_comm_peer_left(rc_comm_t *comm, int peer, const char *what, const rc_desc_t *later,
                              double *since, double grace);

#endif /* RC_CORE_H */
