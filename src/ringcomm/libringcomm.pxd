# Declarations of csrc/include/ringcomm.h only (mpi4py's libmpi.pxd shape).
from libc.stdint cimport uint32_t, uint64_t

cdef extern from "ringcomm.h" nogil:
    ctypedef enum rc_status_t:
        RC_OK
        RC_INPROGRESS
        RC_ERR_INVALID_ARG
        RC_ERR_NOT_SUPPORTED
        RC_ERR_NO_MEMORY
        RC_ERR_IO
        RC_ERR_TIMEOUT
        RC_ERR_PEER_LOST
        RC_ERR_MISMATCH
        RC_ERR_INTERNAL

    ctypedef enum rc_dtype_t:
        RC_FLOAT32
        RC_FLOAT64
        RC_FLOAT16
        RC_BFLOAT16
        RC_INT8
        RC_UINT8
        RC_INT32
        RC_INT64
        RC_BOOL
        RC_NUM_DTYPES

    ctypedef enum rc_op_t:
        RC_SUM
        RC_PROD
        RC_MIN
        RC_MAX
        RC_AVG
        RC_BAND
        RC_BOR
        RC_BXOR
        RC_NUM_OPS

    ctypedef enum rc_algo_t:
        RC_ALGO_AUTO
        RC_ALGO_RING
        RC_ALGO_TREE
        RC_ALGO_DIRECT
        RC_ALGO_BINOMIAL
        RC_ALGO_CHAIN
        RC_ALGO_SCATTER_ALLGATHER
        RC_ALGO_RS_GATHER
        RC_ALGO_PAIRWISE
        RC_ALGO_CMA
        RC_ALGO_HIER
        RC_NUM_ALGOS

    ctypedef enum rc_coll_t:
        RC_COLL_NONE
        RC_COLL_ALLREDUCE
        RC_COLL_BARRIER
        RC_COLL_BROADCAST
        RC_COLL_REDUCE
        RC_COLL_ALLGATHER
        RC_COLL_REDUCE_SCATTER
        RC_COLL_ALLTOALL
        RC_COLL_GATHER
        RC_COLL_SCATTER
        RC_COLL_SEND
        RC_COLL_RECV
        RC_NUM_COLLS

    int RC_ANY_SOURCE

    ctypedef struct rc_comm_t:
        pass

    ctypedef struct rc_request_t:
        pass

    int RC_ADDRESS_BYTES
    int RC_VERSION_MAJOR
    int RC_VERSION_MINOR
    int RC_VERSION_PATCH

    const char *rc_status_string(rc_status_t s)
    const char *rc_last_error()
    size_t rc_dtype_size(rc_dtype_t dt)
    const char *rc_dtype_name(rc_dtype_t dt)
    const char *rc_op_name(rc_op_t op)
    const char *rc_algo_name(rc_algo_t a)
    const char *rc_reduce_isa()
    int rc_op_valid_for(rc_dtype_t dt, rc_op_t op)

    rc_status_t rc_reduce_local(void *dst, const void *a, const void *b, size_t n,
                                rc_dtype_t dt, rc_op_t op)
    rc_status_t rc_scale_local(void *buf, size_t n, rc_dtype_t dt, double divisor)

    rc_status_t rc_comm_create(int rank, int size, const char *token, double timeout_s,
                               rc_comm_t **out)
    rc_status_t rc_comm_address(rc_comm_t *comm, void *blob, size_t blob_bytes)
    rc_status_t rc_comm_connect(rc_comm_t *comm, const void *blobs, size_t blob_bytes)
    rc_status_t rc_comm_destroy(rc_comm_t *comm)
    int rc_comm_rank(const rc_comm_t *comm)
    int rc_comm_size(const rc_comm_t *comm)
    size_t rc_comm_chunk_bytes(const rc_comm_t *comm)
    int rc_have_mpi()
    rc_status_t rc_comm_set_mpi(rc_comm_t *comm, long long fhandle)

    rc_status_t rc_comm_failure(const rc_comm_t *comm, const char **msg)
    uint32_t rc_comm_seq(const rc_comm_t *comm)
    rc_status_t rc_comm_arrivals(const rc_comm_t *comm, uint32_t first, uint32_t n, double *out)
    rc_status_t rc_comm_set_quiet(rc_comm_t *comm, int quiet)
    rc_status_t rc_comm_set_clock_offset(rc_comm_t *comm, double offset_s)
    double rc_comm_straggler_period(const rc_comm_t *comm)
    rc_status_t rc_comm_threshold(const rc_comm_t *comm, int i, const char **name,
                                  uint64_t *value, const char **origin)
    const char *rc_comm_tune_source(const rc_comm_t *comm)
    rc_status_t rc_comm_topology(const rc_comm_t *comm, int *order, int *ids)

    rc_status_t rc_allreduce(rc_comm_t *comm, const void *sendbuf, void *recvbuf,
                             uint64_t count, rc_dtype_t dt, rc_op_t op, rc_algo_t algo,
                             rc_request_t **req)
    rc_status_t rc_broadcast(rc_comm_t *comm, void *buf, uint64_t count, rc_dtype_t dt,
                             int root, rc_algo_t algo, rc_request_t **req)
    rc_status_t rc_reduce(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                          rc_dtype_t dt, rc_op_t op, int root, rc_algo_t algo,
                          rc_request_t **req)
    rc_status_t rc_allgather(rc_comm_t *comm, const void *sendbuf, void *recvbuf,
                             uint64_t count, rc_dtype_t dt, rc_algo_t algo, rc_request_t **req)
    rc_status_t rc_reduce_scatter(rc_comm_t *comm, const void *sendbuf, void *recvbuf,
                                  uint64_t count, rc_dtype_t dt, rc_op_t op, rc_algo_t algo,
                                  rc_request_t **req)
    rc_status_t rc_alltoall(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                            rc_dtype_t dt, rc_algo_t algo, rc_request_t **req)
    rc_status_t rc_gather(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                          rc_dtype_t dt, int root, rc_algo_t algo, rc_request_t **req)
    rc_status_t rc_scatter(rc_comm_t *comm, const void *sendbuf, void *recvbuf, uint64_t count,
                           rc_dtype_t dt, int root, rc_algo_t algo, rc_request_t **req)
    rc_status_t rc_barrier(rc_comm_t *comm, rc_request_t **req)
    rc_status_t rc_send(rc_comm_t *comm, const void *buf, uint64_t count, rc_dtype_t dt,
                        int dest, int tag, rc_request_t **req)
    rc_status_t rc_recv(rc_comm_t *comm, void *buf, uint64_t count, rc_dtype_t dt,
                        int source, int tag, int *status_source, rc_request_t **req)

    rc_status_t rc_request_test(rc_request_t *req, int *done)
    rc_status_t rc_request_wait(rc_request_t *req, double timeout_s)
    int rc_request_source(const rc_request_t *req)
    void rc_request_free(rc_request_t *req)

    rc_algo_t rc_allreduce_select(const rc_comm_t *comm, uint64_t count, rc_dtype_t dt)
    rc_algo_t rc_select(const rc_comm_t *comm, rc_coll_t coll, uint64_t count, rc_dtype_t dt)
    const char *rc_coll_algo_name(rc_coll_t coll, int i)
    const char *rc_coll_name(int coll)

    rc_status_t rc_fuzz_check(int kind, const void *data, size_t len)
