/* comm.c - communicator lifecycle: two-phase create/connect, host identity,
 * transport choice, failure propagation, destroy. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"
#include "p2p.h"
#include "topo.h"
#include "transport/transport.h"

#define RC_DEFAULT_CHUNK (128 * 1024)
#define RC_DEFAULT_CHUNK_OVER (512 * 1024)
#define RC_DEFAULT_NSLOTS 4
#define RC_DEFAULT_TIMEOUT 300.0
#define RC_LOCAL_WAIT_GRACE 2.0

/* Host identity: two ranks share memory only when they share a kernel boot
 * and the /dev/shm filesystem (containers on one host may not). */
static void host_identity(char *buf, size_t len) {
    const char *env = getenv("RINGCOMM_HOST_ID");
    if (env && *env) {
        snprintf(buf, len, "env:%s", env);
        return;
    }
    char boot[64] = "noboot";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (!fgets(boot, sizeof boot, f)) strcpy(boot, "noboot");
        fclose(f);
        boot[strcspn(boot, "\n")] = 0;
    }
    struct stat sb;
    unsigned long long dev = stat("/dev/shm", &sb) == 0 ? (unsigned long long)sb.st_dev : 0;
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(buf, len, "%s/%llx/%s", boot, dev, host);
}

/* The kernel this process runs on (the boot id: containers and
 * RINGCOMM_HOST_ID's simulated hosts on one machine share its CPUs). */
static void machine_identity(char *buf, size_t len) {
    buf[0] = 0;
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (!fgets(buf, (int)len, f)) buf[0] = 0;
        fclose(f);
        buf[strcspn(buf, "\n")] = 0;
    }
    if (!buf[0] && gethostname(buf, len - 1) != 0) snprintf(buf, len, "unknown");
    buf[len - 1] = 0;
}

/* More ranks than CPUs on some machine: the ranks of one kernel against
 * the CPUs in the union of their affinity masks.  Every rank computes it
 * from the same blobs, so all agree. */
static int machines_oversubscribed(const rc_addr_t *addrs, int size) {
    char *done = calloc((size_t)size, 1);
    int over = 0;
    for (int r = 0; r < size && !over; r++) {
        if (done && done[r]) continue;
        unsigned char mask[sizeof addrs[0].cpus] = {0};
        int nranks = 0, ncpu = 0;
        for (int q = r; q < size; q++) {
            if (strncmp(addrs[q].machine, addrs[r].machine, sizeof addrs[r].machine) != 0) continue;
            if (done) done[q] = 1;
            nranks++;
            for (size_t i = 0; i < sizeof mask; i++) mask[i] |= addrs[q].cpus[i];
        }
        for (size_t i = 0; i < sizeof mask; i++) ncpu += __builtin_popcount(mask[i]);
        over = nranks > (ncpu ? ncpu : 1);
    }
    free(done);
    return over;
}

/* The transport table, in order of preference (NULL-terminated). */
const rc_transport_ops_t *const rc_transports[] = {
    &rc_transport_shm,
#ifdef HAVE_MPI
    &rc_transport_mpi,
#endif
    &rc_transport_tcp,
    NULL,
};

#ifdef HAVE_MPI
int rc_have_mpi(void) { return 1; }
#else
int rc_have_mpi(void) { return 0; }
#endif

rc_status_t rc_comm_set_mpi(rc_comm_t *comm, long long fhandle) {
    if (!comm) return rc_set_error(RC_ERR_INVALID_ARG, "comm_set_mpi: comm is NULL");
    if (!rc_have_mpi())
        return rc_set_error(RC_ERR_NOT_SUPPORTED, "comm_set_mpi: this build of ringcomm has no "
                            "MPI transport (no MPI compiler wrapper was found at build time)");
    if (comm->connected)
        return rc_set_error(RC_ERR_INVALID_ARG, "comm_set_mpi on rank %d: already connected "
                            "(call it between comm_create and comm_connect)", comm->rank);
    comm->has_mpi = 1;
    comm->mpi_fhandle = fhandle;
    return RC_OK;
}

