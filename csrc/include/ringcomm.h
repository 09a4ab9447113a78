/* ringcomm.h - the one public C header of ringcomm.
 *
 * Collective communication for CPU processes.  Every function that can fail
 * returns rc_status_t; outputs go through pointers.  On failure the calling
 * thread's last-error text (rc_last_error()) names the call, the ranks and the
 * byte counts involved.
 */
#ifndef RINGCOMM_H
#define RINGCOMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RC_VERSION_MAJOR 0
#define RC_VERSION_MINOR 1
#define RC_VERSION_PATCH 0

typedef enum {
    RC_OK = 0,
    RC_INPROGRESS = 1,
    RC_ERR_INVALID_ARG = -1,
    RC_ERR_NOT_SUPPORTED = -2,
    RC_ERR_NO_MEMORY = -3,
    RC_ERR_IO = -4,
    RC_ERR_TIMEOUT = -5,
    RC_ERR_PEER_LOST = -6,
    RC_ERR_MISMATCH = -7,
    RC_ERR_INTERNAL = -8
} rc_status_t;

typedef enum {
    RC_FLOAT32 = 0,
    RC_FLOAT64 = 1,
    RC_FLOAT16 = 2,
    RC_BFLOAT16 = 3,
    RC_INT8 = 4,
    RC_UINT8 = 5,
    RC_INT32 = 6,
    RC_INT64 = 7,
    RC_BOOL = 8,            /* copy-only collectives */
    RC_NUM_DTYPES
} rc_dtype_t;

typedef enum {
    RC_SUM = 0,
    RC_PROD = 1,
    RC_MIN = 2,
    RC_MAX = 3,
    RC_AVG = 4,             /* floating-point types only */
    RC_BAND = 5,            /* integer types only */
    RC_BOR = 6,
    RC_BXOR = 7,
    RC_NUM_OPS
} rc_op_t;

/* Algorithm ids.  RC_ALGO_AUTO picks by message size and rank count. */
typedef enum {
    RC_ALGO_AUTO = 0,
    RC_ALGO_RING = 1,
    RC_ALGO_TREE = 2,       /* double binary tree */
    RC_ALGO_DIRECT = 3,
    RC_ALGO_BINOMIAL = 4,   /* binomial tree reduce + broadcast */
    RC_NUM_ALGOS
} rc_algo_t;

typedef struct rc_comm rc_comm_t;

/* ---- status and introspection ---- */
const char *rc_status_string(rc_status_t s);   /* "RC_ERR_MISMATCH", ... */
const char *rc_last_error(void);                /* thread-local text of the last failure */
size_t rc_dtype_size(rc_dtype_t dt);            /* 0 for an unknown dtype */
const char *rc_dtype_name(rc_dtype_t dt);
const char *rc_op_name(rc_op_t op);
const char *rc_algo_name(rc_algo_t a);
const char *rc_reduce_isa(void);                /* "avx2" or "generic": the kernel set in use */
/* 1 when op is defined for dt: sum/prod/min/max for every numeric type, avg
 * for floating types only, band/bor/bxor for integer types only. */
int rc_op_valid_for(rc_dtype_t dt, rc_op_t op);

/* ---- local reduction (the kernels; also used by tests) ----
 * dst[i] = a[i] op b[i] for i < n.  dst may be a or b (in place), otherwise
 * no overlap.  RC_AVG reduces as RC_SUM; divide by the rank count with
 * rc_scale_local.  float16/bfloat16 compute each operation in float32 and
 * round once (round to nearest even).  min/max propagate NaN (as numpy's
 * minimum/maximum and torch do). */
rc_status_t rc_reduce_local(void *dst, const void *a, const void *b, size_t n,
                            rc_dtype_t dt, rc_op_t op);
/* buf[i] = buf[i] / divisor (floating types only), computed in float32 for
 * float16/bfloat16. */
rc_status_t rc_scale_local(void *buf, size_t n, rc_dtype_t dt, double divisor);

/* ---- communicator lifecycle (two-phase connect, as gloo does) ----
 * 1. rc_comm_create: every rank, with the same token (random, shared by the
 *    bootstrap).  Rank 0 creates the shared-memory segment.
 * 2. rc_comm_address: this rank's address blob (RC_ADDRESS_BYTES bytes).
 * 3. the bootstrap all-gathers the blobs (rank order).
 * 4. rc_comm_connect: with all blobs concatenated.
 * timeout_s <= 0 means the default (RINGCOMM_TIMEOUT or 300 s). */
#define RC_ADDRESS_BYTES 256
rc_status_t rc_comm_create(int rank, int size, const char *token,
                           double timeout_s, rc_comm_t **out);
rc_status_t rc_comm_address(rc_comm_t *comm, void *blob, size_t blob_bytes);
rc_status_t rc_comm_connect(rc_comm_t *comm, const void *blobs, size_t blob_bytes);
rc_status_t rc_comm_destroy(rc_comm_t *comm);   /* releases everything; NULL is fine */
int rc_comm_rank(const rc_comm_t *comm);
int rc_comm_size(const rc_comm_t *comm);
/* The chunk (slot) size in bytes and slot count this communicator uses. */
size_t rc_comm_chunk_bytes(const rc_comm_t *comm);

/* ---- collectives ----
 * count is in elements.  recvbuf == sendbuf means in place. */
rc_status_t rc_allreduce(rc_comm_t *comm, const void *sendbuf, void *recvbuf,
                         uint64_t count, rc_dtype_t dt, rc_op_t op, rc_algo_t algo);
rc_status_t rc_barrier(rc_comm_t *comm);

/* The algorithm "auto" would run for this call (for debugging and tests). */
rc_algo_t rc_allreduce_select(const rc_comm_t *comm, uint64_t count, rc_dtype_t dt);

#ifdef __cplusplus
}
#endif
#endif /* RINGCOMM_H */
