/* gather_direct.c - every rank streams its block to the root, chunk by chunk.
 *
 * Block i (count elements) of rank i lands at block i of the root's recvbuf.
 * For chunk `it` of the block (the same slice of every block):
 *
 *   rank i != root:  send(root, slice it of sendbuf)
 *   root:            receive slice it from root+1, root+2, ..., root-1, in
 *                    that fixed order, straight into recvbuf
 *
 *        r1 --c0 c1 ..--\
 *        r2 --c0 c1 ..---> root: c0(r1) c0(r2) c0(r3) c1(r1) c1(r2) ...
 *        r3 --c0 c1 ..--/
 *
 * The root's own block is copied once (nothing to do in place, when sendbuf
 * is block `root` of recvbuf).  Slice-major order keeps every sender busy
 * while the root drains the others; a star has no cycle of waits, so there
 * is no deadlock for any nslots.
 *
 * Chunk arithmetic: k = ceil(count / chunk) slices of chunk_bytes / esize
 * elements (at least one, possibly empty, message per sender even for
 * count = 0).
 *
 * Cost: k alpha per sender, serialised at the root: (p-1) k alpha +
 * (p-1) n beta at the root (n = block bytes), the minimum for a gather.
 */
#include <string.h>

#include "../pattern.h"
#include "../prims.h"
#include "algo.h"

rc_status_t rc_gather_direct(rc_comm_t *c, const rc_task_t *t) {
    const int p = c->size, root = t->root;
    const size_t es = c->cur.esize;
    const uint64_t chunk = c->chunk_bytes / es;
    const uint64_t count = t->count, steps = rc_nchunks(count, chunk);
    const size_t block = (size_t)(count * es);
    const char *src = (const char *)t->sendbuf;

    if (c->rank != root) {
        for (uint64_t it = 0; it < steps; it++) {
            const uint64_t n = rc_slice_len(count, chunk, it);
            RC_CHECK(rc_prim_send(c, root, n ? src + it * chunk * es : src, (size_t)(n * es)));
        }
        return RC_OK;
    }
    char *dst = (char *)t->recvbuf;
    for (uint64_t it = 0; it < steps; it++) {
        const uint64_t n = rc_slice_len(count, chunk, it);
        const size_t off = n ? (size_t)(it * chunk * es) : 0;
        for (int k = 1; k < p; k++) {
            const int from = (root + k) % p;
            char *at = n ? dst + (size_t)from * block + off : dst;
            RC_CHECK(rc_prim_recv(c, from, at, (size_t)(n * es)));
        }
    }
    /* our own block, unless it is already in place */
    char *mine = block ? dst + (size_t)root * block : dst;
    if (block && (const char *)mine != src) {
        if (c->cur.stream) rc_copy_stream(mine, src, block);
        else memcpy(mine, src, block);
    }
    return RC_OK;
}
