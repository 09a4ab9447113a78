/* mux.c - a transport per peer: shared memory to the ranks on this host,
 * a network transport (MPI or TCP) to the others.
 *
 * Phase 1 (when RINGCOMM_TRANSPORT does not force one; a list such as
 * RINGCOMM_TRANSPORT=shm,tcp limits the choice to those): rc_mux_create
 * creates shared memory; rc_mux_address, when this rank's address is asked
 * for (the bootstrap has handed over the MPI communicator, if any, by then),
 * creates the first network transport of rc_transports[] that applies: MPI
 * when the communicator was made from an MPI communicator, else TCP (which
 * starts listening), so every rank's address blob carries a network
 * address before anyone knows where the others are.
 *
 * Phase 2 (rc_mux_select): with every rank's address, a peer with the same
 * host identity (boot id + /dev/shm device + hostname, or RINGCOMM_HOST_ID)
 * gets shared memory, any other the network transport.  This rank itself
 * stays on shared memory (self-sends).  An unused network transport is
 * closed.  When every peer is on this host, comm->tp is the shared-memory
 * table itself (no dispatch, peer_tp NULL: exactly the single-host path);
 * otherwise comm->tp is the dispatch table below, which sends each data-path
 * op to comm->peer_tp[peer] and fans the per-communicator ops (events,
 * waits, kick, health, publish, abort) out to both transports.
 *
 * The host layout (hosts in order of their lowest rank, ranks in order on
 * each host) is filled here too; the hierarchical all-reduce uses it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport.h"

/* ---- dispatch ---- */

#define T(c, peer) ((c)->peer_tp[peer])

static rc_status_t mux_send_acquire(rc_comm_t *c, int lane, int peer, void **buf, int wait) {
    return T(c, peer)->send_acquire(c, lane, peer, buf, wait);
}

static rc_status_t mux_send_commit(rc_comm_t *c, int lane, int peer, const rc_desc_t *d) {
    return T(c, peer)->send_commit(c, lane, peer, d);
}

static rc_status_t mux_recv_acquire(rc_comm_t *c, int lane, int peer, const void **buf,
                                    rc_desc_t *d, int wait) {
    return T(c, peer)->recv_acquire(c, lane, peer, buf, d, wait);
}

static void mux_recv_release(rc_comm_t *c, int lane, int peer) {
    T(c, peer)->recv_release(c, lane, peer);
}

/* The sum of the transports' counters moves whenever one of them does
 * (each only grows). */
static uint32_t mux_events(rc_comm_t *c) {
    uint32_t sum = 0;
    for (int i = 0; i < c->ntps; i++) sum += c->tps[i]->events(c);
    return sum;
}

/* Wait for an event on either transport without sleeping on one while the
 * other has news: each transport's own wait (shared memory: spin, yield,
 * futex; network: poll) in turns of at most 200 us, so an event on the
 * other side waits at most one turn.  A kick wakes whichever one sleeps. */
#define MUX_TURN 200e-6
static void mux_wait_events(rc_comm_t *c, uint32_t seen, double max_s) {
    uint32_t base[4];
    uint32_t sum = 0;
    for (int i = 0; i < c->ntps; i++) sum += base[i] = c->tps[i]->events(c);
    if (sum != seen) return;
    double end = rc_now() + max_s;
    for (;;) {
        for (int i = 0; i < c->ntps; i++) {
            double left = end - rc_now();
            if (left <= 0) return;
            c->tps[i]->wait_events(c, base[i], left < MUX_TURN ? left : MUX_TURN);
            for (int j = 0; j < c->ntps; j++)
                if (c->tps[j]->events(c) != base[j]) return;
        }
    }
}

static void mux_kick(rc_comm_t *c) {
    for (int i = 0; i < c->ntps; i++) c->tps[i]->kick(c);
}

static rc_status_t mux_health(rc_comm_t *c, const char *doing) {
    for (int i = 0; i < c->ntps; i++) RC_CHECK(c->tps[i]->health(c, doing));
    return RC_OK;
}

static int mux_cma_ok(rc_comm_t *c, int peer) {
    return T(c, peer)->cma_ok ? T(c, peer)->cma_ok(c, peer) : 0;
}

/* only reached for peers whose transport offered cma_ok */
static rc_status_t mux_cma_read(rc_comm_t *c, int peer, void *dst, uint64_t remote, size_t len) {
    if (!T(c, peer)->cma_read)
        return rc_set_error(RC_ERR_INTERNAL, "rank %d: transport %s cannot read rank %d's memory",
                            c->rank, T(c, peer)->name, peer);
    return T(c, peer)->cma_read(c, peer, dst, remote, len);
}

