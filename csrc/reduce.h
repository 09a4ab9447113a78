/* reduce.h - internal interface of the reduction kernels (csrc/reduce.c).
 *
 * The kernels are the bottom layer of ringcomm: they know nothing of ranks,
 * transports or chunks.  A kernel computes dst[i] = a[i] op b[i] for i < n;
 * dst may be exactly a or exactly b (in place), otherwise no overlap.
 *
 * Two kernel sets are compiled from one source (reduce_kernels.inc): a
 * baseline one ("generic": x86-64 SSE2, or whatever the target's baseline is)
 * and, on x86, one for AVX2+F16C+FMA ("avx2").  The set is chosen once, at the
 * first call, from the CPU (and RINGCOMM_ISA=generic|avx2|auto); the returned
 * function pointers can be cached by callers.  Both sets give bitwise-equal
 * results for every input that is not a NaN (NaN results are NaN in both,
 * payloads may differ).
 */
#ifndef RC_REDUCE_H
#define RC_REDUCE_H

#include <stddef.h>
#include "ringcomm.h"

/* dst[i] = a[i] op b[i]; dst may be exactly a or b. */
typedef void (*rc_reduce_fn)(void *dst, const void *a, const void *b, size_t n);
/* buf[i] = buf[i] / divisor. */
typedef void (*rc_scale_fn)(void *buf, size_t n, double divisor);

/* The kernel of the active set, NULL when the pair is unsupported
 * (see rc_op_valid_for).  RC_AVG returns the RC_SUM kernel. */
rc_reduce_fn rc_reduce_get(rc_dtype_t dt, rc_op_t op);
/* The scale kernel of the active set; NULL for non-floating types. */
rc_scale_fn rc_scale_get(rc_dtype_t dt);
/* 1 when op is defined for dt, else 0: sum/prod/min/max for every numeric
 * type, avg for floating types only, band/bor/bxor for integer types only
 * (int8, uint8, int32, int64); bool supports no op. */
int rc_op_valid_for(rc_dtype_t dt, rc_op_t op);

/* Tests and benchmarks: force a kernel set.  isa is "generic", "avx2", or
 * NULL / "auto" (CPU detection, honouring RINGCOMM_ISA).  Returns
 * RC_ERR_NOT_SUPPORTED (and keeps the current set) when this CPU or build
 * lacks the set, RC_ERR_INVALID_ARG for an unknown name.  Not meant to be
 * called while other threads reduce: pointers they already fetched keep
 * pointing at the old set (which stays valid). */
rc_status_t rc_reduce_set_isa(const char *isa);
/* First NaN/inf element of buf (n when none, or not a floating type). */
size_t rc_find_nonfinite(const void *buf, size_t n, rc_dtype_t dt);

#endif /* RC_REDUCE_H */
