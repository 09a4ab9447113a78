/* barrier_dissemination.c - dissemination barrier (Hensgen, Finkel, Manber).
 *
 * Round k = 0 .. ceil(log2 p) - 1: send an empty message to rank r + 2^k and
 * wait for one from rank r - 2^k.  After the last round every rank has heard,
 * directly or through others, from every rank.
 *
 *   p = 4:  round 0: 0->1 1->2 2->3 3->0   round 1: 0->2 1->3 2->0 3->1
 *
 * Cost: ceil(log2 p) alpha, no data.
 */
#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

rc_status_t rc_barrier_dissemination(rc_comm_t *c) {
    const int p = c->size, r = c->rank;
    for (int d = 1; d < p; d <<= 1) {
        RC_CHECK(rc_prim_send(c, (r + d) % p, NULL, 0));
        RC_CHECK(rc_prim_recv(c, rc_mod(r - d, p), NULL, 0));
    }
    return RC_OK;
}
