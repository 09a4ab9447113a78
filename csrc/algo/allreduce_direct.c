/* allreduce_direct.c - one-step all-reduce for small messages.
 *
 * Every rank sends its whole buffer (at most one chunk) to every other rank,
 * then reduces all p contributions itself in rank order 0, 1, ..., p-1:
 *
 *     rank r:  send x_r -> every peer;  out = ((x_0 op x_1) op x_2) ... op x_{p-1}
 *
 * Every rank evaluates the same expression in the same order with the same
 * kernels, so the results are bitwise identical everywhere.  One message
 * latency instead of 2(p-1) (ring) or 2 log2(p) (tree), at the price of
 * (p-1) n bytes sent per rank: only worth it while n is small.
 *
 * Cost: alpha + (p-1) n beta + (p-1) n gamma.  Declines when the buffer does
 * not fit one chunk.
 *
 * Up to 48 bytes with every rank on one host, the same schedule runs over
 * shared memory's one-line outboxes (rc_shm_allreduce_ll): descriptor and
 * payload travel in the cache line the readers spin on, one line transfer
 * per peer instead of the slot ring's head, slot and tail.
 */
#include <string.h>

#include "../prims.h"
#include "../transport/transport.h"
#include "algo.h"

int rc_allreduce_direct_ok(const rc_comm_t *c, uint64_t count, size_t esize) {
    return count * esize <= c->chunk_bytes;
}

rc_status_t rc_allreduce_direct(rc_comm_t *c, const void *in, void *out, uint64_t count) {
    const int p = c->size, r = c->rank;
    const size_t n = (size_t)count, bytes = n * c->cur.esize;
    const char *self = (const char *)in;

    if (rc_shm_ll_ok(c, bytes)) return rc_shm_allreduce_ll(c, in, out, count);
    for (int k = 1; k < p; k++) RC_CHECK(rc_prim_send(c, (r + k) % p, in, bytes));
    if (in == out && r != 0 && bytes) {
        /* out is about to hold x_0; keep our own contribution aside */
        memcpy(c->scratch, in, bytes);
        self = (const char *)c->scratch;
    }
    if (r == 0) {
        if (out != (void *)self && bytes) memcpy(out, self, bytes);
    } else {
        RC_CHECK(rc_prim_recv(c, 0, out, bytes));
    }
    for (int j = 1; j < p; j++) {
        if (j == r) {
            if (n) c->cur.reduce(out, out, self, n);
        } else {
            RC_CHECK(rc_prim_recv_reduce(c, j, out, out, n));
        }
    }
    if (c->cur.scale && n) c->cur.scale(out, n, (double)p);
    return RC_OK;
}