rc_status_t rc_comm_topology(const rc_comm_t *comm, int *order, int *ids) {
    if (!comm || !comm->connected || !comm->topo_ids)
        return rc_set_error(RC_ERR_INVALID_ARG, "comm_topology: not a connected communicator");
    for (int i = 0; i < comm->size; i++) {
        if (order) order[i] = rc_rank_at(comm, i);
        for (int l = 0; l < 4 && ids; l++) {
            int v = comm->topo_ids[i * 4 + l];
            ids[i * 4 + l] = v == (int)RC_TOPO_NONE ? -1 : v;
        }
    }
    return RC_OK;
}

int rc_comm_rank(const rc_comm_t *comm) { return comm ? comm->rank : -1; }
rc_status_t rc_comm_failure(const rc_comm_t *comm, const char **msg) {
    if (msg) *msg = comm && comm->broken ? comm->broken_msg : "";
    return comm ? comm->broken : RC_ERR_INVALID_ARG;
}
int rc_comm_size(const rc_comm_t *comm) { return comm ? comm->size : -1; }
size_t rc_comm_chunk_bytes(const rc_comm_t *comm) { return comm ? comm->chunk_bytes : 0; }

rc_status_t rc_comm_create(int rank, int size, const char *token, double timeout_s,
                           rc_comm_t **out) {
    if (!out) return rc_set_error(RC_ERR_INVALID_ARG, "comm_create: out is NULL");
    *out = NULL;
    if (size < 1 || rank < 0 || rank >= size)
        return rc_set_error(RC_ERR_INVALID_ARG, "comm_create: rank %d is not in [0, size=%d)",
                            rank, size);
    if (!token || !*token || strlen(token) >= 48 || strchr(token, '/'))
        return rc_set_error(RC_ERR_INVALID_ARG,
                            "comm_create: token must be 1-47 characters without '/'");
    rc_comm_t *c = calloc(1, sizeof *c);
    if (!c) return rc_set_error(RC_ERR_NO_MEMORY, "comm_create: out of memory");
    pthread_mutex_init(&c->qmu, NULL);
    c->rank = rank;
    c->size = size;
    snprintf(c->token, sizeof c->token, "%s", token);
    c->timeout_s = timeout_s > 0 ? timeout_s : rc_env_double("RINGCOMM_TIMEOUT", RC_DEFAULT_TIMEOUT);
    if (c->timeout_s <= 0) c->timeout_s = RC_DEFAULT_TIMEOUT;
    /* More ranks than CPUs: every pipeline hop costs a context switch, so
     * use bigger chunks (fewer hops) and fewer-hop algorithms for small calls.
     * A first guess from our own mask; comm_connect decides from every
     * rank's (a rank bound to one core is not oversubscribed). */
    cpu_set_t cpus;
    int ncpu = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
    int over = c->oversubscribed = size > ncpu;
    long long chunk = rc_env_ll("RINGCOMM_CHUNK_BYTES", over ? RC_DEFAULT_CHUNK_OVER : RC_DEFAULT_CHUNK);
    c->chunk_given = getenv("RINGCOMM_CHUNK_BYTES") && *getenv("RINGCOMM_CHUNK_BYTES");
    long long nslots = rc_env_ll("RINGCOMM_NSLOTS", RC_DEFAULT_NSLOTS);
    if (chunk < 64) chunk = 64;
    if (chunk > (1LL << 30)) chunk = 1LL << 30;
    chunk = chunk / 64 * 64; /* whole cache lines, divisible by every element size */
    if (nslots < 2) nslots = 2;
    if (nslots > 1024) nslots = 1024;
    c->chunk_bytes = (size_t)chunk;
    c->algo_env = RC_ALGO_AUTO;
    const char *algo = getenv("RINGCOMM_ALGO");
    for (int a = 1; algo && *algo && a < RC_NUM_ALGOS; a++)
        if (!strcmp(algo, rc_algo_name((rc_algo_t)a))) c->algo_env = a;
    if (algo && *algo && c->algo_env == RC_ALGO_AUTO && strcmp(algo, "auto") != 0 && rank == 0)
        rc_log(RC_WARN, "RINGCOMM_ALGO=%s is not an algorithm name; using auto", algo);
    /* "auto" thresholds: built-in defaults, the tune file, the environment (tune.c) */
    rc_tune_init(c);
    /* Results of calls this large go out with streaming stores: no
     * read-for-ownership of the output, no eviction of the slots. */
    c->stream_min = (uint64_t)rc_env_ll("RINGCOMM_STREAM_MIN", 8 << 20);
    c->nslots = (uint32_t)nslots;
    c->check_nan = rc_env_ll("RINGCOMM_CHECK_NAN", 0) != 0;
    /* Point-to-point messages this large are read straight out of the
     * sender's buffer (process_vm_readv) where the kernel allows it. */
    c->cma_min = (uint64_t)rc_env_ll("RINGCOMM_CMA_MIN", 64 * 1024);
    /* RINGCOMM_TRANSPORT=name forces one transport for every peer (tests,
     * and ranks on one host that should talk as if they were not); else
     * shared memory and a network transport, chosen per peer at connect
     * (RINGCOMM_TRANSPORT=shm,tcp: only among those). */
    const char *force = getenv("RINGCOMM_TRANSPORT");
    rc_status_t st;
    c->tp = rc_transports[0];
    if ((st = rc_strag_init(c)) != RC_OK) {
        rc_comm_destroy(c);
        return st;
    }
    if (force && *force && !strchr(force, ',')) {
        const rc_transport_ops_t *const *t = rc_transports;
        while (*t && strcmp((*t)->name, force) != 0) t++;
        if (!*t) {
            rc_comm_destroy(c);
            return rc_set_error(RC_ERR_INVALID_ARG,
                                "RINGCOMM_TRANSPORT=%s: not a transport of this build", force);
        }
        c->tp = *t;
        c->tp_forced = 1;
        c->tps[c->ntps++] = c->tp;
        st = c->tp->create(c);
    } else {
        st = rc_mux_create(c, force && *force ? force : NULL);
    }
    if (st != RC_OK) {
        rc_comm_destroy(c);
        return st;
    }
    *out = c;
    return RC_OK;
}

