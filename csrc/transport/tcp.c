/* tcp.c - any-host transport over plain TCP sockets (no MPI needed).
 *
 * Setup (two phases, as gloo does):
 *   create   opens a non-blocking listening socket on the interface chosen by
 *            RINGCOMM_SOCKET_IFNAME ("eth0", "eth,ib" = name prefixes,
 *            "=eth0" = exact names, "^lo,docker" = anything but these
 *            prefixes; default: the first up non-loopback interface with an
 *            IPv4 address, else a global IPv6 one, else loopback;
 *            RINGCOMM_SOCKET_FAMILY=4|6 restricts the family), port chosen by
 *            the kernel; `address` writes family/port/IP/interface into
 *            rc_addr_t.net (tcp_netaddr_t below).
 *   connect  one connection per peer pair: the lower rank connects to the
 *            higher rank's listener (retrying with backoff until the
 *            deadline), the higher accepts.  Every connection opens with a
 *            hello (tcp_hello_t: magic, version, size of the hello, rank,
 *            communicator size, the communicator's token, and the sender's
 *            communicator-wide tuning; native byte order: a peer of the other
 *            endianness fails the magic).  The acceptor reads exactly one
 *            hello and checks it: wrong magic/version/size/token, a rank that
 *            should not connect to it, a rank already connected, or a short
 *            header (EOF first, or nothing complete by the deadline) -> that
 *            socket is closed and logged (RC_LOG(RC_WARN)), never trusted, and
 *            accepting goes on until every expected rank arrived (else
 *            RC_ERR_TIMEOUT naming the missing ranks).  A valid hello is
 *            answered with the acceptor's own hello, which the connector checks
 *            the same way (else it retries: a stale address or a listener that
 *            is not ours).  The peers of rank 0 adopt rank 0's tuning from its
 *            hello (chunk size, slots, RINGCOMM_ALGO and the "auto"
 *            thresholds), as shm.c takes them from rank 0's header.  Then the
 *            listener is closed.  Sockets: non-blocking, TCP_NODELAY,
 *            SO_SNDBUF/SO_RCVBUF of RINGCOMM_SOCKET_BUF bytes (4 MiB).
 *
 * Data: frames on the one socket of a pair, in each direction:
 *
 *   [tcp_frame_t 40 B: type, lane, check, credits[2], arg, rc_desc_t][payload]
 *
 *   DATA   a message of `lane` (rc_desc_t.bytes of payload, <= chunk_bytes,
 *          checked before a byte of payload is read)
 *   CREDIT nothing but the credits (below)
 *   DESC   the collective the sender waits in (sent once per call after
 *          0.1 s of waiting: mismatch detection and the stall report)
 *   ABORT  the communicator failed on the sender: arg = status,
 *          desc.root = the rank, payload = the message (<= 1023 B)
 *   BYE    the sender closed its communicator after flushing everything;
 *          its EOF that follows is not a crash
 *
 * Flow control (credits), so that the two lanes never block each other and
 * the receiver can always drain the socket: each side has `nslots` receive
 * slots of chunk_bytes per (peer, lane), and every frame header carries the
 * sender's cumulative count of released receive slots per lane
 * (credits[lane], 32-bit, wrapping).  A sender writes DATA frame k of a lane
 * only when k - credits_seen[lane] < nslots, i.e. the receiver has a free
 * slot for it.  So the reader never meets a DATA frame without a slot: it
 * reads every frame as it comes, header first, then the payload straight
 * into the lane's next receive slot (no staging copy), and the lane the
 * consumer is not draining (say a pending p2p message) can never hold up the
 * other lane's frames behind it in the byte stream.  A frame over the credit
 * or over chunk_bytes, or credits for frames never sent, is a protocol
 * error (the communicator fails, naming the peer).  Releasing a slot
 * (recv_release) returns its credit at once: in the header of the next frame
 * going to that peer, or a 40-byte CREDIT frame if none is ready.
 *
 * Sender side: send_acquire lends one of `nslots` staging slots per (peer,
 * lane); send_commit queues it and tries to write at once (sendmsg of
 * header + slot: no copy besides the kernel's).  Frames of the two lanes
 * alternate; a partly written frame is finished before any other.  Every
 * wait (and every acquire, commit, release and health check) progresses all
 * sockets: reads into free slots, writes what credits allow.  Waits spin
 * briefly (a core per rank), then sleep in poll() on all sockets (and the
 * kick eventfd for wait_events), so two ranks sending to each other never
 * deadlock and 4 ranks on 2 cores do not burn CPU.
 *
 * Failure: EOF or a socket error without a BYE first -> RC_ERR_PEER_LOST
 * "rank R (pid P, host H) closed its connection ..." in the next wait or
 * health check; a BYE'd peer is an error only when this rank waits for it.
 * abort() writes an ABORT frame to every peer (finishing a partly written
 * frame first, 1 s at most); receivers fail with the sender's status and
 * text.  close() flushes queued frames (bounded by the timeout, at most
 * 30 s), sends BYE, and closes every descriptor.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../p2p.h"
#include "transport.h"

#define TCP_MAGIC 0x50544352u /* "RCTP" */
#define TCP_VERSION 1
#define TCP_CHECK 0x5246u     /* "FR": every frame header */
#define TCP_ABORT_MAX 1023
#define TCP_MAX_PENDING 64    /* accepted sockets whose hello is not read yet */
#define TCP_CHUNK (512 * 1024) /* default chunk when every peer is on tcp */

enum { TCP_DATA = 1, TCP_CREDIT = 2, TCP_DESC = 3, TCP_ABORT = 4, TCP_BYE = 5 };

/* rc_addr_t.net */
typedef struct {
    uint16_t family; /* 4 or 6 */
    uint16_t port;   /* host byte order */
    uint32_t scope;
    uint8_t ip[16];
    char ifname[16];
} tcp_netaddr_t;
_Static_assert(sizeof(tcp_netaddr_t) <= sizeof(((rc_addr_t *)0)->net), "net address");

typedef struct {
    uint32_t magic;
    uint16_t version;
    uint16_t bytes; /* sizeof(tcp_hello_t) */
    int32_t rank;
    int32_t size;
    char token[48];
    /* the sender's communicator-wide tuning: checked (comm_connect already
     * adopted rank 0's from its address blob, "auto" thresholds included) */
    uint64_t chunk_bytes;
    uint32_t nslots;
    int32_t algo_env;
    uint64_t unused0, unused1, stream_min; /* were "auto" thresholds (tune.c now) */
} tcp_hello_t;
_Static_assert(sizeof(tcp_hello_t) == 104, "hello layout (tests build it in Python)");

typedef struct {
    uint8_t type;
    uint8_t lane;
    uint16_t check;      /* TCP_CHECK */
    uint32_t credits[RC_NLANES];
    int32_t arg;
    rc_desc_t desc;
} tcp_frame_t;
_Static_assert(sizeof(tcp_frame_t) == 40, "frame header layout");

typedef struct {
    char *buf;           /* nslots x chunk_bytes */
    rc_desc_t *desc;     /* nslots */
    uint32_t posted;     /* tx: committed; rx: frames fully received */
    uint32_t done;       /* tx: fully written; rx: released by the consumer */
    uint32_t credit;     /* tx: receive slots the peer released (cumulative) */
} tcp_queue_t;

typedef struct {
    int fd;              /* -1: none (not a tcp peer, or closed) */
    int rank;
    int bye;             /* the peer said BYE */
    int lost;            /* EOF or an error (why in `why`) */
    int err;             /* errno of the loss (0: EOF) */
    int wdead;           /* writing failed (errno): the peer closed; still read what it sent */
    int32_t pid;
    char host[64];       /* "ip:port" of its listener, for messages */
    tcp_hello_t hello;   /* what it said at connect */
    tcp_queue_t tx[RC_NLANES], rx[RC_NLANES];
    uint32_t cred_sent[RC_NLANES];
    int desc_dirty, bye_pending;
    int next_lane;
    /* the frame being written */
    tcp_frame_t whdr;
    const char *wpay;
    size_t woff, wlen;
    int wlane;
    /* the frame being read */
    tcp_frame_t rhdr;
    int rpay;            /* reading the payload */
    char *rdst;
    size_t roff, rlen;
    char abort_buf[TCP_ABORT_MAX + 1];
    char proto[200];     /* a protocol error it made (the connection is closed) */
    /* the last collective it was seen in (DATA on the coll lane or DESC) */
    rc_desc_t last;
    int have_last;
} tcp_peer_t;

