/* reduce_scatter_ring.c - ring reduce-scatter, pipelined by chunk
 * (bandwidth-optimal: every rank sends and receives (p-1)/p of the data).
 *
 * sendbuf holds p blocks of count elements; rank r ends with block r of the
 * reduction in recvbuf.  Every block is cut into slices of one chunk; for
 * slice `it`, rank r runs p-1 steps around the ring r -> r+1 (send right,
 * receive left), the partial sum of block j travelling from rank j+1 round
 * to rank j:
 *
 *   step 0:          send our block (r-1) right (it starts its trip here)
 *   step k=1..p-2:   receive the partial of block (r-1-k), add ours, send it
 *                    right (rc_prim_recv_reduce_send: straight into the slot)
 *   step p-1:        receive the partial of block r, add ours into recvbuf;
 *                    block r is complete (scaled once for avg)
 *
 * p = 4, slice `it` (xj = this rank's block j, Sj = partial of block j):
 *
 *   step     0           1               2               3
 *   rank 0   x3 ->       S2 += x2 ->     S1 += x1 ->     S0 += x0: done
 *   rank 1   x0 ->       S3 += x3 ->     S2 += x2 ->     S1 += x1: done
 *   rank 2   x1 ->       S0 += x0 ->     S3 += x3 ->     S2 += x2: done
 *   rank 3   x2 ->       S1 += x1 ->     S0 += x0 ->     S3 += x3: done
 *
 * Reduction order: block j = x_j op (x_{j-1} op (... op (x_{j+2} op x_{j+1})))
 * (own op received, rank indices mod p): fixed by p and j alone, so the
 * result is bitwise identical on every run.
 *
 * Topology: the ring runs over positions of the topology order (topo.c; the
 * identity on one domain): r above is this rank's position and block j the
 * block of the rank at position j, so the partial of a rank's block starts
 * at the next position and ends at the rank itself.
 *
 * Chunk arithmetic: chunk = chunk_bytes / esize elements; slices per block =
 * rc_nchunks(count, chunk) >= 1 (a zero count still sends one empty message
 * per step, so a mismatched peer is caught); slice `it` of block j starts at
 * element j*count + it*chunk and holds rc_slice_len(count, chunk, it).  The
 * slice loop is outermost: with nslots >= 2 a rank already sends slice it+1
 * while its right neighbour reduces slice it.  Deadlock freedom as in
 * allreduce_ring.c: same link order on every rank, sends lead receives by
 * one within a slice.
 *
 * Buffers: only blocks != r of sendbuf are read before the last step, and
 * recvbuf is written only at the last step, from sendbuf block r and the
 * received partial: recvbuf may be block r of sendbuf (in place), and
 * sendbuf is otherwise never written.
 *
 * Cost (n = p * count * esize bytes in sendbuf):
 *   (p-1) alpha per slice + (p-1)/p n beta + (p-1)/p n gamma.
 */
#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

rc_status_t rc_reduce_scatter_ring(rc_comm_t *c, const rc_task_t *t) {
    const int p = c->size, me = c->rank, r = rc_pos_of(c, me); /* ring position */
    const int right = rc_rank_at(c, r + 1), left = rc_rank_at(c, r - 1);
    const size_t es = c->cur.esize;
    const uint64_t count = t->count, chunk = c->chunk_bytes / es;
    const uint64_t steps = rc_nchunks(count, chunk);
    const char *src = (const char *)t->sendbuf;
    char *dst = (char *)t->recvbuf;

    for (uint64_t it = 0; it < steps; it++) {
        const size_t n = (size_t)rc_slice_len(count, chunk, it);
        const size_t soff = n ? (size_t)(it * chunk * es) : 0; /* inside a block */
#define BLOCK(j) (src + (n ? (size_t)(j) * count * es + soff : 0))
        /* 1. step 0: our contribution to block r-1 starts its trip */
        RC_CHECK(rc_prim_send(c, right, BLOCK(left), n * es));
        /* 2. steps 1..p-2: add ours to the partial of block r-1-k, pass it on */
        for (int k = 1; k < p - 1; k++)
            RC_CHECK(rc_prim_recv_reduce_send(c, left, right, BLOCK(rc_rank_at(c, r - 1 - k)), n));
        /* 3. step p-1: block r is complete here */
        RC_CHECK(rc_prim_recv_reduce(c, left, dst + soff, BLOCK(me), n));
        if (c->cur.scale && n) c->cur.scale(dst + soff, n, (double)p);
#undef BLOCK
    }
    return RC_OK;
}