rc_status_t rc_comm_address(rc_comm_t *comm, void *blob, size_t blob_bytes) {
    if (!comm || !blob || blob_bytes < sizeof(rc_addr_t))
        return rc_set_error(RC_ERR_INVALID_ARG, "comm_address: need a %d-byte buffer",
                            RC_ADDRESS_BYTES);
    rc_addr_t a;
    memset(&a, 0, sizeof a);
    a.magic = RC_ADDR_MAGIC;
    a.rank = comm->rank;
    a.size = comm->size;
    a.pid = (int32_t)getpid();
    snprintf(a.token, sizeof a.token, "%s", comm->token);
    host_identity(a.host, sizeof a.host);
    RC_CHECK(rc_mux_address(comm));
    a.chunk_bytes = (uint32_t)comm->chunk_bytes;
    a.nslots = (uint16_t)comm->nslots;
    a.algo_env = (int8_t)comm->algo_env;
    a.ntune = RC_NUM_TUNE;
    a.stream_min = comm->stream_min;
    a.chunk_given = (uint8_t)comm->chunk_given;
    machine_identity(a.machine, sizeof a.machine);
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    if (sched_getaffinity(0, sizeof cpus, &cpus) != 0) CPU_SET(0, &cpus);
    for (int i = 0; i < (int)sizeof a.cpus * 8 && i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &cpus)) a.cpus[i / 8] |= (unsigned char)(1u << (i % 8));
    rc_topo_address(comm, &a);
    a.tune.t = comm->tune;
    rc_strag_address(&a);
    for (int i = 0; i < comm->ntps; i++)
        if (comm->tps[i]->address) comm->tps[i]->address(comm, &a);
    memcpy(blob, &a, sizeof a);
    return RC_OK;
}