struct rc_tcp {
    int lfd, efd;
    tcp_netaddr_t self;
    char self_str[80];
    _Atomic uint32_t events;
    tcp_peer_t *peers;   /* [size] */
    int *act;            /* connected peer ranks */
    int nact;
    struct pollfd *pfd;  /* nact + 1 */
    struct pollfd *hpfd; /* nact: the helper's */
    int spin;
    size_t sockbuf;
    /* an ABORT received */
    int abort_seen;
    rc_status_t abort_st;
    int abort_rank;
    char abort_msg[TCP_ABORT_MAX + 1];
    int aborted;         /* this rank sent its ABORT */
    rc_desc_t pub;       /* publish(): the call in progress */
    int pub_sent;
    int trouble;         /* a connection was lost or an abort arrived: check */
    /* Every operation holds mu (recursive: waits run the p2p engine, which
     * calls back in).  The helper thread writes queued frames while the
     * executor stays away (see tcp_helper). */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t helper;
    int helper_on, helper_stop, helper_asleep;
    uint64_t ops;        /* operations entered (the helper watches it) */
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void bump(struct rc_tcp *t) { atomic_fetch_add_explicit(&t->events, 1, memory_order_seq_cst); }

/* ------------------------------------------------------------------ */
/* addresses and interfaces                                            */

static void net_to_sockaddr(const tcp_netaddr_t *n, struct sockaddr_storage *ss, socklen_t *len) {
    memset(ss, 0, sizeof *ss);
    if (n->family == 6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(n->port);
        s6->sin6_scope_id = n->scope;
        memcpy(&s6->sin6_addr, n->ip, 16);
        *len = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(n->port);
        memcpy(&s4->sin_addr, n->ip, 4);
        *len = sizeof *s4;
    }
}

static void net_format(const tcp_netaddr_t *n, char *buf, size_t len) {
    char ip[INET6_ADDRSTRLEN] = "?";
    inet_ntop(n->family == 6 ? AF_INET6 : AF_INET, n->ip, ip, sizeof ip);
    if (n->family == 6) snprintf(buf, len, "[%s]:%u", ip, n->port);
    else snprintf(buf, len, "%s:%u", ip, n->port);
}

/* Does interface `name` pass the RINGCOMM_SOCKET_IFNAME filter `spec`? */
static int iface_match(const char *spec, const char *name) {
    int exclude = 0, exact = 0;
    if (*spec == '^') exclude = 1, spec++;
    if (*spec == '=') exact = 1, spec++;
    int hit = 0;
    while (*spec && !hit) {
        size_t n = strcspn(spec, ",");
        if (n > 0) hit = exact ? strlen(name) == n && !strncmp(name, spec, n) : !strncmp(name, spec, n);
        spec += n;
        if (*spec == ',') spec++;
    }
    return exclude ? !hit : hit;
}

static int ip6_usable(const struct in6_addr *a) {
    return !IN6_IS_ADDR_LINKLOCAL(a) && !IN6_IS_ADDR_UNSPECIFIED(a);
}

/* Pick the listening address; RC_OK and *out, or an error naming what exists. */
static rc_status_t tcp_pick_iface(rc_comm_t *comm, tcp_netaddr_t *out) {
    const char *spec = getenv("RINGCOMM_SOCKET_IFNAME");
    long long fam = rc_env_ll("RINGCOMM_SOCKET_FAMILY", 0);
    if (spec && !*spec) spec = NULL;
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0)
        return rc_set_error(RC_ERR_IO, "rank %d: getifaddrs failed: %s", comm->rank, strerror(errno));
    /* passes: 0 IPv4 non-loopback, 1 IPv6 non-loopback, 2 IPv4 loopback, 3 IPv6 loopback
     * (with a filter the user's choice may be the loopback: passes 2-3 then too) */
    int found = 0;
    for (int pass = 0; pass < 4 && !found; pass++) {
        int want6 = pass & 1, loop = pass >= 2;
        if ((fam == 4 && want6) || (fam == 6 && !want6)) continue;
        for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
            if (!i->ifa_addr || !(i->ifa_flags & IFF_UP)) continue;
            if (!!(i->ifa_flags & IFF_LOOPBACK) != loop) continue;
            if (spec && !iface_match(spec, i->ifa_name)) continue;
            memset(out, 0, sizeof *out);
            if (!want6 && i->ifa_addr->sa_family == AF_INET) {
                out->family = 4;
                memcpy(out->ip, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, 4);
            } else if (want6 && i->ifa_addr->sa_family == AF_INET6 &&
                       ip6_usable(&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr)) {
                out->family = 6;
                memcpy(out->ip, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, 16);
            } else {
                continue;
            }
            snprintf(out->ifname, sizeof out->ifname, "%s", i->ifa_name);
            found = 1;
        }
    }
    if (!found) {
        char have[256] = "";
        size_t n = 0;
        for (struct ifaddrs *i = ifs; i && n + 20 < sizeof have; i = i->ifa_next)
            if (i->ifa_addr && (i->ifa_addr->sa_family == AF_INET || i->ifa_addr->sa_family == AF_INET6) &&
                (i->ifa_flags & IFF_UP) && !strstr(have, i->ifa_name))
                n += (size_t)snprintf(have + n, sizeof have - n, "%s%s", n ? ", " : "", i->ifa_name);
        freeifaddrs(ifs);
        return rc_set_error(RC_ERR_INVALID_ARG,
                            "rank %d: no up network interface with an IP%s address matches "
                            "RINGCOMM_SOCKET_IFNAME=%s (up interfaces with addresses: %s)",
                            comm->rank, fam == 4 ? "v4" : fam == 6 ? "v6" : "", spec ? spec : "(unset)",
                            n ? have : "none");
    }
    freeifaddrs(ifs);
    return RC_OK;
}

static void sock_tune(int fd, size_t bytes) {
    int one = 1, b = (int)bytes;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (b > 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, sizeof b);
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof b);
    }
}

/* ------------------------------------------------------------------ */
/* phase 1                                                             */

static rc_status_t tcp_create(rc_comm_t *comm) {
    struct rc_tcp *t = calloc(1, sizeof *t);
    if (!t) return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", comm->rank);
    comm->tcp = t;
    t->lfd = -1;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&t->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_cond_init(&t->cv, NULL);
    t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->efd < 0) return rc_set_error(RC_ERR_IO, "rank %d: eventfd failed: %s", comm->rank, strerror(errno));
    t->sockbuf = (size_t)rc_env_ll("RINGCOMM_SOCKET_BUF", 4 << 20);
    /* Every peer over TCP: bigger chunks amortize the two system calls per
     * frame and the credit round trips (16 MiB all-reduce at 2 ranks: 128 KiB
     * chunks ~1.7x slower than 512 KiB here); an explicit setting wins. */
    if (comm->tp == &rc_transport_tcp && !getenv("RINGCOMM_CHUNK_BYTES") &&
        comm->chunk_bytes < TCP_CHUNK) {
        comm->chunk_bytes = TCP_CHUNK;
        comm->chunk_given = 1;
    }
    if (comm->size == 1) return RC_OK; /* nobody to talk to */
    RC_CHECK(tcp_pick_iface(comm, &t->self));
    struct sockaddr_storage ss;
    socklen_t len;
    net_to_sockaddr(&t->self, &ss, &len);
    if (t->self.family == 6 && IN6_IS_ADDR_LINKLOCAL((struct in6_addr *)t->self.ip))
        t->self.scope = if_nametoindex(t->self.ifname);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return rc_set_error(RC_ERR_IO, "rank %d: socket failed: %s", comm->rank, strerror(errno));
    t->lfd = fd;
    sock_tune(fd, t->sockbuf); /* accepted sockets inherit the buffer sizes */
    char where[80];
    net_format(&t->self, where, sizeof where);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, SOMAXCONN) != 0)
        return rc_set_error(RC_ERR_IO, "rank %d: cannot listen on %s (interface %s): %s", comm->rank,
                            where, t->self.ifname, strerror(errno));
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return rc_set_error(RC_ERR_IO, "rank %d: getsockname failed: %s", comm->rank, strerror(errno));
    t->self.port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    net_format(&t->self, t->self_str, sizeof t->self_str);
    RC_LOG(RC_INFO, "rank %d: tcp listening on %s (interface %s)", comm->rank, t->self_str,
           t->self.ifname);
    return RC_OK;
}

static void tcp_address(rc_comm_t *comm, rc_addr_t *a) {
    if (comm->tcp) memcpy(a->net, &comm->tcp->self, sizeof comm->tcp->self);
}

static int tcp_can_connect(const rc_addr_t *self, const rc_addr_t *peer) {
    tcp_netaddr_t n;
    memcpy(&n, peer->net, sizeof n);
    return self == peer || ((n.family == 4 || n.family == 6) && n.port != 0);
}

