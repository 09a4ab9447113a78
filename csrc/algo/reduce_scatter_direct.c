/* reduce_scatter_direct.c - one-step reduce-scatter for small blocks.
 *
 * Every rank sends block j of its sendbuf (at most one chunk) to rank j,
 * then reduces the p contributions to its own block in rank order
 * 0, 1, ..., p-1, as allreduce_direct.c does:
 *
 *     rank r:  send x_r[j] -> rank j (every j != r);
 *              out = ((x_0[r] op x_1[r]) op x_2[r]) ... op x_{p-1}[r]   [/ p for avg]
 *
 *     p = 3:   0 --x0[1]--> 1, --x0[2]--> 2     1 --x1[2]--> 2, --x1[0]--> 0   ...
 *
 * The order depends on nothing but p, so the result is bitwise identical on
 * every run (and equal to what allreduce_direct computes for that block).
 * Each ordered pair of ranks carries exactly one message (empty when count
 * is 0, so a mismatched peer is still caught); the p-1 sends go to p-1
 * different connections of nslots >= 2 slots, so they never wait on a
 * receiver: no deadlock.
 *
 * Chunk arithmetic: one message of count * esize <= chunk_bytes per pair;
 * rc_reduce_scatter_direct_ok declines anything larger (the same decision on
 * every rank).
 *
 * Buffers: recvbuf may be block r of sendbuf (in place); then, on ranks
 * r != 0, our block is kept aside in comm->scratch before x_0[r] lands in
 * recvbuf.  No other part of sendbuf is written.
 *
 * Cost (n = p * count * esize bytes in sendbuf):
 *   alpha + (p-1)/p n beta + (p-1)/p n gamma; one step instead of the
 *   ring's p-1, only worth it while blocks are small.
 */
#include <string.h>

#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

int rc_reduce_scatter_direct_ok(const rc_comm_t *c, const rc_task_t *t) {
    return t->count * rc_dtype_size(t->dtype) <= c->chunk_bytes;
}

rc_status_t rc_reduce_scatter_direct(rc_comm_t *c, const rc_task_t *t) {
    const int p = c->size, r = c->rank;
    const size_t n = (size_t)t->count, bytes = n * c->cur.esize;
    const char *src = (const char *)t->sendbuf;
    char *out = (char *)t->recvbuf;
#define BLOCK(j) (src + (bytes ? (size_t)(j) * bytes : 0))
    const char *self = BLOCK(r);

    /* 1. block j to rank j */
    for (int k = 1; k < p; k++) {
        const int to = rc_mod(r + k, p);
        RC_CHECK(rc_prim_send(c, to, BLOCK(to), bytes));
    }
    /* 2. out = x_0[r] */
    if (r == 0) {
        if (bytes && out != self) memcpy(out, self, bytes);
    } else {
        if (bytes && out == self) {
            /* in place: out is about to hold x_0[r]; keep our block aside */
            memcpy(c->scratch, self, bytes);
            self = (const char *)c->scratch;
        }
        RC_CHECK(rc_prim_recv(c, 0, out, bytes));
    }
    /* 3. out op= x_j[r] for j = 1..p-1, in rank order */
    for (int j = 1; j < p; j++) {
        if (j == r) {
            if (n) c->cur.reduce(out, out, self, n);
        } else {
            RC_CHECK(rc_prim_recv_reduce(c, j, out, out, n));
        }
    }
    if (c->cur.scale && n) c->cur.scale(out, n, (double)p);
#undef BLOCK
    return RC_OK;
}
