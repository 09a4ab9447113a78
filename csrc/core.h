/* core.h - internal structures and helpers shared by the C core.
 * Nothing here is visible to Python; the public API is include/ringcomm.h. */
#ifndef RC_CORE_H
#define RC_CORE_H

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
typedef enum { RC_COLL_NONE = 0, RC_COLL_ALLREDUCE = 1, RC_COLL_BARRIER = 2 } rc_coll_t;

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

const char *rc_coll_name(int coll);
/* "allreduce #3 (count=10, float32, sum, ring)" */
void rc_desc_format(const rc_desc_t *d, char *buf, size_t len);
int rc_desc_equal(const rc_desc_t *a, const rc_desc_t *b); /* ignores bytes */

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

struct rc_transport_ops;
struct rc_shm;

struct rc_comm {
    int rank, size;
    char token[64];
    double timeout_s;
    size_t chunk_bytes;            /* payload bytes per slot (a pipeline chunk) */
    uint32_t nslots;               /* slots per connection */
    int oversubscribed;            /* more ranks than CPUs this process may run on */
    /* Communicator-wide tuning: rank 0's environment decides, the
     * transport hands it to the others (so "auto" agrees everywhere). */
    int algo_env;                  /* RINGCOMM_ALGO as rc_algo_t (AUTO = unset) */
    uint64_t direct_max;           /* auto: direct up to this many bytes */
    uint64_t tree_max;             /* auto: tree up to this many bytes */
    uint64_t stream_min;           /* streaming stores for results from this many bytes */
    uint32_t seq;                  /* next collective sequence number */
    int connected;
    _Atomic int busy;              /* a second thread in a call is an error */
    rc_status_t broken;            /* sticky: once a peer failed, every call fails */
    char broken_msg[1200];
    rc_opctx_t cur;                /* the collective in progress */
    const struct rc_transport_ops *tp;
    struct rc_shm *shm;            /* shared-memory transport state */
    void *scratch;                 /* chunk_bytes of private scratch */
};

/* Mark the communicator failed: sets the last error, makes the failure
 * sticky, and tells the peers (through the transport) so that they fail too
 * instead of waiting for this rank. Returns st. */
rc_status_t rc_comm_fail(rc_comm_t *comm, rc_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* RC_CORE_H */