/* Every rank's address blob, as the bootstrap delivered it: our
 * communicator's token, the rank it sits at, terminated strings (they are
 * printed in messages).  The fuzz target for address bytes (csrc/fuzz.c). */
rc_status_t rc_addr_check(rc_addr_t *addrs, int size, int me, const char *token) {
    for (int r = 0; r < size; r++) {
        rc_addr_t *a = &addrs[r];
        a->token[sizeof a->token - 1] = 0;
        a->host[sizeof a->host - 1] = 0;
        a->machine[sizeof a->machine - 1] = 0;
        if (a->magic != RC_ADDR_MAGIC || a->rank != r || a->size != size ||
            strncmp(a->token, token, sizeof a->token) != 0)
            return rc_set_error(RC_ERR_MISMATCH,
                                "comm_connect on rank %d: address %d is not from rank %d of this "
                                "%d-rank communicator (it says rank %d of %d)",
                                me, r, r, size, a->rank, a->size);
        a->tune.t.source[sizeof a->tune.t.source - 1] = 0;
        int origins_ok = 1;
        for (int i = 0; i < RC_NUM_TUNE; i++)
            if (a->tune.t.from[i] > RC_TUNE_FROM_ENV) origins_ok = 0;
        if (a->chunk_bytes < 64 || a->chunk_bytes > (1u << 30) || a->chunk_bytes % 64 ||
            a->nslots < 2 || a->nslots > 1024 || a->algo_env < 0 || a->algo_env >= RC_NUM_ALGOS ||
            a->ntune != RC_NUM_TUNE || !origins_ok)
            return rc_set_error(RC_ERR_MISMATCH,
                                "comm_connect on rank %d: address of rank %d carries an invalid "
                                "tuning (%u slots of %u bytes, algorithm %d, %u thresholds: this "
                                "build has %d)",
                                me, r, a->nslots, a->chunk_bytes, a->algo_env, a->ntune,
                                RC_NUM_TUNE);
    }
    return RC_OK;
}

