/* allgather_direct.c - one-step all-gather for small blocks.
 *
 * Every rank sends its block (at most one chunk) to every other rank, then
 * receives every other rank's block straight into place:
 *
 *     rank r:  send x_r -> r+1, r+2, ..., r+p-1;  receive x_{r-1}, x_{r-2}, ..., x_{r-p+1}
 *
 *     p = 3:   0 --x0--> 1, 2     1 --x1--> 2, 0     2 --x2--> 0, 1
 *
 * Each ordered pair of ranks carries exactly one message (empty when count
 * is 0, so a mismatched peer is still caught).  The p-1 sends go to p-1
 * different connections of nslots >= 2 slots each, so they never wait on a
 * receiver: no deadlock whatever order the receives take.
 *
 * Chunk arithmetic: one message of count * esize <= chunk_bytes per pair;
 * rc_allgather_direct_ok declines anything larger (same decision on every
 * rank: it depends only on count, dtype and rank 0's chunk size).
 *
 * In place: sendbuf may be block r of recvbuf (then nothing is copied).
 *
 * Cost (n = p * count * esize bytes gathered):
 *   alpha + (p-1)/p n beta, no gamma; one step instead of the ring's p-1,
 *   but p-1 messages per rank at once: only worth it while blocks are small.
 */
#include <string.h>

#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

int rc_allgather_direct_ok(const rc_comm_t *c, const rc_task_t *t) {
    return t->count * rc_dtype_size(t->dtype) <= c->chunk_bytes;
}

rc_status_t rc_allgather_direct(rc_comm_t *c, const rc_task_t *t) {
    const int p = c->size, r = c->rank;
    const size_t bytes = (size_t)t->count * c->cur.esize;
    const char *src = (const char *)t->sendbuf;
    char *dst = (char *)t->recvbuf;
#define BLOCK(j) (dst + (bytes ? (size_t)(j) * bytes : 0))

    /* 1. our block to everyone */
    for (int k = 1; k < p; k++) RC_CHECK(rc_prim_send(c, rc_mod(r + k, p), src, bytes));
    /* 2. our own block into place */
    if (bytes && src != BLOCK(r)) memcpy(BLOCK(r), src, bytes);
    /* 3. everyone's block into place (the left neighbour's first: it sent to us first) */
    for (int k = 1; k < p; k++) {
        const int from = rc_mod(r - k, p);
        RC_CHECK(rc_prim_recv(c, from, BLOCK(from), bytes));
    }
#undef BLOCK
    return RC_OK;
}
