/* pattern.h - rank arithmetic: ring neighbours, balanced segments, chunk
 * slices and binomial trees.  Pure functions, no state. */
#ifndef RC_PATTERN_H
#define RC_PATTERN_H

#include <stdint.h>

static inline int rc_mod(int a, int p) { return ((a % p) + p) % p; }
static inline int rc_ring_next(int rank, int p) { return rank + 1 == p ? 0 : rank + 1; }
static inline int rc_ring_prev(int rank, int p) { return rank == 0 ? p - 1 : rank - 1; }

/* Segment i of n elements split over p ranks: the first n % p segments hold
 * one element more. */
static inline uint64_t rc_seg_off(uint64_t n, int p, int i) {
    uint64_t q = n / (uint64_t)p, r = n % (uint64_t)p;
    return (uint64_t)i * q + ((uint64_t)i < r ? (uint64_t)i : r);
}
static inline uint64_t rc_seg_len(uint64_t n, int p, int i) {
    return n / (uint64_t)p + ((uint64_t)i < n % (uint64_t)p ? 1 : 0);
}

/* Slice `it` (of `chunk` elements) of a segment of `len` elements: its
 * offset inside the segment is it * chunk; returns its length (0 past the end). */
static inline uint64_t rc_slice_len(uint64_t len, uint64_t chunk, uint64_t it) {
    uint64_t start = it * chunk;
    if (start >= len) return 0;
    return len - start < chunk ? len - start : chunk;
}

/* Number of pipeline steps for `len` elements in chunks of `chunk`; at least
 * one, so that a zero-length call still exchanges (empty) messages and a
 * mismatched peer is still detected. */
static inline uint64_t rc_nchunks(uint64_t len, uint64_t chunk) {
    uint64_t k = (len + chunk - 1) / chunk;
    return k ? k : 1;
}

/* Binomial tree rooted at 0 over relative ranks: parent clears the lowest set
 * bit; children are rank + 2^k for 2^k below the lowest set bit (any k for
 * the root) while < p. */
static inline int rc_lowbit(int x) { return x & -x; }
static inline int rc_binom_parent(int vrank) { return vrank - rc_lowbit(vrank); }
/* Upper bound (exclusive) for child offsets: children are vrank + 1, + 2, + 4, ... < limit. */
static inline int rc_binom_child_limit(int vrank, int p) {
    return vrank == 0 ? p : rc_lowbit(vrank);
}

#endif