/* ------------------------------------------------------------------ */
/* data path: reading and writing frames                               */

/* The connection to p broke (EOF: err == 0).  Not an error after its BYE. */
static void tcp_lost(struct rc_tcp *t, tcp_peer_t *p, int err) {
    if (p->fd >= 0) close(p->fd);
    p->fd = -1;
    p->lost = 1;
    p->err = err;
    p->wlen = 0;
    t->trouble = 1;
    bump(t);
}

static void tcp_peer_words(const tcp_peer_t *p, char *buf, size_t len) {
    snprintf(buf, len, "rank %d (pid %d, host %s) %s", p->rank, (int)p->pid, p->host,
             p->bye ? "closed its communicator" : "closed its connection");
    if (p->err) {
        size_t n = strlen(buf);
        snprintf(buf + n, len - n, " (%s)", strerror(p->err));
    }
}

/* Recorded here, reported by the next check (tcp_check_peers): the helper
 * thread may be the one reading. */
static rc_status_t tcp_protocol_error(rc_comm_t *comm, tcp_peer_t *p, const char *why) {
    struct rc_tcp *t = comm->tcp;
    snprintf(p->proto, sizeof p->proto, "%s", why);
    tcp_lost(t, p, 0);
    return RC_ERR_INTERNAL;
}

/* Credits in any frame header: receive slots the peer released. */
static rc_status_t tcp_take_credits(rc_comm_t *comm, tcp_peer_t *p, const tcp_frame_t *h) {
    for (int l = 0; l < RC_NLANES; l++) {
        tcp_queue_t *q = &p->tx[l];
        uint32_t gain = h->credits[l] - q->credit, sent = q->done - q->credit;
        if (gain > sent) {
            char why[160];
            snprintf(why, sizeof why, "lane %d: credits for %u frames, only %u sent", l, gain, sent);
            return tcp_protocol_error(comm, p, why);
        }
        q->credit = h->credits[l];
    }
    return RC_OK;
}

/* A complete frame (header, and payload when it has one). */
static void tcp_frame_done(struct rc_tcp *t, rc_comm_t *comm, tcp_peer_t *p) {
    tcp_frame_t *h = &p->rhdr;
    if (h->type == TCP_DATA) {
        tcp_queue_t *q = &p->rx[h->lane];
        q->desc[q->posted % comm->nslots] = h->desc;
        q->posted++;
        if (h->lane == RC_LANE_COLL) {
            p->last = h->desc;
            p->have_last = 1;
        } else {
            bump(t);
        }
    } else if (h->type == TCP_ABORT && !t->abort_seen) {
        p->abort_buf[p->rlen] = 0;
        t->abort_seen = 1;
        t->abort_st = (rc_status_t)h->arg;
        t->abort_rank = p->rank;
        snprintf(t->abort_msg, sizeof t->abort_msg, "%s", p->abort_buf);
        t->trouble = 1;
        bump(t);
    }
    p->rpay = 0;
    p->roff = 0;
}

/* A complete header: check it before reading any payload. */
static rc_status_t tcp_header(rc_comm_t *comm, tcp_peer_t *p) {
    tcp_frame_t *h = &p->rhdr;
    char why[200];
    if (h->check != TCP_CHECK || h->type < TCP_DATA || h->type > TCP_BYE || h->lane >= RC_NLANES) {
        snprintf(why, sizeof why, "bad frame header (type %u, lane %u, check 0x%x)", h->type,
                 h->lane, h->check);
        return tcp_protocol_error(comm, p, why);
    }
    RC_CHECK(tcp_take_credits(comm, p, h));
    p->rlen = 0;
    p->rdst = NULL;
    switch (h->type) {
    case TCP_DATA: {
        tcp_queue_t *q = &p->rx[h->lane];
        if (h->desc.bytes > comm->chunk_bytes) {
            snprintf(why, sizeof why, "a frame of %u payload bytes on lane %u exceeds the %zu-byte chunk",
                     h->desc.bytes, h->lane, comm->chunk_bytes);
            return tcp_protocol_error(comm, p, why);
        }
        if (q->posted - q->done >= comm->nslots) {
            snprintf(why, sizeof why, "a frame on lane %u beyond its %u credits", h->lane, comm->nslots);
            return tcp_protocol_error(comm, p, why);
        }
        p->rdst = q->buf + (size_t)(q->posted % comm->nslots) * comm->chunk_bytes;
        p->rlen = h->desc.bytes;
        break;
    }
    case TCP_DESC:
        p->last = h->desc;
        p->have_last = 1;
        break;
    case TCP_ABORT:
        if (h->desc.bytes > TCP_ABORT_MAX || h->arg >= 0) {
            snprintf(why, sizeof why, "an abort frame with status %d and %u bytes of text", h->arg,
                     h->desc.bytes);
            return tcp_protocol_error(comm, p, why);
        }
        p->rdst = p->abort_buf;
        p->rlen = h->desc.bytes;
        break;
    case TCP_BYE:
        p->bye = 1;
        break;
    default:
        break;
    }
    p->rpay = 1;
    p->roff = 0;
    return RC_OK;
}

/* Read whatever the socket holds; *moved counts complete frames. */
static rc_status_t tcp_read(rc_comm_t *comm, tcp_peer_t *p, int *moved) {
    struct rc_tcp *t = comm->tcp;
    while (p->fd >= 0) {
        if (p->rpay && p->roff == p->rlen) {
            tcp_frame_done(t, comm, p);
            (*moved)++;
            continue;
        }
        char *dst = p->rpay ? p->rdst + p->roff : (char *)&p->rhdr + p->roff;
        size_t want = p->rpay ? p->rlen - p->roff : sizeof p->rhdr - p->roff;
        ssize_t n = recv(p->fd, dst, want, MSG_DONTWAIT);
        if (n > 0) {
            p->roff += (size_t)n;
            if (!p->rpay && p->roff == sizeof p->rhdr) RC_CHECK(tcp_header(comm, p));
            continue;
        }
        if (n == 0) {
            tcp_lost(t, p, 0);
        } else if (errno == EINTR) {
            continue;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            tcp_lost(t, p, errno);
        }
        break;
    }
    return RC_OK;
}

static int tcp_lane_sendable(const tcp_queue_t *q, uint32_t nslots) {
    return q->done != q->posted && q->done - q->credit < nslots;
}

/* Something to write to p (a partial frame, credits, DESC, data, BYE)? */
static int tcp_want_write(const rc_comm_t *comm, const tcp_peer_t *p) {
    if (p->fd < 0 || p->wdead) return 0;
    if (p->wlen || p->desc_dirty) return 1;
    for (int l = 0; l < RC_NLANES; l++)
        if (p->cred_sent[l] != p->rx[l].done || tcp_lane_sendable(&p->tx[l], comm->nslots)) return 1;
    return p->bye_pending && p->tx[0].posted == p->tx[0].done && p->tx[1].posted == p->tx[1].done;
}

/* Choose the next frame to write; 0 when there is none. */
static int tcp_next_frame(rc_comm_t *comm, tcp_peer_t *p) {
    struct rc_tcp *t = comm->tcp;
    tcp_frame_t *h = &p->whdr;
    memset(h, 0, sizeof *h);
    h->check = TCP_CHECK;
    p->wpay = NULL;
    p->wlen = sizeof *h;
    p->woff = 0;
    int dirty = 0;
    for (int l = 0; l < RC_NLANES; l++) dirty |= p->cred_sent[l] != p->rx[l].done;
    if (p->desc_dirty) {
        h->type = TCP_DESC;
        h->desc = t->pub;
        p->desc_dirty = 0;
    } else {
        int lane = -1;
        for (int k = 0; k < RC_NLANES && lane < 0; k++) {
            int l = (p->next_lane + k) % RC_NLANES;
            if (tcp_lane_sendable(&p->tx[l], comm->nslots)) lane = l;
        }
        if (lane >= 0) {
            tcp_queue_t *q = &p->tx[lane];
            uint32_t i = q->done % comm->nslots;
            h->type = TCP_DATA;
            h->lane = (uint8_t)lane;
            h->desc = q->desc[i];
            p->wpay = q->buf + (size_t)i * comm->chunk_bytes;
            p->wlen += h->desc.bytes;
            p->wlane = lane;
            p->next_lane = (lane + 1) % RC_NLANES;
        } else if (dirty) {
            h->type = TCP_CREDIT;
        } else if (p->bye_pending && p->tx[0].posted == p->tx[0].done &&
                   p->tx[1].posted == p->tx[1].done) {
            h->type = TCP_BYE; /* after every queued frame */
            p->bye_pending = 0;
        } else {
            p->wlen = 0;
            return 0;
        }
    }
    for (int l = 0; l < RC_NLANES; l++) h->credits[l] = p->cred_sent[l] = p->rx[l].done;
    return 1;
}

