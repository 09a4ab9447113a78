/* p2p.c - point-to-point: tagged messages streamed in chunks over the
 * transport's point-to-point lane (RC_LANE_P2P), so a large message overlaps
 * the sender's copy-in with the receiver's copy-out.
 *
 * Wire format: a message of `count` elements is ceil(bytes / chunk_bytes)
 * chunks (one empty chunk for an empty message), each carrying the
 * descriptor {seq = message number on this (sender, receiver) stream,
 * coll = send, dtype, count, root = tag, bytes = this chunk's payload}.
 * Chunks of one message are consecutive on the stream: a sender streams one
 * message per destination at a time, in post order.
 *
 * Matching (MPI's rules): a message matches the earliest posted receive whose
 * source (or RC_ANY_SOURCE) and tag fit; messages from one sender with one tag
 * arrive in the order they were sent.  A message nobody has posted for yet
 * stays in the channel (back-pressure), unless a posted receive from that
 * sender waits behind it: then it is drained into an "unexpected" buffer so
 * that the later message can be reached.  A receive first looks at the
 * unexpected messages (arrival order), then at the channels.  A matching
 * message whose count or dtype differ from the receive is a mismatch: both
 * calls are named and the communicator fails on every rank.
 *
 * Single copy: a message of at least comm->cma_min bytes to a peer that can
 * read this process's memory (the transport's cma_ok) goes as one chunk
 * flagged algo = RC_P2P_RTS whose 16-byte payload is the buffer's address
 * and length; the receiver reads the data straight into its buffer (also
 * from the unexpected list, where such a message costs no copy) and sets
 * the message's ack; the send completes when the sender sees the ack.  Such
 * a send waits off the send queue, so later sends to the same peer go on.
 *
 * Nothing here waits: progress.c's executor calls rc_p2p_progress between
 * (and, through the transport's waits, during) the collectives. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p2p.h"
#include "transport/transport.h"

#define RC_P2P_RTS 1 /* descriptor algo: the payload is {address, length} */
#define RC_P2P_MAX_ACKS 64 /* the transport's ack flags per (sender, receiver) */

typedef struct unexp {
    int src, tag;
    rc_dtype_t dtype;
    uint64_t count, bytes, off;
    int done;
    int rts;           /* by address: nothing buffered, read when matched */
    uint64_t addr;
    uint32_t msg;
    char *buf;
    struct unexp *next;
} unexp_t;

typedef struct {
    rc_request_t *req; /* the receive this message streams into, or */
    unexp_t *ux;       /* the unexpected buffer it streams into */
    uint64_t bytes, off;
} rx_cur_t;

struct rc_p2p {
    rc_request_t **sendq, **sendq_tail; /* [dest]: sends in post order */
    rc_request_t **acks;                /* [dest]: sent by address, waiting to be read */
    uint64_t *ack_busy;                 /* [dest]: ack flags (msg mod 64) those hold */
    uint32_t *tx_msg;                   /* [dest]: next message number */
    uint32_t *rx_msg;                   /* [source]: next message number expected */
    rx_cur_t *rx;                       /* [source]: the message being received */
    rc_request_t *posted, *posted_tail; /* receives not matched yet, post order */
    unexp_t *ux, *ux_tail;              /* unexpected messages, arrival order */
};

rc_status_t rc_p2p_init(rc_comm_t *comm) {
    size_t p = (size_t)comm->size;
    struct rc_p2p *e = calloc(1, sizeof *e);
    if (e) {
        e->sendq = calloc(p, sizeof *e->sendq);
        e->sendq_tail = calloc(p, sizeof *e->sendq_tail);
        e->acks = calloc(p, sizeof *e->acks);
        e->ack_busy = calloc(p, sizeof *e->ack_busy);
        e->tx_msg = calloc(p, sizeof *e->tx_msg);
        e->rx_msg = calloc(p, sizeof *e->rx_msg);
        e->rx = calloc(p, sizeof *e->rx);
    }
    comm->p2p = e;
    if (!e || !e->sendq || !e->sendq_tail || !e->acks || !e->ack_busy || !e->tx_msg || !e->rx_msg || !e->rx)
        return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", comm->rank);
    return RC_OK;
}

