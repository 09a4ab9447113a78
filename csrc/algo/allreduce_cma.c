/* allreduce_cma.c - all-reduce by direct reads of the peers' buffers
 * (process_vm_readv): a reduce-scatter and an all-gather with no slot in
 * between, for large messages on one host.
 *
 * Rank r owns segment r (rc_seg_off/len, balanced):
 *
 *   0. every rank sends every peer {in, out} addresses (cma_common.h; also
 *      how a mismatched peer is caught, as in every algorithm)
 *   1. reduce-scatter: for each chunk of segment r, in rank order,
 *        out[seg r] = x_0 op x_1 op ... op x_{p-1}     (x_q read from rank q)
 *      (scaled once for avg)
 *   2. barrier: every segment is final
 *   3. all-gather: out[seg q] <- rank q's out[seg q], for every q != r
 *   4. barrier: nobody returns (and reuses its buffers) while a peer still
 *      reads them
 *
 *        rank 0 reads seg 0 of x_1..x_3 --+      out_0 = [S0|  |  |  ]
 *        rank 1 reads seg 1 of x_0,x_2,x_3 |  ->  out_1 = [  |S1|  |  ]  -> every rank
 *        ...                              --+                            reads the rest
 *
 * In place (in == out): rank r writes only segment r of its buffer while
 * the peers read only segment r of it in phase 1, and only after phase 2;
 * its own contribution to a chunk is copied aside before x_0 lands there.
 * Every segment is reduced in rank order by one rank and copied: bitwise
 * identical everywhere.
 *
 * Cost: 3 + 2 log2(p) alpha (addresses, two barriers) + 2 (p-1)/p n beta
 * (kernel copies, read once, no slot written and read) + (p-1)/p n gamma.
 * Offered only when every rank can read every other (comm->cma_all).
 */
#include <string.h>

#include "../pattern.h"
#include "cma_common.h"

int rc_allreduce_cma_ok(const rc_comm_t *c, uint64_t count, size_t esize) {
    (void)count;
    (void)esize;
    return rc_cma_usable(c);
}

rc_status_t rc_allreduce_cma(rc_comm_t *c, const void *in, void *out, uint64_t count) {
    const int p = c->size, r = c->rank;
    const size_t es = c->cur.esize;
    uint64_t addr[RC_CMA_MAX_RANKS][2];

    /* 0. addresses (every rank from every rank) */
    RC_CHECK(rc_cma_exchange(c, in, out, addr));

    /* 1. reduce my segment, chunk by chunk, in rank order */
    const uint64_t chunk = c->chunk_bytes / es / 2; /* scratch holds a peer's and my own chunk */
    char *peer = (char *)c->scratch, *self = peer + chunk * es;
    const uint64_t off = rc_seg_off(count, p, r), len = rc_seg_len(count, p, r);
    for (uint64_t done = 0; done < len; done += chunk) {
        const uint64_t n = len - done < chunk ? len - done : chunk;
        const size_t at = (size_t)((off + done) * es), bytes = (size_t)(n * es);
        char *dst = (char *)out + at;
        const char *own = (const char *)in + at;
        if (in == out && r != 0) {
            memcpy(self, own, bytes); /* x_0 is about to land on it */
            own = self;
        }
        if (r == 0) {
            if (dst != own) memcpy(dst, own, bytes);
        } else {
            RC_CHECK(c->tp->cma_read(c, 0, dst, addr[0][0] + at, bytes));
        }
        for (int q = 1; q < p; q++) {
            const char *x = own;
            if (q != r) {
                RC_CHECK(c->tp->cma_read(c, q, peer, addr[q][0] + at, bytes));
                x = peer;
            }
            c->cur.reduce(dst, dst, x, (size_t)n);
        }
        if (c->cur.scale) c->cur.scale(dst, (size_t)n, (double)p);
    }

    /* 2. every segment is final */
    RC_CHECK(rc_barrier_dissemination(c));

    /* 3. the other segments, straight from their owners' results */
    for (int k = 1; k < p; k++) {
        int q = (r + k) % p;
        uint64_t qo = rc_seg_off(count, p, q) * es, qn = rc_seg_len(count, p, q) * es;
        if (qn) RC_CHECK(c->tp->cma_read(c, q, (char *)out + qo, addr[q][1] + qo, (size_t)qn));
    }

    /* 4. nobody reads my buffers any more */
    return rc_barrier_dissemination(c);
}