/* Write what can be written without blocking. */
static void tcp_write(rc_comm_t *comm, tcp_peer_t *p, int *moved) {
    struct rc_tcp *t = comm->tcp;
    while (p->fd >= 0 && !p->wdead) {
        if (!p->wlen && !tcp_next_frame(comm, p)) return;
        struct iovec iov[2];
        int n = 0;
        size_t hb = sizeof p->whdr;
        if (p->woff < hb) {
            iov[n].iov_base = (char *)&p->whdr + p->woff;
            iov[n++].iov_len = hb - p->woff;
        }
        if (p->wlen > hb) {
            size_t off = p->woff > hb ? p->woff - hb : 0;
            iov[n].iov_base = (char *)p->wpay + off;
            iov[n++].iov_len = p->wlen - hb - off;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(p->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                /* The peer closed its end (EPIPE/ECONNRESET), but what it
                 * sent before - the rest of a message, its BYE - may still
                 * wait in our receive buffer: stop writing, keep reading;
                 * the read side reports the loss at EOF (an error only
                 * without a BYE, or for a rank waiting on this peer). */
                p->wdead = errno;
                p->wlen = 0;
            }
            return;
        }
        p->woff += (size_t)w;
        if (p->woff < p->wlen) continue;
        if (p->whdr.type == TCP_DATA) {
            p->tx[p->wlane].done++;
            if (p->wlane == RC_LANE_P2P) bump(t);
        }
        p->wlen = 0;
        (*moved)++;
    }
}

/* Progress every connection once, without blocking: > 0 frames moved. */
static rc_status_t tcp_progress(rc_comm_t *comm, int *moved) {
    struct rc_tcp *t = comm->tcp;
    int m = 0;
    for (int i = 0; i < t->nact; i++) {
        tcp_peer_t *p = &t->peers[t->act[i]];
        if (p->fd < 0) continue;
        if (tcp_read(comm, p, &m) == RC_OK) tcp_write(comm, p, &m); /* else: p->proto */
    }
    if (moved) *moved = m;
    return RC_OK;
}

/* Sleep in poll() on every connection (and the kick eventfd) for at most ms. */
static void tcp_poll(rc_comm_t *comm, int ms, int with_kick) {
    struct rc_tcp *t = comm->tcp;
    int n = 0;
    for (int i = 0; i < t->nact; i++) {
        tcp_peer_t *p = &t->peers[t->act[i]];
        if (p->fd < 0) continue;
        t->pfd[n].fd = p->fd;
        t->pfd[n].events = (short)(POLLIN | (tcp_want_write(comm, p) ? POLLOUT : 0));
        t->pfd[n++].revents = 0;
    }
    if (with_kick) {
        t->pfd[n].fd = t->efd;
        t->pfd[n].events = POLLIN;
        t->pfd[n++].revents = 0;
    }
    if (n == 0) {
        struct timespec ts = {0, (long)ms * 1000000L};
        nanosleep(&ts, NULL);
        return;
    }
    poll(t->pfd, (nfds_t)n, ms);
    if (with_kick) {
        uint64_t v;
        while (read(t->efd, &v, sizeof v) > 0) {}
    }
}

/* ------------------------------------------------------------------ */
/* failures                                                            */

static rc_status_t tcp_check_abort(rc_comm_t *comm) {
    struct rc_tcp *t = comm->tcp;
    if (RC_LIKELY(!t->abort_seen)) return RC_OK;
    if (comm->broken) return rc_set_error(comm->broken, "%s", comm->broken_msg);
    return rc_comm_adopt_abort(comm, t->abort_rank, t->abort_st, t->abort_msg, &rc_transport_tcp);
}

/* Abort record, then lost connections: any peer lost without a BYE, or
 * `peer` (>= 0, the one this rank waits for) gone after its BYE. */
static rc_status_t tcp_check_peers(rc_comm_t *comm, int peer, const char *doing) {
    struct rc_tcp *t = comm->tcp;
    RC_CHECK(tcp_check_abort(comm));
    for (int i = 0; i < t->nact; i++) {
        tcp_peer_t *p = &t->peers[t->act[i]];
        if (p->proto[0])
            return rc_comm_fail(comm, RC_ERR_INTERNAL, "rank %d: corrupt stream from rank %d (host "
                                "%s): %s; connection closed (rank %d was %s)", comm->rank, p->rank,
                                p->host, p->proto, comm->rank, doing);
        if (!p->lost || (p->bye && p->rank != peer)) continue;
        char who[200];
        tcp_peer_words(p, who, sizeof who);
        return rc_comm_fail(comm, RC_ERR_PEER_LOST, "%s: rank %d was %s", who, comm->rank, doing);
    }
    return RC_OK;
}

static rc_status_t tcp_health_locked(rc_comm_t *comm, const char *doing) {
    int moved;
    RC_CHECK(tcp_progress(comm, &moved));
    return tcp_check_peers(comm, -1, doing);
}

/* Ranks not in this collective as far as this rank knows (stall report). */
static void tcp_stragglers(rc_comm_t *comm, char *buf, size_t len) {
    struct rc_tcp *t = comm->tcp;
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; i < t->nact && n + 80 < len; i++) {
        tcp_peer_t *p = &t->peers[t->act[i]];
        if (p->have_last && p->last.seq == comm->cur.desc.seq && p->last.coll != RC_COLL_NONE) continue;
        char last[180] = "no collective yet";
        if (p->have_last && p->last.coll != RC_COLL_NONE) {
            memcpy(last, "last in ", 8);
            rc_desc_format(&p->last, last + 8, sizeof last - 8);
        }
        n += (size_t)snprintf(buf + n, len - n, "%s%d (%s)", n ? ", " : "", p->rank, last);
    }
    if (!n) snprintf(buf, len, "none (every rank is in this call)");
}

static rc_status_t tcp_slow_checks(rc_comm_t *comm, int peer, double t0, const char *what,
                                   int *warned) {
    struct rc_tcp *t = comm->tcp;
    double waited = rc_now() - t0;
    /* waiting a while: tell the peers which call this is (mismatches, stall report) */
    if (waited > 0.1 && !t->pub_sent && comm->cur.desc.coll != RC_COLL_NONE) {
        t->pub_sent = 1;
        for (int i = 0; i < t->nact; i++) t->peers[t->act[i]].desc_dirty = 1;
    }
    for (int i = 0; i < t->nact; i++) {
        tcp_peer_t *p = &t->peers[t->act[i]];
        if (p->have_last && p->last.seq == comm->cur.desc.seq && p->last.coll != RC_COLL_NONE &&
            !rc_desc_equal(&p->last, &comm->cur.desc))
            return rc_comm_mismatch(comm, p->rank, &p->last);
    }
    /* the peer's host in the warning and the timeout: on a cluster the rank
     * number alone does not say which machine or link to look at */
    char via[96];
    snprintf(via, sizeof via, " (tcp, host %s)", t->peers[peer].host);
    return rc_comm_wait_check(comm, t0, what, peer, via, "", tcp_stragglers, warned);
}

static int tcp_ready(rc_comm_t *comm, tcp_peer_t *p, int lane, int send) {
    if (send) return p->tx[lane].posted - p->tx[lane].done < comm->nslots;
    return p->rx[lane].posted != p->rx[lane].done;
}

/* Wait (collective path) until `peer`'s lane has a free send slot or a
 * message; all sockets progress meanwhile, and pending p2p work too. */
