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
    RC_ALGO_CHAIN = 5,      /* pipelined chain (broadcast, reduce) */
    RC_ALGO_SCATTER_ALLGATHER = 6, /* broadcast: scatter + ring all-gather */
    RC_ALGO_RS_GATHER = 7,  /* reduce: ring reduce-scatter + gather to the root */
    RC_ALGO_PAIRWISE = 8,   /* all-to-all: pairwise exchange */
    RC_ALGO_CMA = 9,        /* all-reduce: direct reads of the peers' buffers */
    RC_ALGO_HIER = 10,      /* all-reduce: inside each host, across hosts, inside again */
    RC_NUM_ALGOS
} rc_algo_t;

/* Collectives (also the kind of a request). */
typedef enum {
    RC_COLL_NONE = 0,
    RC_COLL_ALLREDUCE = 1,
    RC_COLL_BARRIER = 2,
    RC_COLL_BROADCAST = 3,
    RC_COLL_REDUCE = 4,
    RC_COLL_ALLGATHER = 5,
    RC_COLL_REDUCE_SCATTER = 6,
    RC_COLL_ALLTOALL = 7,
    RC_COLL_GATHER = 8,
    RC_COLL_SCATTER = 9,
    RC_COLL_SEND = 10,      /* point-to-point */
    RC_COLL_RECV = 11,
    RC_NUM_COLLS
} rc_coll_t;

#define RC_ANY_SOURCE (-1)  /* rc_recv: match a message from any rank */

typedef struct rc_comm rc_comm_t;
/* An operation posted with a non-NULL `req` argument (asynchronous). */
typedef struct rc_request rc_request_t;

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
#define RC_ADDRESS_BYTES 1024
rc_status_t rc_comm_create(int rank, int size, const char *token,
                           double timeout_s, rc_comm_t **out);
rc_status_t rc_comm_address(rc_comm_t *comm, void *blob, size_t blob_bytes);
rc_status_t rc_comm_connect(rc_comm_t *comm, const void *blobs, size_t blob_bytes);
rc_status_t rc_comm_destroy(rc_comm_t *comm);   /* releases everything; NULL is fine */
int rc_comm_rank(const rc_comm_t *comm);
/* RC_OK while the communicator works; else the sticky failure (status) and
 * its text in *msg (may be NULL).  For shrink (src/ringcomm/shrink.py). */
rc_status_t rc_comm_failure(const rc_comm_t *comm, const char **msg);
int rc_comm_size(const rc_comm_t *comm);
/* The chunk (slot) size in bytes and slot count this communicator uses. */
size_t rc_comm_chunk_bytes(const rc_comm_t *comm);
/* "auto" thresholds (bytes): the i-th one's name, value and origin
 * ("default", "file" or "env"); RC_ERR_INVALID_ARG past the last.  Any
 * pointer may be NULL.  Rank 0's values, once connected. */
rc_status_t rc_comm_threshold(const rc_comm_t *comm, int i, const char **name, uint64_t *value,
                              const char **origin);
/* The topology order rings and trees follow (docs/topology.md), once
 * connected: order[i] (size ints) = the rank at ring position i; ids
 * (size * 4 ints) = every rank's host index, package, NUMA node and L3
 * group (-1: none or several).  Either pointer may be NULL. */
rc_status_t rc_comm_topology(const rc_comm_t *comm, int *order, int *ids);
/* Where rank 0's thresholds came from: "file PATH" or "built-in defaults (...)". */
const char *rc_comm_tune_source(const rc_comm_t *comm);

/* ---- stragglers (straggler.c; the report is src/ringcomm/stragglers.py) ----
 * Every collective call records this rank's arrival time (CLOCK_MONOTONIC
 * seconds, when the call starts on this rank) under its sequence number,
 * the same on every rank; the last 4096 calls are kept.
 * rc_comm_seq: the sequence number of the next collective call.
 * rc_comm_arrivals: out[i] = arrival of call first + i, NaN when it is not
 * (or no longer) recorded or was quiet.  rc_comm_set_quiet: collectives
 * posted while set are not recorded (the report's own calls) and do not
 * count for RINGCOMM_STRAGGLER.  rc_comm_set_clock_offset: this rank's
 * clock minus rank 0's, added to its times by the RINGCOMM_STRAGGLER
 * exchange.  rc_comm_straggler_period: RINGCOMM_STRAGGLER as rank 0 set it
 * (0: off). */
uint32_t rc_comm_seq(const rc_comm_t *comm);
rc_status_t rc_comm_arrivals(const rc_comm_t *comm, uint32_t first, uint32_t n, double *out);
rc_status_t rc_comm_set_quiet(rc_comm_t *comm, int quiet);
rc_status_t rc_comm_set_clock_offset(rc_comm_t *comm, double offset_s);
double rc_comm_straggler_period(const rc_comm_t *comm);

/* ---- MPI ----
 * rc_have_mpi: 1 when this build has the MPI transport (an MPI compiler
 * wrapper was found at build time).  rc_comm_set_mpi, between
 * rc_comm_create and rc_comm_connect: the MPI communicator whose ranks are
 * this communicator's ranks, as a Fortran handle (MPI_Comm_c2f; mpi4py's
 * comm.py2f()), so that no mpi.h is needed to call it.  The MPI transport
 * then talks on a duplicate of it (MPI_Comm_dup at connect, freed at
 * destroy), never on the communicator itself.  RC_ERR_NOT_SUPPORTED when the
 * build has no MPI transport. */
