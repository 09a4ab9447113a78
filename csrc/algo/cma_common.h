/* cma_common.h - the frame of the algorithms that read peers' buffers
 * directly (process_vm_readv): every rank tells every peer where its send and
 * receive buffers are (one small message per pair, which also catches a
 * mismatched call), reads what it needs, then a barrier keeps every buffer
 * in place until nobody reads it any more. */
#ifndef RC_CMA_COMMON_H
#define RC_CMA_COMMON_H

#include "../prims.h"
#include "../transport/transport.h"
#include "algo.h"

#define RC_CMA_MAX_RANKS 64

/* addr[q] = {rank q's sendbuf, rank q's recvbuf} */
static inline rc_status_t rc_cma_exchange(rc_comm_t *c, const void *in, const void *out,
                                          uint64_t addr[][2]) {
    const int p = c->size, r = c->rank;
    uint64_t mine[2] = {(uint64_t)(uintptr_t)in, (uint64_t)(uintptr_t)out};
    if (p > RC_CMA_MAX_RANKS) return rc_set_error(RC_ERR_INTERNAL, "cma: more than 64 ranks");
    for (int k = 1; k < p; k++) RC_CHECK(rc_prim_send(c, (r + k) % p, mine, sizeof mine));
    addr[r][0] = mine[0];
    addr[r][1] = mine[1];
    for (int k = 1; k < p; k++) {
        int q = (r - k + p) % p;
        RC_CHECK(rc_prim_recv(c, q, addr[q], 2 * sizeof(uint64_t)));
    }
    return RC_OK;
}

/* The algorithm may run: every rank can read every other (same on all ranks). */
static inline int rc_cma_usable(const rc_comm_t *c) {
    return c->cma_all && c->tp->cma_read != NULL && c->size <= RC_CMA_MAX_RANKS;
}

#endif