static rc_status_t __attribute__((noinline))
tcp_wait(rc_comm_t *comm, int peer, int lane, int send) {
    struct rc_tcp *t = comm->tcp;
    tcp_peer_t *p = &t->peers[peer];
    const char *what = send ? "send to" : "receive from";
    double t0 = 0, next_check = 0, ahead_since = 0;
    int warned = 0;
    for (int i = 0;; i++) {
        int moved;
        RC_CHECK(tcp_progress(comm, &moved));
        if (tcp_ready(comm, p, lane, send)) return RC_OK;
        if (RC_UNLIKELY(t->trouble)) next_check = 0; /* check now */
        if (RC_UNLIKELY(atomic_load_explicit(&comm->stop, memory_order_relaxed)))
            return rc_comm_fail(comm, RC_ERR_INVALID_ARG,
                                "rank %d: the communicator was closed during a call", comm->rank);
        if (comm->p2p_active) {
            int m = rc_p2p_progress(comm);
            if (m < 0) return (rc_status_t)m;
        }
        if ((i < t->spin || moved) && !t->trouble) {
            cpu_relax();
            continue;
        }
        double now = rc_now();
        if (t0 == 0) t0 = now;
        if (now >= next_check) {
            char doing[300], mine[160];
            rc_desc_format(&comm->cur.desc, mine, sizeof mine);
            snprintf(doing, sizeof doing, "in %s, waiting to %s rank %d", mine, what, peer);
            /* first what the other transports know (mux.c): a failure another
             * rank of this host recorded in shared memory is the cause, a
             * connection closed meanwhile may only be its consequence */
            if (comm->ntps > 1) RC_CHECK(rc_mux_others_health(comm, &rc_transport_tcp, doing));
            RC_CHECK(tcp_check_peers(comm, peer, doing));
            RC_CHECK(tcp_slow_checks(comm, peer, t0, what, &warned));
            /* the peer told us (its stall report) it is in a later call: its
             * frames of this one came before that on the stream, so if we
             * still wait, what it did in this call was not this */
            if (p->have_last && rc_comm_peer_is_ahead(comm, &p->last) &&
                !tcp_ready(comm, p, lane, send))
                RC_CHECK(rc_comm_peer_left(comm, peer, what, &p->last, &ahead_since, 0));
            next_check = now + 0.05;
        }
        tcp_poll(comm, 50, 0);
    }
}

/* ------------------------------------------------------------------ */
/* data path: the transport operations                                 */

/* Messages to itself (p2p self-sends) go straight into its own receive slots. */
static rc_status_t tcp_self_acquire(rc_comm_t *comm, int lane, void **buf) {
    tcp_queue_t *q = &comm->tcp->peers[comm->rank].rx[lane];
    if (q->posted - q->done >= comm->nslots) return RC_INPROGRESS; /* the consumer frees them */
    *buf = q->buf + (size_t)(q->posted % comm->nslots) * comm->chunk_bytes;
    return RC_OK;
}

static rc_status_t tcp_send_acquire_locked(rc_comm_t *comm, int lane, int peer, void **buf, int wait) {
    if (RC_UNLIKELY(peer == comm->rank)) {
        if (tcp_self_acquire(comm, lane, buf) == RC_OK) return RC_OK;
        if (!wait) return RC_INPROGRESS;
        return rc_set_error(RC_ERR_INTERNAL, "rank %d: a blocking send to itself with no free slot",
                            comm->rank);
    }
    tcp_peer_t *p = &comm->tcp->peers[peer];
    if (RC_UNLIKELY(!tcp_ready(comm, p, lane, 1))) {
        int moved;
        RC_CHECK(tcp_progress(comm, &moved));
        if (!tcp_ready(comm, p, lane, 1)) {
            if (!wait) return RC_INPROGRESS;
            RC_CHECK(tcp_wait(comm, peer, lane, 1));
        }
    }
    tcp_queue_t *q = &p->tx[lane];
    *buf = q->buf + (size_t)(q->posted % comm->nslots) * comm->chunk_bytes;
    return RC_OK;
}

static rc_status_t tcp_send_commit_locked(rc_comm_t *comm, int lane, int peer, const rc_desc_t *d) {
    tcp_peer_t *p = &comm->tcp->peers[peer];
    tcp_queue_t *q = &p->tx[lane];
    if (RC_UNLIKELY(d->bytes > comm->chunk_bytes))
        return rc_set_error(RC_ERR_INTERNAL, "rank %d: a %u-byte message to rank %d exceeds the "
                            "%zu-byte chunk", comm->rank, d->bytes, peer, comm->chunk_bytes);
    if (RC_UNLIKELY(peer == comm->rank)) {
        q = &p->rx[lane];
        q->desc[q->posted % comm->nslots] = *d;
        q->posted++;
        if (lane == RC_LANE_P2P) bump(comm->tcp);
        return RC_OK;
    }
    q->desc[q->posted % comm->nslots] = *d;
    q->posted++;
    int moved = 0;
    if (!p->wlen) tcp_write(comm, p, &moved);
    return RC_OK;
}

static rc_status_t tcp_recv_acquire_locked(rc_comm_t *comm, int lane, int peer, const void **buf,
                                    rc_desc_t *d, int wait) {
    tcp_peer_t *p = &comm->tcp->peers[peer];
    tcp_queue_t *q = &p->rx[lane];
    if (q->posted == q->done) {
        int moved;
        RC_CHECK(tcp_progress(comm, &moved));
        if (q->posted == q->done) {
            if (!wait) return RC_INPROGRESS;
            RC_CHECK(tcp_wait(comm, peer, lane, 0));
        }
    }
    uint32_t i = q->done % comm->nslots;
    *d = q->desc[i];
    *buf = q->buf + (size_t)i * comm->chunk_bytes;
    return RC_OK;
}

static void tcp_recv_release_locked(rc_comm_t *comm, int lane, int peer) {
    tcp_peer_t *p = &comm->tcp->peers[peer];
    p->rx[lane].done++;
    if (lane == RC_LANE_P2P) bump(comm->tcp);
    if (peer == comm->rank) return;
    int moved = 0;
    tcp_write(comm, p, &moved); /* the credit goes back at once */
}

static uint32_t tcp_events(rc_comm_t *comm) {
    return atomic_load_explicit(&comm->tcp->events, memory_order_acquire);
}

static void tcp_kick(rc_comm_t *comm) {
    struct rc_tcp *t = comm->tcp;
    bump(t);
    uint64_t one = 1;
    if (t->efd >= 0 && write(t->efd, &one, sizeof one) < 0) { /* full: already kicked */ }
}

/* p2p engine: progress the sockets, sleep in poll until something moves. */
static void tcp_wait_events_locked(rc_comm_t *comm, uint32_t seen, double max_s) {
    int moved;
    if (tcp_events(comm) != seen) return;
    if (tcp_progress(comm, &moved) != RC_OK || moved || tcp_events(comm) != seen) return;
    int ms = max_s <= 0 ? 0 : (int)(max_s * 1000.0 + 0.999);
    if (ms > 0) tcp_poll(comm, ms, 1);
    (void)tcp_progress(comm, &moved); /* errors show in the next health check */
}

static void tcp_publish_locked(rc_comm_t *comm) {
    comm->tcp->pub = comm->cur.desc;
    comm->tcp->pub_sent = 0;
}

/* Write the current partial frame and then `extra` (if any) to p, waiting
 * in poll (and reading, so the peer cannot block on us) until `deadline`. */
static int tcp_drained(const rc_comm_t *comm, const tcp_peer_t *p) {
    return p->fd < 0 || (!tcp_want_write(comm, p) && !p->bye_pending &&
                         p->tx[0].posted == p->tx[0].done && p->tx[1].posted == p->tx[1].done);
}

static void tcp_drain_to(rc_comm_t *comm, tcp_peer_t *p, double deadline) {
    int moved;
    while (!tcp_drained(comm, p) && rc_now() < deadline) {
        tcp_write(comm, p, &moved);
        if (tcp_drained(comm, p)) break;
        if (tcp_read(comm, p, &moved) != RC_OK || p->fd < 0) break;
        struct pollfd pf = {p->fd, (short)(POLLIN | (tcp_want_write(comm, p) ? POLLOUT : 0)), 0};
        poll(&pf, 1, 10);
    }
}

static void tcp_abort_locked(rc_comm_t *comm, rc_status_t st, const char *msg) {
    struct rc_tcp *t = comm->tcp;
    if (!t || t->aborted || !t->peers) return;
    t->aborted = 1;
    double deadline = rc_now() + 1.0;
    size_t mlen = strlen(msg);
    if (mlen > TCP_ABORT_MAX) mlen = TCP_ABORT_MAX;
    for (int i = 0; i < t->nact; i++) {
        tcp_peer_t *p = &t->peers[t->act[i]];
        if (p->fd < 0) continue;
        /* finish a partly written frame, then the abort; other queued frames are dropped */
        int moved;
        while (p->fd >= 0 && p->wlen && rc_now() < deadline) {
            tcp_write(comm, p, &moved);
            if (!p->wlen) break;
            if (tcp_read(comm, p, &moved) != RC_OK) break;
            struct pollfd pf = {p->fd, POLLIN | POLLOUT, 0};
            if (p->fd >= 0) poll(&pf, 1, 10);
        }
        if (p->fd < 0 || p->wlen) continue;
        memset(&p->whdr, 0, sizeof p->whdr);
        p->whdr.type = TCP_ABORT;
        p->whdr.check = TCP_CHECK;
        for (int l = 0; l < RC_NLANES; l++) p->whdr.credits[l] = p->cred_sent[l];
        p->whdr.arg = st;
        p->whdr.desc.root = comm->rank;
        p->whdr.desc.bytes = (uint32_t)mlen;
        p->wpay = msg;
        p->woff = 0;
        p->wlen = sizeof p->whdr + mlen;
        p->wlane = 0;
        while (p->fd >= 0 && p->wlen && rc_now() < deadline) {
            tcp_write(comm, p, &moved); /* stops at the end of this frame: wlen = 0 then */
            if (!p->wlen) break;
            struct pollfd pf = {p->fd, POLLOUT, 0};
            if (p->fd >= 0) poll(&pf, 1, 10);
        }
        /* nothing else will be sent after the abort */
        for (int l = 0; l < RC_NLANES; l++) p->tx[l].posted = p->tx[l].done;
        p->desc_dirty = 0;
        for (int l = 0; l < RC_NLANES; l++) p->cred_sent[l] = p->rx[l].done;
    }
}

