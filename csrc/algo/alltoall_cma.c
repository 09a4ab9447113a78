/* alltoall_cma.c - all-to-all by direct reads (process_vm_readv).
 *
 *   1. addresses: every rank sends every peer {sendbuf, recvbuf} (cma_common.h)
 *   2. rank r copies its own block (block r of its sendbuf to block r of its
 *      recvbuf), then reads block r of rank q's sendbuf straight into block q
 *      of its recvbuf, for q = r+1, r+2, ...
 *   3. barrier: nobody returns (and reuses its sendbuf) while a peer reads it
 *
 * Not in place (the entry point refuses overlapping buffers).  One kernel
 * copy per byte received, no slot in between.
 *
 * Cost: 1 + 2 log2(p) alpha + (p-1) count beta (kernel copies).  Offered only
 * when every rank can read every other (comm->cma_all).
 */
#include <string.h>

#include "cma_common.h"

int rc_alltoall_cma_ok(const rc_comm_t *c, const rc_task_t *t) {
    (void)t;
    return rc_cma_usable(c);
}

rc_status_t rc_alltoall_cma(rc_comm_t *c, const rc_task_t *t) {
    const int p = c->size, r = c->rank;
    const size_t blk = (size_t)(t->count * c->cur.esize);
    uint64_t addr[RC_CMA_MAX_RANKS][2];
    char *out = (char *)t->recvbuf;
    const char *in = (const char *)t->sendbuf;
    RC_CHECK(rc_cma_exchange(c, t->sendbuf, t->recvbuf, addr));
    if (blk) memcpy(out + (size_t)r * blk, in + (size_t)r * blk, blk);
    for (int k = 1; k < p && blk; k++) {
        int q = (r + k) % p;
        RC_CHECK(c->tp->cma_read(c, q, out + (size_t)q * blk, addr[q][0] + (uint64_t)r * blk, blk));
    }
    return rc_barrier_dissemination(c);
}
