/* prims.c - chunk primitives over the transport's lent slots (see prims.h). */
#include <string.h>

#include "prims.h"
#include "transport/transport.h"

static rc_status_t __attribute__((noinline))
prim_bad_message(rc_comm_t *c, int from, const rc_desc_t *got, size_t want_bytes) {
    if (!rc_desc_equal(got, &c->cur.desc)) return rc_comm_mismatch(c, from, got);
    char mine[160];
    rc_desc_format(&c->cur.desc, mine, sizeof mine);
    return rc_comm_fail(c, RC_ERR_INTERNAL,
                        "rank %d in %s: message from rank %d holds %u bytes, expected %zu",
                        c->rank, mine, from, got->bytes, want_bytes);
}

/* A collective's message is used only when its descriptor is the call in
 * progress and its payload has exactly the size the schedule expects (so a
 * corrupt or hostile descriptor can never make us read past the slot). */
static inline int prim_desc_ok(const rc_desc_t *got, const rc_desc_t *cur, size_t want_bytes) {
    return got->bytes == want_bytes && rc_desc_equal(got, cur);
}

int rc_prim_desc_ok(const rc_desc_t *got, const rc_desc_t *cur, size_t want_bytes) {
    return prim_desc_ok(got, cur, want_bytes);
}

/* Take the next message from `from`, checking it is the one we expect. */
static inline rc_status_t prim_take(rc_comm_t *c, int from, const void **buf, size_t want_bytes) {
    rc_desc_t got;
    RC_CHECK(c->tp->recv_acquire(c, RC_LANE_COLL, from, buf, &got, 1));
    if (RC_UNLIKELY(!prim_desc_ok(&got, &c->cur.desc, want_bytes))) {
        c->tp->recv_release(c, RC_LANE_COLL, from);
        return prim_bad_message(c, from, &got, want_bytes);
    }
    return RC_OK;
}

static inline rc_status_t prim_post(rc_comm_t *c, int to, size_t bytes) {
    rc_desc_t d = c->cur.desc;
    d.bytes = (uint32_t)bytes;
    return c->tp->send_commit(c, RC_LANE_COLL, to, &d);
}

/* Writes into a peer's slot and final writes into the user's buffer.  For
 * large calls (cur.stream) they bypass the cache: the peer then reads the
 * slot from memory instead of pulling each line out of this core's cache,
 * which is what limits large transfers when the two cores sit far apart
 * (docs/design.md).  rc_copy_stream ends with sfence, so the slot is
 * complete before send_commit publishes it. */
static inline void prim_store(rc_comm_t *c, void *dst, const void *src, size_t bytes) {
    if (c->cur.stream) rc_copy_stream(dst, src, bytes);
    else memcpy(dst, src, bytes);
}

rc_status_t rc_prim_send(rc_comm_t *c, int to, const void *src, size_t bytes) {
    void *slot;
    RC_CHECK(c->tp->send_acquire(c, RC_LANE_COLL, to, &slot, 1));
    if (bytes) prim_store(c, slot, src, bytes);
    return prim_post(c, to, bytes);
}

rc_status_t rc_prim_recv(rc_comm_t *c, int from, void *dst, size_t bytes) {
    const void *in;
    RC_CHECK(prim_take(c, from, &in, bytes));
    if (bytes) prim_store(c, dst, in, bytes);
    c->tp->recv_release(c, RC_LANE_COLL, from);
    return RC_OK;
}

rc_status_t rc_prim_recv_reduce(rc_comm_t *c, int from, void *dst, const void *src, size_t n) {
    const void *in;
    RC_CHECK(prim_take(c, from, &in, n * c->cur.esize));
    if (n) c->cur.reduce(dst, src, in, n);
    c->tp->recv_release(c, RC_LANE_COLL, from);
    return RC_OK;
}

rc_status_t rc_prim_recv_reduce_send(rc_comm_t *c, int from, int to, const void *src, size_t n) {
    const void *in;
    void *out;
    size_t bytes = n * c->cur.esize;
    RC_CHECK(prim_take(c, from, &in, bytes));
    rc_status_t st = c->tp->send_acquire(c, RC_LANE_COLL, to, &out, 1);
    if (st == RC_OK && n) c->cur.reduce(out, src, in, n);
    c->tp->recv_release(c, RC_LANE_COLL, from);
    RC_CHECK(st);
    return prim_post(c, to, bytes);
}

rc_status_t rc_prim_recv_reduce_copy_send(rc_comm_t *c, int from, int to, void *dst,
                                          const void *src, size_t n) {
    const void *in;
    void *out;
    size_t bytes = n * c->cur.esize;
    RC_CHECK(prim_take(c, from, &in, bytes));
    rc_status_t st = c->tp->send_acquire(c, RC_LANE_COLL, to, &out, 1);
    if (st == RC_OK && n) {
        /* reduce into our result, then copy it into the next rank's slot */
        c->cur.reduce(dst, src, in, n);
        if (c->cur.scale) c->cur.scale(dst, n, (double)c->size);
        prim_store(c, out, dst, bytes);
    }
    c->tp->recv_release(c, RC_LANE_COLL, from);
    RC_CHECK(st);
    return prim_post(c, to, bytes);
}

rc_status_t rc_prim_recv_copy_send(rc_comm_t *c, int from, int to, void *dst, size_t bytes) {
    const void *in;
    void *out;
    RC_CHECK(prim_take(c, from, &in, bytes));
    rc_status_t st = c->tp->send_acquire(c, RC_LANE_COLL, to, &out, 1);
    if (st == RC_OK && bytes) {
        memcpy(dst, in, bytes);
        prim_store(c, out, dst, bytes);
    }
    c->tp->recv_release(c, RC_LANE_COLL, from);
    RC_CHECK(st);
    return prim_post(c, to, bytes);
}