static void free_unexp(struct rc_p2p *e) {
    while (e->ux) {
        unexp_t *u = e->ux;
        e->ux = u->next;
        free(u->buf);
        free(u);
    }
    e->ux_tail = NULL;
}

void rc_p2p_free(rc_comm_t *comm) {
    struct rc_p2p *e = comm->p2p;
    if (!e) return;
    free_unexp(e);
    free(e->sendq);
    free(e->sendq_tail);
    free(e->acks);
    free(e->ack_busy);
    free(e->tx_msg);
    free(e->rx_msg);
    free(e->rx);
    free(e);
    comm->p2p = NULL;
}

static void finish(rc_comm_t *comm, rc_request_t *r, rc_status_t st) {
    comm->p2p_active--;
    rc_req_complete(comm, r, st);
}

void rc_p2p_fail_all(rc_comm_t *comm, rc_status_t st) {
    struct rc_p2p *e = comm->p2p;
    if (!e) return;
    for (int q = 0; q < comm->size; q++) {
        while (e->sendq[q]) {
            rc_request_t *r = e->sendq[q];
            e->sendq[q] = r->next;
            finish(comm, r, st);
        }
        e->sendq_tail[q] = NULL;
        while (e->acks[q]) {
            rc_request_t *r = e->acks[q];
            e->acks[q] = r->next;
            finish(comm, r, st);
        }
        e->ack_busy[q] = 0;
        if (e->rx[q].req) finish(comm, e->rx[q].req, st);
        memset(&e->rx[q], 0, sizeof e->rx[q]);
    }
    while (e->posted) {
        rc_request_t *r = e->posted;
        e->posted = r->next;
        finish(comm, r, st);
    }
    e->posted_tail = NULL;
    free_unexp(e);
}

/* The communicator failed: every pending operation fails with it (each
 * request takes the thread's last-error text, which stays as it is). */
static int fail(rc_comm_t *comm, rc_status_t st) {
    rc_p2p_fail_all(comm, st);
    return (int)st;
}

static void describe_req(const rc_request_t *r, char *buf, size_t len) {
    const rc_task_t *t = &r->task;
    char src[24];
    if (t->root == RC_ANY_SOURCE) snprintf(src, sizeof src, "any rank");
    else snprintf(src, sizeof src, "rank %d", t->root);
    snprintf(buf, len, "%s %s %s (tag %d, count=%llu, %s)", rc_coll_name(t->coll),
             t->coll == RC_COLL_SEND ? "to" : "from", src, t->tag,
             (unsigned long long)t->count, rc_dtype_name(t->dtype));
}

void rc_p2p_describe(rc_comm_t *comm, char *buf, size_t len) {
    struct rc_p2p *e = comm->p2p;
    snprintf(buf, len, "no send or receive");
    if (!e) return;
    for (int q = 0; q < comm->size; q++) {
        if (e->rx[q].req) return describe_req(e->rx[q].req, buf, len);
        if (e->sendq[q]) return describe_req(e->sendq[q], buf, len);
        if (e->acks[q]) return describe_req(e->acks[q], buf, len);
    }
    if (e->posted) describe_req(e->posted, buf, len);
}

static inline void copy(rc_comm_t *comm, void *dst, const void *src, uint64_t n, uint64_t total) {
    if (!n) return;
    if (total >= comm->stream_min) rc_copy_stream(dst, src, n);
    else memcpy(dst, src, n);
}

/* ---- sends ---- */