/* ------------------------------------------------------------------ */
/* locking and the helper thread                                       */

/* Frames queued that only this process can write (credits permitting)? */
static int tcp_tx_pending(const struct rc_tcp *t) {
    for (int i = 0; i < t->nact; i++) {
        const tcp_peer_t *p = &t->peers[t->act[i]];
        if (p->fd < 0) continue;
        if (p->wlen || p->tx[0].posted != p->tx[0].done || p->tx[1].posted != p->tx[1].done)
            return 1;
    }
    return 0;
}

static void tcp_lock(struct rc_tcp *t) {
    pthread_mutex_lock(&t->mu);
    t->ops++;
}

static void tcp_unlock(struct rc_tcp *t) {
    if (t->helper_asleep && tcp_tx_pending(t)) pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* The helper: a collective (or a send) returns once its last frames are
 * queued, but those frames go out only as the receiver's credits come back,
 * and the receiver needs them to finish.  If this process then blocks
 * elsewhere (an MPI barrier, computation) nobody would write them.  So
 * when frames are queued and the executor has not entered the transport for
 * 1 ms, this thread progresses the sockets (poll, read credits and data
 * into free slots, write) until the queue is empty or the executor is back.
 * It sleeps on a condition variable otherwise: no cost while idle. */
static void *tcp_helper(void *arg) {
    rc_comm_t *comm = arg;
    struct rc_tcp *t = comm->tcp;
    pthread_mutex_lock(&t->mu);
    while (!t->helper_stop) {
        if (!tcp_tx_pending(t) || t->aborted) {
            t->helper_asleep = 1;
            pthread_cond_wait(&t->cv, &t->mu);
            t->helper_asleep = 0;
            continue;
        }
        uint64_t seen = t->ops;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
        while (!t->helper_stop && t->ops == seen && tcp_tx_pending(t) && !t->aborted) {
            int moved;
            (void)tcp_progress(comm, &moved); /* failures are recorded for the executor */
            if (!tcp_tx_pending(t)) break;
            int n = 0;
            for (int i = 0; i < t->nact; i++) {
                tcp_peer_t *p = &t->peers[t->act[i]];
                if (p->fd < 0) continue;
                t->hpfd[n].fd = p->fd;
                t->hpfd[n].events = (short)(POLLIN | (tcp_want_write(comm, p) ? POLLOUT : 0));
                t->hpfd[n++].revents = 0;
            }
            pthread_mutex_unlock(&t->mu);
            poll(t->hpfd, (nfds_t)n, 5);
            pthread_mutex_lock(&t->mu);
        }
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

static rc_status_t tcp_send_acquire(rc_comm_t *comm, int lane, int peer, void **buf, int wait) {
    tcp_lock(comm->tcp);
    rc_status_t st = tcp_send_acquire_locked(comm, lane, peer, buf, wait);
    tcp_unlock(comm->tcp);
    return st;
}

static rc_status_t tcp_send_commit(rc_comm_t *comm, int lane, int peer, const rc_desc_t *d) {
    tcp_lock(comm->tcp);
    rc_status_t st = tcp_send_commit_locked(comm, lane, peer, d);
    tcp_unlock(comm->tcp);
    return st;
}

static rc_status_t tcp_recv_acquire(rc_comm_t *comm, int lane, int peer, const void **buf,
                                    rc_desc_t *d, int wait) {
    tcp_lock(comm->tcp);
    rc_status_t st = tcp_recv_acquire_locked(comm, lane, peer, buf, d, wait);
    tcp_unlock(comm->tcp);
    return st;
}

static void tcp_recv_release(rc_comm_t *comm, int lane, int peer) {
    tcp_lock(comm->tcp);
    tcp_recv_release_locked(comm, lane, peer);
    tcp_unlock(comm->tcp);
}

static void tcp_wait_events(rc_comm_t *comm, uint32_t seen, double max_s) {
    tcp_lock(comm->tcp);
    tcp_wait_events_locked(comm, seen, max_s);
    tcp_unlock(comm->tcp);
}

static rc_status_t tcp_health(rc_comm_t *comm, const char *doing) {
    tcp_lock(comm->tcp);
    rc_status_t st = tcp_health_locked(comm, doing);
    tcp_unlock(comm->tcp);
    return st;
}

static void tcp_publish(rc_comm_t *comm) {
    tcp_lock(comm->tcp);
    tcp_publish_locked(comm);
    tcp_unlock(comm->tcp);
}

static void tcp_abort(rc_comm_t *comm, rc_status_t st, const char *msg) {
    if (!comm->tcp) return;
    tcp_lock(comm->tcp);
    tcp_abort_locked(comm, st, msg);
    tcp_unlock(comm->tcp);
}

static void tcp_helper_stop(struct rc_tcp *t) {
    if (!t->helper_on) return;
    pthread_mutex_lock(&t->mu);
    t->helper_stop = 1;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->helper, NULL);
    t->helper_on = 0;
}

/* ------------------------------------------------------------------ */
/* phase 2: connections and handshakes                                 */

typedef struct {
    int fd;
    int phase;       /* 0 wait to (re)try, 1 connecting, 2 writing hello, 3 reading reply, 4 done */
    size_t off;
    tcp_hello_t in;
    double retry_at;
    double backoff;
    char last_err[120];
} tcp_out_t;

typedef struct {
    int fd;
    int phase;       /* 0 reading hello, 1 writing reply */
    size_t off;
    tcp_hello_t in;
    char from[80];
    int rank;
} tcp_in_t;

static void tcp_my_hello(const rc_comm_t *comm, tcp_hello_t *h) {
    memset(h, 0, sizeof *h);
    h->magic = TCP_MAGIC;
    h->version = TCP_VERSION;
    h->bytes = sizeof *h;
    h->rank = comm->rank;
    h->size = comm->size;
    memcpy(h->token, comm->token, strnlen(comm->token, sizeof h->token - 1)); /* < 48: comm.c */
    h->chunk_bytes = comm->chunk_bytes;
    h->nslots = comm->nslots;
    h->algo_env = comm->algo_env;
    h->stream_min = comm->stream_min;
}

/* Check a hello; why is set when it is not acceptable. */
static int tcp_hello_ok(const rc_comm_t *comm, const tcp_hello_t *h, char *why, size_t len) {
    if (h->magic != TCP_MAGIC) snprintf(why, len, "bad magic 0x%08x", h->magic);
    else if (h->version != TCP_VERSION || h->bytes != sizeof *h)
        snprintf(why, len, "protocol version %u (%u bytes), expected %u (%zu bytes)", h->version,
                 h->bytes, TCP_VERSION, sizeof *h);
    else if (memchr(h->token, 0, sizeof h->token) == NULL ||
             strncmp(h->token, comm->token, sizeof h->token) != 0)
        snprintf(why, len, "wrong communicator token");
    else if (h->size != comm->size)
        snprintf(why, len, "communicator size %d, expected %d", h->size, comm->size);
    else if (h->rank < 0 || h->rank >= comm->size)
        snprintf(why, len, "rank %d out of range", h->rank);
    else if (h->rank == 0 && (h->nslots < 2 || h->nslots > 1024 || h->chunk_bytes < 64 ||
                              h->chunk_bytes > (1u << 30) || h->chunk_bytes % 64 ||
                              h->algo_env < 0 || h->algo_env >= RC_NUM_ALGOS))
        snprintf(why, len, "invalid tuning from rank 0");
    else
        return 1;
    return 0;
}

static void sockaddr_format(const struct sockaddr_storage *ss, char *buf, size_t len) {
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)ss;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
        snprintf(buf, len, "[%s]:%u", ip, ntohs(s->sin6_port));
    } else {
        const struct sockaddr_in *s = (const void *)ss;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
        snprintf(buf, len, "%s:%u", ip, ntohs(s->sin_port));
    }
}