static void mux_ack_set(rc_comm_t *c, int peer, uint32_t msg) {
    if (T(c, peer)->ack_set) T(c, peer)->ack_set(c, peer, msg);
}

static int mux_ack_take(rc_comm_t *c, int peer, uint32_t msg) {
    return T(c, peer)->ack_take ? T(c, peer)->ack_take(c, peer, msg) : 0;
}

static void mux_publish(rc_comm_t *c) {
    for (int i = 0; i < c->ntps; i++)
        if (c->tps[i]->publish) c->tps[i]->publish(c);
}

static void mux_abort(rc_comm_t *c, rc_status_t st, const char *msg) {
    for (int i = 0; i < c->ntps; i++)
        if (c->tps[i]->abort) c->tps[i]->abort(c, st, msg);
}

/* Not in rc_transports[]: never created, connected or closed itself. */
const rc_transport_ops_t rc_transport_mux = {
    .name = "mux",
    .send_acquire = mux_send_acquire,
    .send_commit = mux_send_commit,
    .recv_acquire = mux_recv_acquire,
    .recv_release = mux_recv_release,
    .events = mux_events,
    .wait_events = mux_wait_events,
    .kick = mux_kick,
    .health = mux_health,
    .cma_ok = mux_cma_ok,
    .cma_read = mux_cma_read,
    .ack_set = mux_ack_set,
    .ack_take = mux_ack_take,
    .publish = mux_publish,
    .abort = mux_abort,
};

rc_status_t rc_mux_others_health(rc_comm_t *comm, const rc_transport_ops_t *self,
                                 const char *doing) {
    for (int i = 0; i < comm->ntps; i++)
        if (comm->tps[i] != self) RC_CHECK(comm->tps[i]->health(comm, doing));
    return RC_OK;
}

/* ---- phase 1 ---- */

/* Is `name` an item of the comma list? */
static int listed(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0) return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

rc_status_t rc_mux_create(rc_comm_t *comm, const char *allow) {
    if (allow) {
        if (strlen(allow) >= sizeof comm->tp_allow)
            return rc_set_error(RC_ERR_INVALID_ARG, "RINGCOMM_TRANSPORT=%s: too long", allow);
        /* every name must be a transport of this build, shm among them */
        for (const char *p = allow; *p;) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            const rc_transport_ops_t *const *t = rc_transports;
            while (*t && (strlen((*t)->name) != len || strncmp((*t)->name, p, len) != 0)) t++;
            if (!*t)
                return rc_set_error(RC_ERR_INVALID_ARG, "RINGCOMM_TRANSPORT=%s: \"%.*s\" is not "
                                    "a transport of this build", allow, (int)len, p);
            p = e ? e + 1 : p + len;
        }
        if (!listed(allow, rc_transport_shm.name))
            return rc_set_error(RC_ERR_INVALID_ARG, "RINGCOMM_TRANSPORT=%s: a list of transports "
                                "chosen per peer must hold shm (one name forces that transport "
                                "for every peer)", allow);
        snprintf(comm->tp_allow, sizeof comm->tp_allow, "%s", allow);
    }
    comm->tp = &rc_transport_shm;
    comm->tps[comm->ntps++] = &rc_transport_shm;
    return rc_transport_shm.create(comm);
}

/* The network transport: the first of the table (after shm) that is
 * allowed, applies (MPI only for a communicator made from an MPI
 * communicator) and creates.  Created before any rank knows where the
 * others are, so that its address is in the blob; closed at connect when
 * every peer is on this host. */
rc_status_t rc_mux_address(rc_comm_t *comm) {
    if (comm->tp_forced || comm->net_tried || comm->size == 1) return RC_OK;
    comm->net_tried = 1;
    const char *allow = comm->tp_allow[0] ? comm->tp_allow : NULL;
    if (allow)
        snprintf(comm->net_err, sizeof comm->net_err, "RINGCOMM_TRANSPORT=%s names none", allow);
    else
        snprintf(comm->net_err, sizeof comm->net_err, "this build has no network transport");
    for (const rc_transport_ops_t *const *t = rc_transports; *t; t++) {
        if (*t == &rc_transport_shm || (allow && !listed(allow, (*t)->name))) continue;
        if (!strcmp((*t)->name, "mpi") && !comm->has_mpi) {
            snprintf(comm->net_err, sizeof comm->net_err, "mpi: this communicator was not made "
                     "from an MPI communicator");
            continue;
        }
        comm->tps[comm->ntps++] = *t;
        rc_status_t st = (*t)->create(comm);
        if (st == RC_OK) {
            comm->net_err[0] = 0;
            return RC_OK;
        }
        /* e.g. no usable interface: needed only if a peer is on another
         * host, which connect will tell */
        snprintf(comm->net_err, sizeof comm->net_err, "%s: %s", (*t)->name, rc_last_error());
        RC_LOG(RC_INFO, "rank %d: no %s transport: %s", comm->rank, (*t)->name, rc_last_error());
        if ((*t)->close) (*t)->close(comm);
        comm->ntps--;
    }
    return RC_OK;
}

