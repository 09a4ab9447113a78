/* transport.h - the interface algorithms see (NCCL's transport table shape).
 *
 * A transport moves whole messages of at most comm->chunk_bytes bytes from one
 * rank to another, in FIFO order per (sender, receiver), through slots it lends
 * to the caller, so that the shared-memory transport can reduce straight out
 * of the sender's slot (no extra copy).  Network transports lend staging
 * buffers instead.  Every wait has a deadline and backs off (spin, yield,
 * sleep) so that more ranks than cores still progress.
 */
#ifndef RC_TRANSPORT_H
#define RC_TRANSPORT_H

#include "../core.h"

/* The address blob every rank publishes through the bootstrap. */
#define RC_ADDR_MAGIC 0x52434144u /* "RCAD" */
typedef struct {
    uint32_t magic;
    int32_t rank;
    int32_t size;
    int32_t pid;
    char token[64];
    char host[128];      /* host identity: boot id + /dev/shm device + hostname, or RINGCOMM_HOST_ID */
    unsigned char net[48]; /* a network transport's listening address (tcp.c) */
    /* Communicator-wide tuning: every rank adopts rank 0's (comm_connect,
     * before any transport sizes a buffer), so chunking and "auto" agree on
     * every host whatever each one's environment or CPU count says. */
    uint32_t chunk_bytes;
    uint16_t nslots;
    int8_t algo_env;
    uint8_t ntune;       /* RC_NUM_TUNE of the sender's build */
    uint64_t stream_min;
    /* Where this rank may run, for "more ranks than CPUs" (comm_connect):
     * the kernel it runs on and its CPU affinity mask (CPUs 0..1023). */
    char machine[40];    /* boot id (RINGCOMM_HOST_ID does not change it), else hostname */
    unsigned char cpus[128];
    uint8_t chunk_given; /* chunk_bytes is RINGCOMM_CHUNK_BYTES or a transport's, not a default */
    uint8_t pad[3];
    uint32_t shm_free_mib; /* shm: MiB free on this host's /dev/shm (0: unknown, or no shm) */
    union {
        rc_tune_t t;     /* "auto" thresholds, their origins and source (tune.c) */
        unsigned char room[384];
    } tune;
    /* Bytes 832..1023: per-feature fields, each at a fixed offset that
     * tests/test_fuzz.py packs.  A feature takes its bytes from `spare`. */
    /* 832..839: where this rank sits in its machine (topo.c): RC_TOPO_* bits,
     * then its package, NUMA node and L3 group (lowest CPU sharing it), each
     * RC_TOPO_NONE (0xFFFF) when unknown or when its CPUs span several. */
    uint8_t topo;
    uint8_t topo_pad;
    uint16_t topo_package, topo_numa, topo_l3;
    uint16_t strag_every; /* 840: RINGCOMM_STRAGGLER_CALLS (straggler.c; rank 0's is used) */
    uint16_t strag_pad;
    uint32_t strag_ms;    /* 844: RINGCOMM_STRAGGLER in ms (0: off) */
    unsigned char spare[RC_ADDRESS_BYTES - 848];
} rc_addr_t;
_Static_assert(sizeof(rc_addr_t) == RC_ADDRESS_BYTES, "address blob size");
_Static_assert(sizeof(rc_tune_t) <= sizeof(((rc_addr_t *)0)->tune.room), "tuning fits its room");
_Static_assert(offsetof(rc_addr_t, shm_free_mib) == 444 && offsetof(rc_addr_t, tune) == 448 &&
                   offsetof(rc_addr_t, topo) == 832 && offsetof(rc_addr_t, topo_package) == 834 &&
                   offsetof(rc_addr_t, topo_l3) == 838 &&
                   offsetof(rc_addr_t, strag_every) == 840 && offsetof(rc_addr_t, strag_ms) == 844 &&
                   offsetof(rc_addr_t, spare) == 848,
               "address blob layout (tests/test_fuzz.py packs it)");