rc_status_t rc_comm_connect(rc_comm_t *comm, const void *blobs, size_t blob_bytes) {
    if (!comm) return rc_set_error(RC_ERR_INVALID_ARG, "comm_connect: comm is NULL");
    if (comm->connected) return rc_set_error(RC_ERR_INVALID_ARG, "comm_connect: already connected");
    if (!blobs || blob_bytes != (size_t)comm->size * sizeof(rc_addr_t))
        return rc_set_error(RC_ERR_INVALID_ARG,
                            "comm_connect: expected %d address blobs of %d bytes (%zu bytes), "
                            "got %zu bytes",
                            comm->size, RC_ADDRESS_BYTES, (size_t)comm->size * sizeof(rc_addr_t),
                            blob_bytes);
    rc_addr_t *addrs = malloc(blob_bytes);
    if (!addrs) return rc_set_error(RC_ERR_NO_MEMORY, "comm_connect: out of memory");
    memcpy(addrs, blobs, blob_bytes);
    rc_status_t st = rc_addr_check(addrs, comm->size, comm->rank, comm->token);
    if (st != RC_OK) goto out;
    /* rank 0's tuning, before any transport sizes its slots; what it took
     * from the defaults follows the machines' CPUs, known only now */
    comm->oversubscribed = machines_oversubscribed(addrs, comm->size);
    comm->chunk_bytes = addrs[0].chunk_given ? addrs[0].chunk_bytes
                        : comm->oversubscribed ? RC_DEFAULT_CHUNK_OVER : RC_DEFAULT_CHUNK;
    comm->nslots = addrs[0].nslots;
    if (!addrs[0].chunk_given)
        comm->chunk_bytes = rc_shm_fit_chunk(addrs, comm->size, comm->chunk_bytes, comm->nslots);
    comm->algo_env = addrs[0].algo_env;
    comm->stream_min = addrs[0].stream_min;
    rc_tune_adopt(comm, &addrs[0].tune.t);
    /* the rank order rings and trees follow (before the host layout: the
     * hierarchical all-reduce's groups follow it too) */
    RC_CHECK_GOTO(rc_topo_connect(comm, addrs), st, out);
    /* the transport of every peer (closes the unused), then connect each */
    RC_CHECK_GOTO(rc_mux_select(comm, addrs), st, out);
    for (int i = 0; i < comm->ntps; i++)
        RC_CHECK_GOTO(comm->tps[i]->connect(comm, addrs), st, out);
    comm->scratch = malloc(comm->chunk_bytes);
    if (!comm->scratch) {
        st = rc_set_error(RC_ERR_NO_MEMORY, "comm_connect: out of memory");
        goto out;
    }
    RC_CHECK_GOTO(rc_p2p_init(comm), st, out);
    RC_CHECK_GOTO(rc_strag_connect(comm, addrs), st, out);
    comm->connected = 1;
    comm->trace_id = rc_trace_comm(comm);
    if (rc_debug_level() >= RC_INFO) {
        RC_LOG(RC_INFO, "ringcomm %d.%d.%d, kernels %s: rank %d of %d connected (host %s); "
               "chunk %zu B x %u slots, timeout %.0f s%s", RC_VERSION_MAJOR, RC_VERSION_MINOR,
               RC_VERSION_PATCH, rc_reduce_isa(), comm->rank, comm->size, addrs[comm->rank].host,
               comm->chunk_bytes, comm->nslots, comm->timeout_s,
               comm->oversubscribed ? ", more ranks than CPUs" : "");
        for (int r = 0; r < comm->size; r++)
            if (r != comm->rank)
                RC_LOG(RC_INFO, "rank %d -> rank %d: transport %s (host %s)", comm->rank, r,
                       comm->peer_tp ? comm->peer_tp[r]->name : comm->tp->name, addrs[r].host);
    }
out:
    free(addrs);
    return st;
}

rc_status_t rc_comm_fail(rc_comm_t *comm, rc_status_t st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(comm->broken_msg, sizeof comm->broken_msg, fmt, ap);
    va_end(ap);
    comm->broken = st;
    if (comm->tp && comm->tp->abort) comm->tp->abort(comm, st, comm->broken_msg);
    return rc_set_error(st, "%s", comm->broken_msg);
}

/* A peer this rank waits on in its collective is already in a later one
 * (`later`): it finished this call without the message this rank waits for
 * (or without draining ours).  Every message of a call is sent and consumed
 * within it, so the ranks disagreed on the call: a tree rooted elsewhere
 * (binomial reduce with another root: a leaf sends and returns, its parent
 * may be a rank that never receives), another count or algorithm.  The
 * transport calls rc_comm_peer_left at each slow check while it sees that
 * and nothing of the call arrived; it fails once the peer has been seen
 * ahead for `grace` seconds (*since: when first seen, 0 before): time for
 * messages still in flight, or for a rank that saw the peer's part of the
 * call to name both calls. */
int rc_comm_peer_is_ahead(const rc_comm_t *comm, const rc_desc_t *later) {
    return comm->cur.desc.coll != RC_COLL_NONE && later->coll != RC_COLL_NONE &&
           (int32_t)(later->seq - comm->cur.desc.seq) > 0;
}

rc_status_t rc_comm_peer_left(rc_comm_t *comm, int peer, const char *what, const rc_desc_t *later,
                              double *since, double grace) {
    double now = rc_now();
    if (*since == 0) *since = now;
    if (now - *since < grace) return RC_OK;
    char mine[160], their[160];
    rc_desc_format(&comm->cur.desc, mine, sizeof mine);
    rc_desc_format(later, their, sizeof their);
    return rc_comm_fail(comm, RC_ERR_MISMATCH,
                        "collective mismatch: rank %d called %s and waits to %s rank %d, but rank "
                        "%d finished that call without it and is in %s: the ranks disagree on the "
                        "call's root, counts or algorithm",
                        comm->rank, mine, what, peer, peer, their);
}

