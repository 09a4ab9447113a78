/* allgather_ring.c - ring all-gather, pipelined by chunk (bandwidth-optimal).
 *
 * Rank r owns block r (count elements).  Every block is cut into slices of
 * one chunk; for slice `it`, rank r runs p-1 steps around the ring
 * r -> r+1 (send right, receive left):
 *
 *   step 0:          send block r (from sendbuf) right; copy it into recvbuf
 *   step k=1..p-2:   receive block (r-k) from the left, keep it, forward it
 *                    (rc_prim_recv_copy_send: the slot is read once)
 *   step p-1:        receive block (r+1) = block (r-(p-1)) from the left, keep it
 *
 * p = 4, slice `it` (Bj = block j, each arrow one message):
 *
 *   step     0         1         2         3
 *   rank 0   B0 ->     B3 ->     B2 ->     <- B1 (kept)
 *   rank 1   B1 ->     B0 ->     B3 ->     <- B2
 *   rank 2   B2 ->     B1 ->     B0 ->     <- B3
 *   rank 3   B3 ->     B2 ->     B1 ->     <- B0
 *
 * Chunk arithmetic: chunk = chunk_bytes / esize elements; slices per block =
 * rc_nchunks(count, chunk) >= 1 (a zero count still sends one empty message
 * per step, so a mismatched peer is caught); slice `it` of block j starts at
 * element j*count + it*chunk and holds rc_slice_len(count, chunk, it).
 * The slice loop is outermost, so with nslots >= 2 slots per connection a
 * rank already sends slice it+1 while its right neighbour forwards slice it.
 *
 * Deadlock freedom: every rank sends and receives on its two ring links in
 * the same order; within a slice its sends lead its receives by one, so a
 * rank holding a received slot while it waits for send space would need
 * every link of the ring to be full at once, which the counts forbid when
 * nslots >= 2 (the argument of allreduce_ring.c).
 *
 * Topology: the ring runs over positions of the topology order (topo.c; the
 * identity on one domain): below, r is this rank's position and "block j"
 * is the block of the rank at position j (blocks stay in rank order in
 * recvbuf).
 *
 * In place: sendbuf may be block r of recvbuf (then nothing is copied).
 *
 * Cost (n = p * count * esize bytes gathered):
 *   (p-1) alpha per slice + (p-1)/p n beta, no gamma.
 */
#include <string.h>

#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

rc_status_t rc_allgather_ring(rc_comm_t *c, const rc_task_t *t) {
    const int p = c->size, me = c->rank, r = rc_pos_of(c, me); /* ring position */
    const int right = rc_rank_at(c, r + 1), left = rc_rank_at(c, r - 1);
    const size_t es = c->cur.esize;
    const uint64_t count = t->count, chunk = c->chunk_bytes / es;
    const uint64_t steps = rc_nchunks(count, chunk);
    const char *src = (const char *)t->sendbuf;
    char *dst = (char *)t->recvbuf;
    const int in_place = count && src == dst + (size_t)me * count * es;

    for (uint64_t it = 0; it < steps; it++) {
        const size_t n = (size_t)rc_slice_len(count, chunk, it), bytes = n * es;
        const size_t soff = n ? (size_t)(it * chunk * es) : 0; /* inside a block */
#define BLOCK(j) (dst + (n ? (size_t)(j) * count * es + soff : 0))
        /* 1. step 0: our own slice goes right and into our block */
        RC_CHECK(rc_prim_send(c, right, src + soff, bytes));
        if (!in_place && bytes) memcpy(BLOCK(me), src + soff, bytes);
        /* 2. steps 1..p-2: keep block r-k and pass it on */
        for (int k = 1; k < p - 1; k++)
            RC_CHECK(rc_prim_recv_copy_send(c, left, right, BLOCK(rc_rank_at(c, r - k)), bytes));
        /* 3. step p-1: block r+1 has gone round the ring; it stops here */
        RC_CHECK(rc_prim_recv(c, left, BLOCK(right), bytes));
#undef BLOCK
    }
    return RC_OK;
}