typedef struct rc_transport_ops {
    const char *name;
    /* 1 when this transport can carry traffic between the two addresses. */
    int (*can_connect)(const rc_addr_t *self, const rc_addr_t *peer);
    /* Phase 1 (before addresses are exchanged). */
    rc_status_t (*create)(rc_comm_t *comm);
    /* Phase 1: fill this transport's part of this rank's address (NULL: none). */
    void (*address)(rc_comm_t *comm, rc_addr_t *a);
    /* Phase 2: every rank's address, in rank order.  A transport connects
     * only the peers r with rc_peer_is(comm, r, itself). */
    rc_status_t (*connect)(rc_comm_t *comm, const rc_addr_t *addrs);
    /* Data path, on one of RC_NLANES independent FIFO lanes per rank pair
     * (collectives and point-to-point never share a FIFO).  send_acquire
     * lends a buffer of chunk_bytes for the next message to `peer`;
     * send_commit posts it with its descriptor.  recv_acquire lends the next
     * message from `peer` (calling it again before recv_release lends the
     * same message); recv_release returns its slot.  With wait == 0 the
     * acquires return RC_INPROGRESS instead of waiting. */
    rc_status_t (*send_acquire)(rc_comm_t *comm, int lane, int peer, void **buf, int wait);
    rc_status_t (*send_commit)(rc_comm_t *comm, int lane, int peer, const rc_desc_t *d);
    rc_status_t (*recv_acquire)(rc_comm_t *comm, int lane, int peer, const void **buf,
                                rc_desc_t *d, int wait);
    void (*recv_release)(rc_comm_t *comm, int lane, int peer);
    /* Events for the point-to-point engine: a counter that moves whenever a
     * p2p message arrives for this rank, a p2p slot it sent is freed, or a
     * local thread kicks it; wait_events sleeps (backing off) until it moves
     * or max_s passes.  health checks the abort record and the peers'
     * liveness (`doing` names what this rank waits for, for the message). */
    uint32_t (*events)(rc_comm_t *comm);
    void (*wait_events)(rc_comm_t *comm, uint32_t seen, double max_s);
    void (*kick)(rc_comm_t *comm);
    rc_status_t (*health)(rc_comm_t *comm, const char *doing);
    /* Single copy for large point-to-point messages (NULL: not offered).
     * cma_ok: may `peer` read this rank's memory; cma_read: read another
     * rank's memory; ack_set (receiver) / ack_take (sender): message `msg`
     * of the pair was read. */
    int (*cma_ok)(rc_comm_t *comm, int peer);
    rc_status_t (*cma_read)(rc_comm_t *comm, int peer, void *dst, uint64_t remote, size_t len);
    void (*ack_set)(rc_comm_t *comm, int peer, uint32_t msg);
    int (*ack_take)(rc_comm_t *comm, int peer, uint32_t msg);
    /* Publish the collective this rank is in (comm->cur.desc) so that a
     * waiting peer can tell a mismatch from a slow rank. */
    void (*publish)(rc_comm_t *comm);
    /* Tell the peers this communicator failed (they raise it too). */
    void (*abort)(rc_comm_t *comm, rc_status_t st, const char *msg);
    void (*close)(rc_comm_t *comm);
} rc_transport_ops_t;

/* Checks of bytes that come from other processes (also the fuzz targets,
 * csrc/fuzz.c): address blobs (comm.c; terminates their strings in place)
 * and the shared-memory header (shm.c). */
rc_status_t rc_addr_check(rc_addr_t *addrs, int size, int me, const char *token);
rc_status_t rc_shm_header_check(const void *hdr, size_t mapped, int p, char *why, size_t len);
size_t rc_shm_header_bytes(void);

/* straggler.c: RINGCOMM_STRAGGLER(_CALLS) into this rank's address (comm_address). */
void rc_strag_address(rc_addr_t *a);

#define RC_LANE_COLL 0
#define RC_LANE_P2P 1
#define RC_NLANES 2

extern const rc_transport_ops_t rc_transport_shm;
extern const rc_transport_ops_t rc_transport_tcp;
#ifdef HAVE_MPI
extern const rc_transport_ops_t rc_transport_mpi; /* mpi.c: built only with an MPI wrapper */
#endif
/* mux.c: the dispatch table comm->tp points to when peers use different
 * transports (each op goes to comm->peer_tp[peer]; events, waits, health,
 * publish and abort go to every transport in use). */
