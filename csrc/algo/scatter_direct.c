/* scatter_direct.c - the root streams block i of its sendbuf to rank i,
 * chunk by chunk.
 *
 * For chunk `it` of the block (the same slice of every block):
 *
 *   root:            send slice it of block root+1, root+2, ..., root-1 to
 *                    its rank, in that fixed order
 *   rank i != root:  receive slice it into recvbuf
 *
 *                 /--c0 c1 ..--> r1
 *   root: c0(r1) c0(r2) c0(r3) c1(r1) ...  ---c0 c1 ..--> r2
 *                 \--c0 c1 ..--> r3
 *
 * One slice per peer per round: every receiver gets work at once and no
 * peer's slots fill while another still waits for its first chunk.  A star
 * has no cycle of waits: no deadlock for any nslots.  The root's own block
 * is copied once (nothing to do in place, when recvbuf is block `root` of
 * sendbuf).
 *
 * Chunk arithmetic: k = ceil(count / chunk) slices of chunk_bytes / esize
 * elements (at least one, possibly empty, message per receiver even for
 * count = 0).
 *
 * Cost: (p-1) k alpha + (p-1) n beta at the root (n = block bytes), the
 * minimum for a scatter.
 */
#include <string.h>

#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

rc_status_t rc_scatter_direct(rc_comm_t *c, const rc_task_t *t) {
    const int p = c->size, root = t->root;
    const size_t es = c->cur.esize;
    const uint64_t chunk = c->chunk_bytes / es;
    const uint64_t count = t->count, steps = rc_nchunks(count, chunk);
    const size_t block = (size_t)(count * es);
    char *dst = (char *)t->recvbuf;

    if (c->rank != root) {
        for (uint64_t it = 0; it < steps; it++) {
            const uint64_t n = rc_slice_len(count, chunk, it);
            RC_CHECK(rc_prim_recv(c, root, n ? dst + it * chunk * es : dst, (size_t)(n * es)));
        }
        return RC_OK;
    }
    const char *src = (const char *)t->sendbuf;
    for (uint64_t it = 0; it < steps; it++) {
        const uint64_t n = rc_slice_len(count, chunk, it);
        const size_t off = n ? (size_t)(it * chunk * es) : 0;
        for (int k = 1; k < p; k++) {
            const int to = (root + k) % p;
            const char *at = n ? src + (size_t)to * block + off : src;
            RC_CHECK(rc_prim_send(c, to, at, (size_t)(n * es)));
        }
    }
    /* our own block, unless it is already in place */
    const char *mine = block ? src + (size_t)root * block : src;
    if (block && (const char *)dst != mine) {
        if (c->cur.stream) rc_copy_stream(dst, mine, block);
        else memcpy(dst, mine, block);
    }
    return RC_OK;
}