static int progress_send(rc_comm_t *comm, int dest) {
    struct rc_p2p *e = comm->p2p;
    int moved = 0;
    for (rc_request_t *r; (r = e->sendq[dest]) != NULL;) {
        /* Acks are flags by message number mod RC_P2P_MAX_ACKS: when an
         * earlier by-address send still holds this message's flag, stream it. */
        uint64_t flag = 1ull << (r->msg % RC_P2P_MAX_ACKS);
        if (r->rts && (e->ack_busy[dest] & flag)) r->rts = 0;
        if (r->rts) {
            /* one chunk: where the data is; the receiver reads it */
            void *slot;
            rc_status_t st = comm->tp->send_acquire(comm, RC_LANE_P2P, dest, &slot, 0);
            if (st == RC_INPROGRESS) return moved;
            if (st != RC_OK) return fail(comm, st);
            uint64_t where[2] = {(uint64_t)(uintptr_t)r->task.sendbuf, r->bytes};
            memcpy(slot, where, sizeof where);
            rc_desc_t d;
            memset(&d, 0, sizeof d);
            d.seq = r->msg;
            d.coll = RC_COLL_SEND;
            d.dtype = (uint8_t)r->task.dtype;
            d.algo = RC_P2P_RTS;
            d.count = r->task.count;
            d.root = r->task.tag;
            d.bytes = sizeof where;
            st = comm->tp->send_commit(comm, RC_LANE_P2P, dest, &d);
            if (st != RC_OK) return fail(comm, st);
            e->sendq[dest] = r->next;
            if (!e->sendq[dest]) e->sendq_tail[dest] = NULL;
            r->next = e->acks[dest];
            e->acks[dest] = r;
            e->ack_busy[dest] |= flag;
            moved++;
            continue;
        }
        while (r->off < r->bytes || r->chunks == 0) {
            void *slot;
            rc_status_t st = comm->tp->send_acquire(comm, RC_LANE_P2P, dest, &slot, 0);
            if (st == RC_INPROGRESS) return moved;
            if (st != RC_OK) return fail(comm, st);
            uint64_t n = r->bytes - r->off;
            if (n > comm->chunk_bytes) n = comm->chunk_bytes;
            copy(comm, slot, (const char *)r->task.sendbuf + r->off, n, r->bytes);
            rc_desc_t d;
            memset(&d, 0, sizeof d);
            d.seq = r->msg;
            d.coll = RC_COLL_SEND;
            d.dtype = (uint8_t)r->task.dtype;
            d.count = r->task.count;
            d.root = r->task.tag;
            d.bytes = (uint32_t)n;
            st = comm->tp->send_commit(comm, RC_LANE_P2P, dest, &d);
            if (st != RC_OK) return fail(comm, st);
            r->off += n;
            r->chunks++;
            moved++;
        }
        e->sendq[dest] = r->next;
        if (!e->sendq[dest]) e->sendq_tail[dest] = NULL;
        finish(comm, r, RC_OK);
        moved++;
    }
    return moved;
}

/* Sends by address whose data the receiver has read. */
static int progress_acks(rc_comm_t *comm, int dest) {
    struct rc_p2p *e = comm->p2p;
    int moved = 0;
    for (rc_request_t **pp = &e->acks[dest]; *pp;) {
        rc_request_t *r = *pp;
        if (comm->tp->ack_take(comm, dest, r->msg)) {
            *pp = r->next;
            e->ack_busy[dest] &= ~(1ull << (r->msg % RC_P2P_MAX_ACKS));
            r->off = r->bytes;
            finish(comm, r, RC_OK);
            moved++;
        } else {
            pp = &r->next;
        }
    }
    return moved;
}

/* ---- receives ---- */

static int src_fits(const rc_request_t *r, int src) {
    return r->task.root == src || r->task.root == RC_ANY_SOURCE;
}

/* A matched message must have the receive's count and dtype. */
static rc_status_t check_match(rc_comm_t *comm, const rc_request_t *r, int src, uint64_t count,
                               rc_dtype_t dt) {
    if (count == r->task.count && dt == r->task.dtype) return RC_OK;
    char mine[160];
    describe_req(r, mine, sizeof mine);
    return rc_comm_fail(comm, RC_ERR_MISMATCH,
                        "point-to-point mismatch: rank %d posted %s but rank %d sent a message "
                        "with tag %d, count=%llu, %s",
                        comm->rank, mine, src, r->task.tag, (unsigned long long)count,
                        rc_dtype_name(dt));
}