extern const rc_transport_ops_t rc_transport_mux;
/* mux.c, without RINGCOMM_TRANSPORT forcing one: rc_mux_create (phase 1,
 * comm_create) creates shared memory (`allow`: a comma list of the
 * transports that may be used, or NULL); rc_mux_address (phase 1,
 * comm_address: the bootstrap has said by then whether the communicator
 * comes from an MPI communicator) creates the network transport, MPI if so
 * and built, else TCP; rc_mux_select (phase 2, before the transports'
 * connect) gives every peer its transport, closes the unused, sets comm->tp
 * and fills the host layout (comm->nhosts ...). */
rc_status_t rc_mux_create(rc_comm_t *comm, const char *allow);
rc_status_t rc_mux_address(rc_comm_t *comm);
rc_status_t rc_mux_select(rc_comm_t *comm, const rc_addr_t *addrs);
/* For the wait loops of every transport (every few ms while waiting): the
 * health of the *other* transports in use, so that a wait on one sees a
 * failure reported on the other (an abort recorded in shared memory by a
 * rank of this host, a network peer lost) and queued network sends move. */
rc_status_t rc_mux_others_health(rc_comm_t *comm, const rc_transport_ops_t *self,
                                 const char *doing);
/* comm.c: a peer's abort (status `st`, its text `msg`) heard on `heard_on`:
 * the communicator breaks with "rank R reported: msg", and the abort goes
 * on through every other transport in use (the shared abort record, ABORT
 * frames, MPI control messages), so that this host's ranks learn the cause
 * and not only that this rank left, and the other hosts hear of it even if
 * the reporter died before telling them all.  Each transport ignores a
 * second abort, so relays never loop.  Returns `st` with the text set. */
rc_status_t rc_comm_adopt_abort(rc_comm_t *comm, int from_rank, rc_status_t st, const char *msg,
                                const rc_transport_ops_t *heard_on);

/* comm.c, for the slow checks of every transport's wait (t0: when it
 * began; what: "send to" / "receive from"; peer: the awaited rank): past
 * half of comm->timeout_s, warn once (*warned) naming the ranks not in this
 * collective (`stragglers` lists them, as this transport can tell); past
 * the timeout, fail with RC_ERR_TIMEOUT.  `via` follows the awaited rank in
 * both texts (" (tcp)"), `basis` opens the timeout's parenthesis (how the
 * stragglers were judged, "" or "...; "). */
rc_status_t rc_comm_wait_check(rc_comm_t *comm, double t0, const char *what, int peer,
                               const char *via, const char *basis,
                               void (*stragglers)(rc_comm_t *, char *, size_t), int *warned);

/* shm.c: all-reduce of at most RC_SHM_LL_BYTES through one 64-byte line
 * per rank (flag, descriptor and payload together; see shm.c's head
 * comment), for allreduce_direct.c.  rc_shm_ll_ok: the call may take it
 * (every peer on this host, p >= 2, small enough); the same answer on every
 * rank for the same call.  rc_shm_allreduce_ll: reduces in rank order like
 * the slot path, same results bit for bit. */
#define RC_SHM_LL_LINES 8  /* lines per rank's outbox (reused in turn) */
#define RC_SHM_LL_BYTES 48 /* payload bytes in a line */
int rc_shm_ll_ok(const rc_comm_t *c, size_t bytes);
/* shm_setup.c, at connect when no chunk size was given: the largest chunk
 * size, `chunk` halved down to 16 KiB at most, whose shared memory fits in
 * what every host's /dev/shm has free (addrs[].shm_free_mib); the same on
 * every rank. */
size_t rc_shm_fit_chunk(const rc_addr_t *addrs, int size, size_t chunk, uint32_t nslots);
/* shm_setup.c: bytes of this host's shared-memory segment (0: none). */
size_t rc_shm_segment_bytes(const rc_comm_t *comm);
rc_status_t rc_shm_allreduce_ll(rc_comm_t *c, const void *in, void *out, uint64_t count);

/* The transport table, in order of preference (NULL-terminated). */
extern const rc_transport_ops_t *const rc_transports[];

/* Does `t` carry the traffic between this rank and rank r?  (comm->peer_tp
 * when transports are chosen per peer, else the one transport comm->tp.) */
static inline int rc_peer_is(const rc_comm_t *comm, int r, const rc_transport_ops_t *t) {
    return comm->peer_tp ? comm->peer_tp[r] == t : comm->tp == t;
}

#endif /* RC_TRANSPORT_H */
