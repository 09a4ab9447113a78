/* alltoall_pairwise.c - all-to-all by pairwise exchange, pipelined by chunk.
 *
 * Block j of rank r's sendbuf goes to rank j, landing in block r of rank j's
 * recvbuf.  Rank r copies its own block locally, then runs p-1 steps; at
 * step k it sends to one rank and receives from another:
 *
 *   step k = 1..p-1:  send block (r+k) to rank r+k; receive block (r-k) from rank r-k
 *
 * p = 4 (each arrow: one block, chunk by chunk):
 *
 *   step 1:  0 -> 1 -> 2 -> 3 -> 0      (a ring)
 *   step 2:  0 <-> 2, 1 <-> 3           (pairs)
 *   step 3:  0 -> 3 -> 2 -> 1 -> 0      (the ring backwards)
 *
 * At every step the senders form a permutation, so each rank sends p-1
 * blocks and receives p-1 blocks, one link at a time.
 *
 * Chunk arithmetic: chunk = chunk_bytes / esize elements; messages per block
 * = rc_nchunks(count, chunk) >= 1 (a zero count still sends one empty
 * message per step, so a mismatched peer is caught); chunk i of block j
 * starts at element j*count + i*chunk and holds rc_slice_len(count, chunk, i).
 * Within a step the chunk sends run one ahead of the receives:
 *
 *   send 0, send 1, recv 0, send 2, recv 1, ..., send m-1, recv m-2, recv m-1
 *
 * so a rank fills the next slot while its peer drains the last one.
 *
 * Deadlock freedom with nslots >= 2: a rank waiting in a send has received
 * all but at most one of the chunks it has sent (this step), one waiting in
 * a receive has sent at most two more than it has received.  If every rank
 * waited, take one at the lowest step k (only ranks at step k move data on
 * its step-k links).  Waiting to receive chunk i from r-k: that rank has sent at most i
 * chunks, so it is not waiting to send to us (our link from it is empty)
 * but to receive, a chunk <= i-2.  Waiting to send chunk i to r+k on a full
 * link: that rank has read at most i-2 of our chunks, so it is not waiting
 * to receive (its link from us is full) but to send, a chunk <= i-1.  Either
 * chain of waits stays at step k with a strictly decreasing chunk index, so
 * it ends at a rank that can move: no cycle.
 *
 * Not in place (coll.c refuses overlapping buffers).
 *
 * Cost (n = p * count * esize bytes per rank):
 *   (p-1) alpha per chunk + (p-1)/p n beta, no gamma.
 */
#include <string.h>

#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

rc_status_t rc_alltoall_pairwise(rc_comm_t *c, const rc_task_t *t) {
    const int p = c->size, r = c->rank;
    const size_t es = c->cur.esize;
    const uint64_t count = t->count, chunk = c->chunk_bytes / es;
    const uint64_t m = rc_nchunks(count, chunk);
    const size_t block = (size_t)count * es;
    const char *src = (const char *)t->sendbuf;
    char *dst = (char *)t->recvbuf;
/* chunk i of block j: its offset in the big buffer (0 when empty) and bytes */
#define CHUNK_OFF(j, i) (rc_slice_len(count, chunk, (i)) ? (size_t)(j) * block + (size_t)((i) * chunk * es) : 0)
#define CHUNK_BYTES(i) ((size_t)rc_slice_len(count, chunk, (i)) * es)

    /* 1. our own block */
    if (block) memcpy(dst + (size_t)r * block, src + (size_t)r * block, block);
    /* 2. steps 1..p-1 */
    for (int k = 1; k < p; k++) {
        const int to = rc_mod(r + k, p), from = rc_mod(r - k, p);
        RC_CHECK(rc_prim_send(c, to, src + CHUNK_OFF(to, 0), CHUNK_BYTES(0)));
        for (uint64_t i = 0; i < m; i++) {
            if (i + 1 < m)
                RC_CHECK(rc_prim_send(c, to, src + CHUNK_OFF(to, i + 1), CHUNK_BYTES(i + 1)));
            RC_CHECK(rc_prim_recv(c, from, dst + CHUNK_OFF(from, i), CHUNK_BYTES(i)));
        }
    }
#undef CHUNK_OFF
#undef CHUNK_BYTES
    return RC_OK;
}