/* Every descriptor that arrives on the point-to-point lane, checked before
 * it is used: the stream position, the dtype, a count whose byte size
 * cannot overflow, and a payload size that is exactly the next chunk of the
 * message (the first chunk: of the message it announces; later chunks: of
 * the message in progress, whose tag and size must not change).  The fuzz
 * target for these bytes (csrc/fuzz.c). */
rc_status_t rc_p2p_desc_check(const rc_desc_t *d, uint32_t expect_msg, int mid_message,
                              uint64_t cur_bytes, uint64_t cur_off, int cur_tag,
                              size_t chunk_bytes, char *why, size_t len) {
    const char *bad = NULL;
    size_t es = d->dtype < RC_NUM_DTYPES ? rc_dtype_size((rc_dtype_t)d->dtype) : 0;
    uint64_t total = 0, want = 0;
    if (d->coll != RC_COLL_SEND) bad = "not a point-to-point chunk";
    else if (d->seq != expect_msg) bad = "out of sequence";
    else if (!es) bad = "unknown dtype";
    else if (d->count > (UINT64_MAX / 4) / es) bad = "count too large";
    else if (d->root < 0) bad = "negative tag";
    else if (d->algo > RC_P2P_RTS) bad = "unknown protocol";
    else if (d->algo == RC_P2P_RTS && (mid_message || d->bytes != 16))
        bad = "a by-address message must be one 16-byte chunk";
    if (!bad && d->algo == RC_P2P_RTS) return RC_OK;
    if (!bad) {
        total = d->count * es;
        if (mid_message && (total != cur_bytes || d->root != cur_tag || cur_off >= cur_bytes))
            bad = "the message changed size or tag in its middle";
        else {
            uint64_t left = mid_message ? cur_bytes - cur_off : total;
            want = left < chunk_bytes ? left : chunk_bytes;
            if (d->bytes != want) bad = "wrong chunk size";
        }
    }
    if (!bad) return RC_OK;
    snprintf(why, len, "%s (message %u, expected %u; tag %d, count %llu, dtype %u, chunk %u "
             "bytes, expected %llu)", bad, d->seq, expect_msg, (int)d->root,
             (unsigned long long)d->count, (unsigned)d->dtype, d->bytes, (unsigned long long)want);
    return RC_ERR_INTERNAL;
}

/* Read a by-address message of `src` into dst and tell the sender. */
static rc_status_t rts_read(rc_comm_t *comm, int src, void *dst, uint64_t addr, uint64_t bytes,
                            uint32_t msg) {
    if (bytes) RC_CHECK(comm->tp->cma_read(comm, src, dst, addr, (size_t)bytes));
    comm->tp->ack_set(comm, src, msg);
    return RC_OK;
}

/* A by-address message (its one chunk is in `in`) now has its receive or
 * its unexpected entry in cur: read it now, or note where it is. */
static int rts_arrived(rc_comm_t *comm, int src, rx_cur_t *cur, const rc_desc_t *d,
                       const void *in) {
    struct rc_p2p *e = comm->p2p;
    uint64_t where[2];
    memcpy(where, in, sizeof where);
    comm->tp->recv_release(comm, RC_LANE_P2P, src);
    if (where[1] != cur->bytes || !comm->tp->cma_read)
        return fail(comm, rc_comm_fail(comm, RC_ERR_INTERNAL,
                                       "rank %d: corrupt point-to-point stream from rank %d: a "
                                       "by-address message of %llu bytes announces %llu",
                                       comm->rank, src, (unsigned long long)cur->bytes,
                                       (unsigned long long)where[1]));
    e->rx_msg[src]++;
    if (cur->req) {
        rc_status_t st = rts_read(comm, src, cur->req->task.recvbuf, where[0], where[1], d->seq);
        if (st != RC_OK) return fail(comm, st);
        cur->req->off = cur->bytes;
        finish(comm, cur->req, RC_OK);
    } else {
        cur->ux->rts = 1;
        cur->ux->addr = where[0];
        cur->ux->msg = d->seq;
        cur->ux->done = 1;
    }
    memset(cur, 0, sizeof *cur);
    return 1;
}