rc_status_t rc_comm_mismatch(rc_comm_t *comm, int other_rank, const rc_desc_t *theirs) {
    char mine[160], their[160];
    rc_desc_format(&comm->cur.desc, mine, sizeof mine);
    rc_desc_format(theirs, their, sizeof their);
    return rc_comm_fail(comm, RC_ERR_MISMATCH,
                        "collective mismatch: rank %d called %s but rank %d called %s", comm->rank,
                        mine, other_rank, their);
}

rc_status_t rc_comm_wait_check(rc_comm_t *comm, double t0, const char *what, int peer,
                               const char *via, const char *basis,
                               void (*stragglers)(rc_comm_t *, char *, size_t), int *warned) {
    double waited = rc_now() - t0;
    /* Ranks on several hosts, this one waiting for a peer of its own host
     * (shared memory): it fails RC_LOCAL_WAIT_GRACE s after the deadline, so
     * that the rank of this host that waits for the network, and knows which
     * remote rank and host is missing, reports first (every rank adopts the
     * first abort it hears; a link down otherwise ends in "rank 1 waited to
     * receive from rank 0", naming neither). */
    double limit = comm->timeout_s;
    if (comm->nhosts > 1 && peer >= 0 && peer < comm->size && comm->peer_tp &&
        comm->peer_tp[peer] == &rc_transport_shm)
        limit += RC_LOCAL_WAIT_GRACE;
    if (waited <= comm->timeout_s / 2 || (*warned && waited <= limit)) return RC_OK;
    char mine[160], late[600];
    rc_desc_format(&comm->cur.desc, mine, sizeof mine);
    stragglers(comm, late, sizeof late);
    if (!*warned) {
        *warned = 1;
        rc_log(RC_WARN, "rank %d has waited %.1f s in %s to %s rank %d%s; ranks not arrived: %s. "
               "It fails at %.0f s (RINGCOMM_TIMEOUT)",
               comm->rank, waited, mine, what, peer, via, late, comm->timeout_s);
    }
    if (waited <= limit) return RC_OK;
    return rc_comm_fail(comm, RC_ERR_TIMEOUT,
                        "timeout after %.1f s: rank %d in %s waited to %s rank %d%s; ranks not "
                        "arrived: %s (%sRINGCOMM_TIMEOUT=%.0f)",
                        waited, comm->rank, mine, what, peer, via, late, basis, comm->timeout_s);
}

rc_status_t rc_comm_adopt_abort(rc_comm_t *comm, int from_rank, rc_status_t st, const char *msg,
                                const rc_transport_ops_t *heard_on) {
    snprintf(comm->broken_msg, sizeof comm->broken_msg, "rank %d reported: %s", from_rank, msg);
    comm->broken = st;
    for (int i = 0; i < comm->ntps; i++)
        if (comm->tps[i] != heard_on && comm->tps[i]->abort)
            comm->tps[i]->abort(comm, st, comm->broken_msg);
    return rc_set_error(st, "%s", comm->broken_msg);
}

rc_status_t rc_comm_destroy(rc_comm_t *comm) {
    if (!comm) return RC_OK;
    rc_progress_shutdown(comm);
    for (int i = 0; i < comm->ntps; i++)
        if (comm->tps[i]->close) comm->tps[i]->close(comm);
    free(comm->peer_tp);
    free(comm->host_ranks);
    free(comm->topo_ids);
    free(comm->order);
    free(comm->pos);
    free(comm->grp_ranks);
    rc_p2p_free(comm);
    pthread_mutex_destroy(&comm->qmu);
    free(comm->scratch);
    rc_strag_free(comm);
    free(comm);
    return RC_OK;
}