int rc_have_mpi(void);
rc_status_t rc_comm_set_mpi(rc_comm_t *comm, long long fhandle);

/* ---- collectives ----
 * count is in elements.  recvbuf == sendbuf means in place.  For allgather,
 * reduce_scatter, alltoall, gather and scatter, `count` is the block of one
 * rank: the big buffer holds size * count elements, block j belonging to rank
 * j (torch's *_into_tensor / *_single layout).  `root` buffers are used only
 * on the root (others may pass NULL).
 *
 * req == NULL: blocking.  req != NULL: asynchronous; *req receives a request
 * to wait on or test, then free.  Operations on one communicator run in the
 * order they were posted (every rank must post collectives in the same
 * order); buffers belong to the library until the request completes. */
rc_status_t rc_allreduce(rc_comm_t *comm, const void *sendbuf, void *recvbuf,
                         uint64_t count, rc_dtype_t dt, rc_op_t op, rc_algo_t algo,
                         rc_request_t **req);
rc_status_t rc_broadcast(rc_comm_t *comm, void *buf, uint64_t count, rc_dtype_t dt,
                         int root, rc_algo_t algo, rc_request_t **req);
rc_status_t rc_reduce(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                      rc_dtype_t dt, rc_op_t op, int root, rc_algo_t algo,
                      rc_request_t **req);
rc_status_t rc_allgather(rc_comm_t *comm, const void *sendbuf, void *recvbuf,
                         uint64_t count, rc_dtype_t dt, rc_algo_t algo, rc_request_t **req);
rc_status_t rc_reduce_scatter(rc_comm_t *comm, const void *sendbuf, void *recvbuf,
                              uint64_t count, rc_dtype_t dt, rc_op_t op, rc_algo_t algo,
                              rc_request_t **req);
rc_status_t rc_alltoall(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                        rc_dtype_t dt, rc_algo_t algo, rc_request_t **req);
rc_status_t rc_gather(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                      rc_dtype_t dt, int root, rc_algo_t algo, rc_request_t **req);
rc_status_t rc_scatter(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                       rc_dtype_t dt, int root, rc_algo_t algo, rc_request_t **req);
rc_status_t rc_barrier(rc_comm_t *comm, rc_request_t **req);

/* ---- point-to-point ----
 * Messages from one rank to another with the same tag are received in the
 * order they were sent; the receive must name the same count and dtype.
 * Large messages are streamed in chunks (pipelined).  A blocking send
 * returns once the data is in the transport (the receiver may not have it
 * yet).  source may be RC_ANY_SOURCE; *status_source (may be NULL) receives
 * the sender when the receive completes (blocking) - for requests see
 * rc_request_source. */
rc_status_t rc_send(rc_comm_t *comm, const void *buf, uint64_t count, rc_dtype_t dt,
                    int dest, int tag, rc_request_t **req);
rc_status_t rc_recv(rc_comm_t *comm, void *buf, uint64_t count, rc_dtype_t dt,
                    int source, int tag, int *status_source, rc_request_t **req);

/* ---- requests ----
 * rc_request_test: *done = 1 once complete; returns the operation's status
 * then (RC_OK while still running).  rc_request_wait: waits (timeout_s < 0:
 * forever), returns the operation's status, or RC_ERR_TIMEOUT when the wait
 * timed out (the request is still running and can be waited on again).
 * rc_request_free waits for the request first if it is still running. */
rc_status_t rc_request_test(rc_request_t *req, int *done);
rc_status_t rc_request_wait(rc_request_t *req, double timeout_s);
int rc_request_source(const rc_request_t *req);   /* receives: the sender */
void rc_request_free(rc_request_t *req);

/* The algorithm "auto" would run for this call (for debugging and tests). */
rc_algo_t rc_allreduce_select(const rc_comm_t *comm, uint64_t count, rc_dtype_t dt);
rc_algo_t rc_select(const rc_comm_t *comm, rc_coll_t coll, uint64_t count, rc_dtype_t dt);
/* Names of the algorithms a collective's table holds (NULL-terminated
 * walk: i = 0, 1, ... until NULL). */
const char *rc_coll_algo_name(rc_coll_t coll, int i);
const char *rc_coll_name(int coll);

/* ---- testing: the checks that bytes from other processes go through ----
 * Feeds `data` to one of them, exactly as the transport would, and returns
 * its verdict (RC_OK, or the error it raises).  Never touches a
 * communicator; for fuzzing (tests/test_fuzz.py). */
typedef enum {
    RC_FUZZ_ADDRESSES = 0,   /* data: int32 size, then size address blobs */
    RC_FUZZ_SHM_HEADER = 1,  /* data: int32 ranks, then the segment header bytes */
    RC_FUZZ_COLL_DESC = 2,   /* data: descriptor received, descriptor expected, uint64 bytes */
    RC_FUZZ_P2P_DESC = 3     /* data: descriptor, then the receiver's stream state */
} rc_fuzz_kind_t;
rc_status_t rc_fuzz_check(int kind, const void *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* RINGCOMM_H */