static int progress_recv(rc_comm_t *comm, int src) {
    struct rc_p2p *e = comm->p2p;
    rx_cur_t *cur = &e->rx[src];
    int moved = 0;
    for (;;) {
        const void *in;
        rc_desc_t d;
        rc_status_t st = comm->tp->recv_acquire(comm, RC_LANE_P2P, src, &in, &d, 0);
        if (st == RC_INPROGRESS) return moved;
        if (st != RC_OK) return fail(comm, st);
        char why[300];
        int mid = cur->req || cur->ux;
        if (rc_p2p_desc_check(&d, e->rx_msg[src], mid, cur->bytes, cur->off,
                              cur->req ? cur->req->task.tag : cur->ux ? cur->ux->tag : -1,
                              comm->chunk_bytes, why, sizeof why) != RC_OK) {
            comm->tp->recv_release(comm, RC_LANE_P2P, src);
            return fail(comm, rc_comm_fail(comm, RC_ERR_INTERNAL,
                                           "rank %d: corrupt point-to-point stream from rank %d: %s",
                                           comm->rank, src, why));
        }
        if (!cur->req && !cur->ux) {
            /* the first chunk of a new message: find its receive */
            rc_request_t *prev = NULL, *r = e->posted;
            while (r && !(src_fits(r, src) && r->task.tag == d.root)) {
                prev = r;
                r = r->next;
            }
            if (r) {
                st = check_match(comm, r, src, d.count, (rc_dtype_t)d.dtype);
                if (st != RC_OK) return fail(comm, st);
                if (prev) prev->next = r->next;
                else e->posted = r->next;
                if (e->posted_tail == r) e->posted_tail = prev;
                r->next = NULL;
                r->source = src;
                r->msg = d.seq;
                cur->req = r;
                cur->bytes = r->bytes;
            } else {
                /* nobody wants it yet: leave it unless a receive waits behind it */
                int blocked = 0;
                for (r = e->posted; r && !blocked; r = r->next) blocked = src_fits(r, src);
                if (!blocked) return moved;
                unexp_t *u = calloc(1, sizeof *u);
                uint64_t bytes = d.count * rc_dtype_size((rc_dtype_t)d.dtype);
                if (u && d.algo != RC_P2P_RTS) u->buf = malloc(bytes ? bytes : 1);
                if (!u || (d.algo != RC_P2P_RTS && !u->buf)) {
                    free(u);
                    return fail(comm, rc_comm_fail(comm, RC_ERR_NO_MEMORY,
                                                   "rank %d: no memory to buffer a %llu-byte "
                                                   "message from rank %d",
                                                   comm->rank, (unsigned long long)bytes, src));
                }
                u->src = src;
                u->tag = d.root;
                u->dtype = (rc_dtype_t)d.dtype;
                u->count = d.count;
                u->bytes = bytes;
                if (e->ux_tail) e->ux_tail->next = u;
                else e->ux = u;
                e->ux_tail = u;
                cur->ux = u;
                cur->bytes = bytes;
            }
            cur->off = 0;
            if (d.algo == RC_P2P_RTS) {
                int m = rts_arrived(comm, src, cur, &d, in);
                if (m < 0) return m;
                moved += m;
                continue;
            }
        }
        uint64_t want = d.bytes; /* checked above: the next chunk of this message */
        char *dst = cur->req ? (char *)cur->req->task.recvbuf : cur->ux->buf;
        copy(comm, dst + cur->off, in, want, cur->bytes);
        comm->tp->recv_release(comm, RC_LANE_P2P, src);
        cur->off += want;
        moved++;
        if (cur->off == cur->bytes) {
            e->rx_msg[src]++;
            if (cur->req) {
                cur->req->off = cur->bytes;
                finish(comm, cur->req, RC_OK);
            } else {
                cur->ux->off = cur->bytes;
                cur->ux->done = 1;
            }
            memset(cur, 0, sizeof *cur);
        } else if (cur->ux) {
            cur->ux->off = cur->off;
        }
    }
}