/* ---- phase 2 ---- */

/* Hosts in order of their lowest rank; the layout is uniform when every
 * host holds the same number of ranks. */
static rc_status_t host_layout(rc_comm_t *comm, const rc_addr_t *addrs) {
    const int p = comm->size;
    int *host = malloc((size_t)p * sizeof *host), *count = calloc((size_t)p, sizeof *count);
    if (!host || !count) {
        free(host);
        free(count);
        return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", comm->rank);
    }
    int nh = 0;
    for (int r = 0; r < p; r++) {
        host[r] = -1;
        for (int q = 0; q < r && host[r] < 0; q++)
            if (strncmp(addrs[q].host, addrs[r].host, sizeof addrs[r].host) == 0) host[r] = host[q];
        if (host[r] < 0) host[r] = nh++;
        if (r == comm->rank) {
            comm->host_idx = host[r];
            comm->local_idx = count[host[r]];
        }
        count[host[r]]++;
    }
    comm->nhosts = nh;
    comm->local_size = count[0];
    for (int h = 1; h < nh; h++)
        if (count[h] != count[0]) comm->local_size = 0;
    free(comm->host_ranks);
    comm->host_ranks = NULL;
    if (comm->local_size) {
        comm->host_ranks = malloc((size_t)p * sizeof *comm->host_ranks);
        if (!comm->host_ranks) {
            free(host);
            free(count);
            return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", comm->rank);
        }
        memset(count, 0, (size_t)p * sizeof *count);
        for (int r = 0; r < p; r++)
            comm->host_ranks[host[r] * comm->local_size + count[host[r]]++] = r;
    }
    free(host);
    free(count);
    return RC_OK;
}

static void drop_tp(rc_comm_t *comm, int i) {
    if (comm->tps[i]->close) comm->tps[i]->close(comm);
    for (int j = i; j + 1 < comm->ntps; j++) comm->tps[j] = comm->tps[j + 1];
    comm->ntps--;
}

rc_status_t rc_mux_select(rc_comm_t *comm, const rc_addr_t *addrs) {
    const int p = comm->size, me = comm->rank;
    const rc_addr_t *self = &addrs[me];
    RC_CHECK(host_layout(comm, addrs));
    if (comm->tp_forced) {
        for (int r = 0; r < p; r++)
            if (!comm->tp->can_connect(self, &addrs[r]))
                return rc_set_error(RC_ERR_NOT_SUPPORTED,
                                    "comm_connect on rank %d: RINGCOMM_TRANSPORT=%s cannot reach "
                                    "rank %d on another host (%s vs %s)",
                                    me, comm->tp->name, r, addrs[r].host, self->host);
        return RC_OK;
    }
    const rc_transport_ops_t *net = comm->ntps > 1 ? comm->tps[1] : NULL;
    const rc_transport_ops_t **choice = malloc((size_t)p * sizeof *choice);
    if (!choice) return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", me);
    int remote = 0;
    for (int r = 0; r < p; r++) {
        if (r == me || rc_transport_shm.can_connect(self, &addrs[r])) {
            choice[r] = &rc_transport_shm;
        } else if (net && net->can_connect(self, &addrs[r])) {
            choice[r] = net;
            remote++;
        } else {
            free(choice);
            return rc_set_error(RC_ERR_NOT_SUPPORTED,
                                "comm_connect on rank %d: rank %d is on another host (%s vs %s) "
                                "and no network transport reaches it (%s)",
                                me, r, addrs[r].host, self->host,
                                net ? "it cannot connect those addresses" : comm->net_err);
        }
    }
    if (!remote) {
        /* one host: the shared-memory table itself, no dispatch */
        free(choice);
        while (comm->ntps > 1) drop_tp(comm, comm->ntps - 1);
        comm->tp = &rc_transport_shm;
        return RC_OK;
    }
    free(comm->peer_tp);
    comm->peer_tp = choice;
    comm->tp = &rc_transport_mux;
    return RC_OK;
}