static void tcp_reject(rc_comm_t *comm, tcp_in_t *c, const char *why) {
    RC_LOG(RC_WARN, "rank %d: tcp: rejected a connection from %s: %s (closed, not trusted)",
           comm->rank, c->from, why);
    close(c->fd);
    c->fd = -1;
}

static void tcp_out_fail(tcp_out_t *o, const char *what, int err) {
    if (o->fd >= 0) close(o->fd);
    o->fd = -1;
    o->phase = 0;
    snprintf(o->last_err, sizeof o->last_err, "%s%s%s", what, err ? ": " : "", err ? strerror(err) : "");
    o->retry_at = rc_now() + o->backoff;
    o->backoff = o->backoff * 2 > 1.0 ? 1.0 : o->backoff * 2;
}

static rc_status_t tcp_connect(rc_comm_t *comm, const rc_addr_t *addrs) {
    struct rc_tcp *t = comm->tcp;
    int p = comm->size, me = comm->rank;
    t->spin = (int)rc_env_ll("RINGCOMM_TCP_SPIN", comm->oversubscribed ? 0 : 100);
    t->peers = calloc((size_t)p, sizeof *t->peers);
    t->act = calloc((size_t)p, sizeof *t->act);
    t->pfd = calloc((size_t)p + 1 + TCP_MAX_PENDING, sizeof *t->pfd);
    t->hpfd = calloc((size_t)p, sizeof *t->hpfd);
    tcp_out_t *out = calloc((size_t)p, sizeof *out);
    tcp_in_t *in = calloc(TCP_MAX_PENDING, sizeof *in);
    tcp_netaddr_t *na = calloc((size_t)p, sizeof *na);
    int *who = calloc((size_t)p + 1 + TCP_MAX_PENDING, sizeof *who);
    rc_status_t st = RC_OK;
    if (!t->peers || !t->act || !t->pfd || !t->hpfd || !out || !in || !na || !who) {
        st = rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", me);
        goto done;
    }
    int want_in = 0, want_out = 0;
    for (int r = 0; r < p; r++) {
        tcp_peer_t *q = &t->peers[r];
        q->fd = -1;
        q->rank = r;
        out[r].fd = -1;
        if (r == me || !rc_peer_is(comm, r, &rc_transport_tcp)) continue;
        memcpy(&na[r], addrs[r].net, sizeof na[r]);
        if ((na[r].family != 4 && na[r].family != 6) || na[r].port == 0) {
            st = rc_set_error(RC_ERR_MISMATCH, "rank %d: rank %d published no tcp address (family %u, "
                              "port %u)", me, r, na[r].family, na[r].port);
            goto done;
        }
        na[r].ifname[sizeof na[r].ifname - 1] = 0;
        net_format(&na[r], q->host, sizeof q->host);
        q->pid = addrs[r].pid;
        t->act[t->nact++] = r;
        if (r < me) want_in++;
        else want_out++, out[r].backoff = 0.01;
    }
    for (int i = 0; i < TCP_MAX_PENDING; i++) in[i].fd = -1;
    tcp_hello_t mine;
    tcp_my_hello(comm, &mine);
    double t0 = rc_now(), deadline = t0 + comm->timeout_s;
    int got_in = 0, got_out = 0;
    while (got_in < want_in || got_out < want_out) {
        double now = rc_now();
        if (now > deadline) break;
        /* poll set: listener, outgoing, pending incoming */
        int n = 0;
        struct pollfd *pf = t->pfd;
        double wake = now + 0.1;
        if (got_in < want_in && t->lfd >= 0) {
            pf[n].fd = t->lfd, pf[n].events = POLLIN, who[n++] = -1;
        }
        for (int r = me + 1; r < p; r++) {
            tcp_out_t *o = &out[r];
            if (!rc_peer_is(comm, r, &rc_transport_tcp) || o->phase == 4) continue;
            if (o->phase == 0) {
                if (o->retry_at > now) {
                    if (o->retry_at < wake) wake = o->retry_at;
                    continue;
                }
                struct sockaddr_storage ss;
                socklen_t len;
                net_to_sockaddr(&na[r], &ss, &len);
                o->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (o->fd < 0) {
                    st = rc_set_error(RC_ERR_IO, "rank %d: socket failed: %s", me, strerror(errno));
                    goto done;
                }
                sock_tune(o->fd, t->sockbuf);
                o->off = 0;
                if (connect(o->fd, (struct sockaddr *)&ss, len) == 0) {
                    o->phase = 2;
                } else if (errno == EINPROGRESS || errno == EINTR) {
                    o->phase = 1;
                } else {
                    tcp_out_fail(o, "connect", errno);
                    continue;
                }
            }
            pf[n].fd = o->fd;
            pf[n].events = o->phase == 3 ? POLLIN : POLLOUT;
            who[n++] = r;
        }
        for (int i = 0; i < TCP_MAX_PENDING; i++) {
            if (in[i].fd < 0) continue;
            pf[n].fd = in[i].fd;
            pf[n].events = in[i].phase == 0 ? POLLIN : POLLOUT;
            who[n++] = -2 - i;
        }
        int ms = (int)((wake - now) * 1000.0) + 1;
        if (deadline - now < 0.1) ms = (int)((deadline - now) * 1000.0) + 1;
        int ready = poll(pf, (nfds_t)n, ms);
        for (int k = 0; ready > 0 && k < n; k++) {
            short rev = pf[k].revents;
            if (!rev) continue;
            if (who[k] == -1) {
                /* accept everything waiting */
                for (;;) {
                    struct sockaddr_storage from;
                    socklen_t flen = sizeof from;
                    int fd = accept4(t->lfd, (struct sockaddr *)&from, &flen, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    int slot = -1;
                    for (int i = 0; i < TCP_MAX_PENDING && slot < 0; i++)
                        if (in[i].fd < 0) slot = i;
                    char fs[80];
                    sockaddr_format(&from, fs, sizeof fs);
                    if (slot < 0) {
                        RC_LOG(RC_WARN, "rank %d: tcp: rejected a connection from %s: %d "
                               "connections are already pending", me, fs, TCP_MAX_PENDING);
                        close(fd);
                        continue;
                    }
                    memset(&in[slot], 0, sizeof in[slot]);
                    in[slot].fd = fd;
                    snprintf(in[slot].from, sizeof in[slot].from, "%s", fs);
                    sock_tune(fd, t->sockbuf);
                }
            } else if (who[k] >= 0) {
                int r = who[k];
                tcp_out_t *o = &out[r];
                if (o->phase == 1) {
                    int err = 0;
                    socklen_t el = sizeof err;
                    getsockopt(o->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                    if (err) {
                        tcp_out_fail(o, "connect", err);
                        continue;
                    }
                    o->phase = 2;
                    o->off = 0;
                }
                if (o->phase == 2) {
                    ssize_t w = send(o->fd, (char *)&mine + o->off, sizeof mine - o->off,
                                     MSG_NOSIGNAL | MSG_DONTWAIT);
                    if (w < 0 && errno != EAGAIN && errno != EINTR) {
                        tcp_out_fail(o, "sending the hello", errno);
                        continue;
                    }
                    if (w > 0) o->off += (size_t)w;
                    if (o->off == sizeof mine) o->phase = 3, o->off = 0;
                    continue;
                }
                if (o->phase == 3) {
                    ssize_t g = recv(o->fd, (char *)&o->in + o->off, sizeof o->in - o->off, MSG_DONTWAIT);
                    if (g == 0 || (g < 0 && errno != EAGAIN && errno != EINTR)) {
                        tcp_out_fail(o, g == 0 ? "closed before its reply (rejected?)" : "reading the reply",
                                     g == 0 ? 0 : errno);
                        continue;
                    }
                    if (g > 0) o->off += (size_t)g;
                    if (o->off < sizeof o->in) continue;
                    char why[160] = "";
                    if (!tcp_hello_ok(comm, &o->in, why, sizeof why) || o->in.rank != r) {
                        if (o->in.rank != r && why[0] == 0) snprintf(why, sizeof why, "it is rank %d", o->in.rank);
                        RC_LOG(RC_WARN, "rank %d: tcp: the listener of rank %d at %s answered "
                               "wrongly (%s); retrying", me, r, t->peers[r].host, why);
                        tcp_out_fail(o, "a wrong reply", 0);
                        snprintf(o->last_err, sizeof o->last_err, "a wrong reply: %s", why);
                        continue;
                    }
                    tcp_peer_t *q = &t->peers[r];
                    q->fd = o->fd;
                    o->fd = -1;
                    q->hello = o->in;
                    o->phase = 4;
                    got_out++;
                }
            } else {
                tcp_in_t *c = &in[-2 - who[k]];
                if (c->phase == 0) {
                    ssize_t g = recv(c->fd, (char *)&c->in + c->off, sizeof c->in - c->off, MSG_DONTWAIT);
                    if (g == 0) {
                        char why[120];
                        snprintf(why, sizeof why, "short header (%zu of %zu bytes, then EOF)", c->off,
                                 sizeof c->in);
                        tcp_reject(comm, c, why);
                        continue;
                    }
                    if (g < 0) {
                        if (errno != EAGAIN && errno != EINTR) tcp_reject(comm, c, strerror(errno));
                        continue;
                    }
                    c->off += (size_t)g;
                    if (c->off < sizeof c->in) continue;
                    char why[160] = "";
                    if (!tcp_hello_ok(comm, &c->in, why, sizeof why)) {
                        tcp_reject(comm, c, why);
                        continue;
                    }
                    int r = c->in.rank;
                    if (r >= me || !rc_peer_is(comm, r, &rc_transport_tcp)) {
                        snprintf(why, sizeof why, "rank %d is not expected to connect to rank %d", r, me);
                        tcp_reject(comm, c, why);
                        continue;
                    }
                    int dup = t->peers[r].fd >= 0;
                    for (int i = 0; i < TCP_MAX_PENDING && !dup; i++)
                        dup = in[i].fd >= 0 && &in[i] != c && in[i].phase == 1 && in[i].rank == r;
                    if (dup) {
                        snprintf(why, sizeof why, "rank %d is already connected", r);
                        tcp_reject(comm, c, why);
                        continue;
                    }
                    c->rank = r;
                    c->phase = 1;
                    c->off = 0;
                }
                if (c->phase == 1) {
                    ssize_t w = send(c->fd, (char *)&mine + c->off, sizeof mine - c->off,
                                     MSG_NOSIGNAL | MSG_DONTWAIT);
                    if (w < 0 && errno != EAGAIN && errno != EINTR) {
                        tcp_reject(comm, c, strerror(errno));
                        continue;
                    }
                    if (w > 0) c->off += (size_t)w;
                    if (c->off < sizeof mine) continue;
                    tcp_peer_t *q = &t->peers[c->rank];
                    q->fd = c->fd;
                    q->hello = c->in;
                    c->fd = -1;
                    got_in++;
                }
            }
        }
    }
    if (got_in < want_in || got_out < want_out) {
        char miss[600];
        size_t m = 0;
        miss[0] = 0;
        for (int i = 0; i < t->nact && m + 100 < sizeof miss; i++) {
            int r = t->act[i];
            if (t->peers[r].fd >= 0) continue;
            if (r < me)
                m += (size_t)snprintf(miss + m, sizeof miss - m, "%s%d (no valid connection from it)",
                                      m ? ", " : "", r);
            else
                m += (size_t)snprintf(miss + m, sizeof miss - m, "%s%d (at %s: %s)", m ? ", " : "", r,
                                      t->peers[r].host, out[r].last_err[0] ? out[r].last_err : "no reply");
        }
        st = rc_set_error(RC_ERR_TIMEOUT, "rank %d: tcp connect timed out after %.0f s (listening at "
                          "%s); missing ranks: %s (RINGCOMM_TIMEOUT)", me, comm->timeout_s,
                          t->self_str, miss);
        goto done;
    }
    /* rank 0 decides the tuning (as shm.c's header does) */
    if (me != 0 && rc_peer_is(comm, 0, &rc_transport_tcp)) {
        const tcp_hello_t *h = &t->peers[0].hello;
        comm->chunk_bytes = h->chunk_bytes;
        comm->nslots = h->nslots;
        comm->algo_env = h->algo_env;
        comm->stream_min = h->stream_min;
    }
    for (int i = 0; i < t->nact; i++) {
        tcp_peer_t *q = &t->peers[t->act[i]];
        for (int l = 0; l < RC_NLANES; l++) {
            tcp_queue_t *qs[2] = {&q->tx[l], &q->rx[l]};
            for (int k = 0; k < 2; k++) {
                qs[k]->buf = malloc((size_t)comm->nslots * comm->chunk_bytes);
                qs[k]->desc = calloc(comm->nslots, sizeof *qs[k]->desc);
                if (!qs[k]->buf || !qs[k]->desc) {
                    st = rc_set_error(RC_ERR_NO_MEMORY, "rank %d: no memory for tcp slots (%u x %zu "
                                      "bytes per lane and peer)", me, comm->nslots, comm->chunk_bytes);
                    goto done;
                }
            }
        }
        RC_LOG(RC_INFO, "rank %d -> rank %d: tcp %s -> %s", me, q->rank, t->self_str, q->host);
    }
    for (int l = 0; l < RC_NLANES; l++) { /* self-sends */
        tcp_queue_t *q = &t->peers[me].rx[l];
        q->buf = malloc((size_t)comm->nslots * comm->chunk_bytes);
        q->desc = calloc(comm->nslots, sizeof *q->desc);
        if (!q->buf || !q->desc) {
            st = rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", me);
            goto done;
        }
    }
    if (t->nact) {
        int e = pthread_create(&t->helper, NULL, tcp_helper, comm);
        if (e) {
            st = rc_set_error(RC_ERR_NO_MEMORY, "rank %d: cannot start the tcp helper thread: %s", me,
                              strerror(e));
            goto done;
        }
        t->helper_on = 1;
    }
done:
    if (t->lfd >= 0) close(t->lfd);
    t->lfd = -1;
    for (int r = 0; out && r < p; r++)
        if (out[r].fd >= 0) close(out[r].fd);
    for (int i = 0; in && i < TCP_MAX_PENDING; i++)
        if (in[i].fd >= 0) {
            char why[120];
            snprintf(why, sizeof why, "setup ended before its hello was complete (%zu of %zu bytes)",
                     in[i].off, sizeof in[i].in);
            tcp_reject(comm, &in[i], why);
        }
    free(who);
    free(out);
    free(in);
    free(na);
    return st;
}

/* ------------------------------------------------------------------ */

static void tcp_close(rc_comm_t *comm) {
    struct rc_tcp *t = comm->tcp;
    if (!t) return;
    tcp_helper_stop(t);
    if (t->peers) {
        /* a clean close: what is queued goes out first, then BYE */
        if (!comm->broken && !t->aborted && !t->abort_seen) {
            double lim = comm->timeout_s < 30 ? comm->timeout_s : 30;
            double deadline = rc_now() + lim;
            for (int i = 0; i < t->nact; i++) {
                tcp_peer_t *p = &t->peers[t->act[i]];
                if (p->fd < 0) continue;
                p->bye_pending = 1;
                tcp_drain_to(comm, p, deadline);
            }
        }
        for (int i = 0; i < t->nact; i++) {
            tcp_peer_t *p = &t->peers[t->act[i]];
            if (p->fd >= 0) {
                shutdown(p->fd, SHUT_WR);
                char sink[4096];
                while (recv(p->fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {}
                close(p->fd);
            }
        }
        for (int r = 0; r < comm->size; r++)
            for (int l = 0; l < RC_NLANES; l++) {
                free(t->peers[r].tx[l].buf);
                free(t->peers[r].tx[l].desc);
                free(t->peers[r].rx[l].buf);
                free(t->peers[r].rx[l].desc);
            }
    }
    if (t->lfd >= 0) close(t->lfd);
    if (t->efd >= 0) close(t->efd);
    free(t->peers);
    free(t->act);
    free(t->pfd);
    free(t->hpfd);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
    comm->tcp = NULL;
}

const rc_transport_ops_t rc_transport_tcp = {
    .name = "tcp",
    .can_connect = tcp_can_connect,
    .create = tcp_create,
    .address = tcp_address,
    .connect = tcp_connect,
    .send_acquire = tcp_send_acquire,
    .send_commit = tcp_send_commit,
    .recv_acquire = tcp_recv_acquire,
    .recv_release = tcp_recv_release,
    .events = tcp_events,
    .wait_events = tcp_wait_events,
    .kick = tcp_kick,
    .health = tcp_health,
    .cma_ok = NULL,
    .cma_read = NULL,
    .ack_set = NULL,
    .ack_take = NULL,
    .publish = tcp_publish,
    .abort = tcp_abort,
    .close = tcp_close,
};