/* ---- posting ---- */

static rc_status_t post_recv(rc_comm_t *comm, rc_request_t *r) {
    struct rc_p2p *e = comm->p2p;
    unexp_t *prev = NULL, *u = e->ux;
    while (u && !(src_fits(r, u->src) && u->tag == r->task.tag)) {
        prev = u;
        u = u->next;
    }
    if (!u) {
        r->next = NULL;
        if (e->posted_tail) e->posted_tail->next = r;
        else e->posted = r;
        e->posted_tail = r;
        return RC_OK;
    }
    RC_CHECK(check_match(comm, r, u->src, u->count, u->dtype));
    if (prev) prev->next = u->next;
    else e->ux = u->next;
    if (e->ux_tail == u) e->ux_tail = prev;
    r->source = u->src;
    if (u->rts) {
        rc_status_t st = rts_read(comm, u->src, r->task.recvbuf, u->addr, u->bytes, u->msg);
        free(u);
        if (st != RC_OK) return st;
        r->off = r->bytes;
        finish(comm, r, RC_OK);
        return RC_OK;
    }
    if (u->off) memcpy(r->task.recvbuf, u->buf, u->off);
    if (u->done) {
        r->off = u->bytes;
        finish(comm, r, RC_OK);
    } else {
        /* still streaming in: the rest goes straight to the receive */
        rx_cur_t *cur = &e->rx[u->src];
        cur->ux = NULL;
        cur->req = r;
    }
    free(u->buf);
    free(u);
    return RC_OK;
}

rc_status_t rc_p2p_post(rc_comm_t *comm, rc_request_t *r) {
    struct rc_p2p *e = comm->p2p;
    if (comm->broken) {
        rc_set_error(comm->broken, "%s: communicator failed earlier: %s",
                     rc_coll_name(r->task.coll), comm->broken_msg);
        rc_req_complete(comm, r, comm->broken);
        return comm->broken;
    }
    r->bytes = r->task.count * rc_dtype_size(r->task.dtype);
    if (comm->trace_id) r->t_start = rc_now();
    r->off = 0;
    r->chunks = 0;
    r->next = NULL;
    r->source = -1;
    atomic_store_explicit(&r->state, RC_REQ_ACTIVE, memory_order_release);
    comm->p2p_active++;
    if (r->task.coll == RC_COLL_SEND) {
        int q = r->task.root;
        r->msg = e->tx_msg[q]++;
        r->rts = r->bytes && r->bytes >= comm->cma_min && comm->tp->cma_ok &&
                 comm->tp->cma_ok(comm, q);
        if (e->sendq_tail[q]) e->sendq_tail[q]->next = r;
        else e->sendq[q] = r;
        e->sendq_tail[q] = r;
        return RC_OK;
    }
    rc_status_t st = post_recv(comm, r);
    if (st != RC_OK) {
        comm->p2p_active--;
        fail(comm, st);
        rc_req_complete(comm, r, st);
    }
    return st;
}

int rc_p2p_progress(rc_comm_t *comm) {
    struct rc_p2p *e = comm->p2p;
    int moved = 0;
    if (!e) return 0;
    for (int q = 0; q < comm->size; q++) {
        int m = 0;
        if (e->sendq[q]) {
            m = progress_send(comm, q);
            if (m < 0) return m;
            moved += m;
        }
        if (e->acks[q]) moved += progress_acks(comm, q);
        if (e->rx[q].req || e->rx[q].ux || e->posted) {
            m = progress_recv(comm, q);
            if (m < 0) return m;
            moved += m;
        }
    }
    return moved;
}
