/* reduce.c - reduction kernels: dtype x op table, two ISA sets, runtime
 * dispatch, and the public rc_reduce_local / rc_scale_local / name helpers.
 *
 * The kernels live in reduce_kernels.inc, included twice: once for the
 * baseline target ("generic") and, on x86, once under
 * target("avx2,f16c,fma") ("avx2").  The set is picked once, at first use:
 * avx2 when the CPU has AVX2, F16C and FMA, unless RINGCOMM_ISA=generic.
 *
 * Vectorisation (gcc 12.2 -O3, -fopt-info-vec-optimized and objdump): every
 * plain C loop vectorises in both sets (xmm in generic, ymm in avx2, e.g.
 * f32 sum is vmovups/vaddps/vmovups) behind a runtime alias check that
 * dst == a and dst == b pass (it tests distance; same-index read-then-write
 * has none).  Only int64 prod (gcc emulates a 64-bit vector multiply for
 * AVX2 only) and int64 min/max (no pcmpgtq) stay scalar in the generic set.
 * Generic f16 vectorised only once the conversions' selects were written as
 * masks: with ?: gcc sank the float ops into branches and refused to
 * if-convert them ("control flow in loop"); SSE2 lacks unsigned compares and
 * pmovzx/packusdw, so compares are signed and it is still ~2.5 GB/s.  gcc's
 * bf16 loop for AVX2 was ~45 instrs per 16 lanes (vpmovzxwd + shifts, and +
 * vpackusdw + vpermq); the hand-written unpack/pack version is ~1.6x faster.
 * float16 on AVX2 is vcvtph2ps/vcvtps2ph (8 lanes), ~2x the bf16 speed.
 * Results of the two sets are bitwise equal except for NaN payloads.
 *
 * Not compiled with -ffast-math (the conversions and NaN rules depend on
 * IEEE behaviour); kernels assume the default rounding mode and no FTZ/DAZ.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reduce.h"

#if defined(__x86_64__) || defined(__i386__)
#define RC_X86 1
#include <immintrin.h>
#else
#define RC_X86 0
#endif

#if RC_X86 && (defined(__GNUC__) || defined(__clang__))
#define RC_HAVE_AVX2_SET 1
#else
#define RC_HAVE_AVX2_SET 0
#endif

/* ---- loop templates used by reduce_kernels.inc ---- */

/* Element expressions over x (from a) and y (from b).  Float min/max are
 * numpy's: NaN in either input gives NaN; otherwise ties keep x. */
#define RC_E_ADD (x + y)
#define RC_E_MUL (x * y)
#define RC_E_AND (x & y)
#define RC_E_OR (x | y)
#define RC_E_XOR (x ^ y)
#define RC_E_IMIN (x < y ? x : y)
#define RC_E_IMAX (x > y ? x : y)
#define RC_E_FMIN ((x <= y || x != x) ? x : y)
#define RC_E_FMAX ((x >= y || x != x) ? x : y)

/* dst[i] = EXPR(a[i], b[i]) on type T.  Both loads happen before the store at
 * the same index, so dst == a / dst == b is fine. */
#define RC_KDEF(NAME, T, EXPR)                                                   \
    static void RC_SFX(NAME)(void *dst, const void *a, const void *b, size_t n)  \
    {                                                                            \
        const T *pa = (const T *)a;                                              \
        const T *pb = (const T *)b;                                              \
        T *pd = (T *)dst;                                                        \
        for (size_t i = 0; i < n; i++) {                                         \
            const T x = pa[i];                                                   \
            const T y = pb[i];                                                   \
            pd[i] = (T)EXPR;                                                     \
        }                                                                        \
    }

/* 16-bit floats: widen both with TOF, compute in float32, round once. */
#define RC_KDEF_H(NAME, TOF, FROMF, EXPR)                                        \
    static void RC_SFX(NAME)(void *dst, const void *a, const void *b, size_t n)  \
    {                                                                            \
        const uint16_t *pa = (const uint16_t *)a;                                \
        const uint16_t *pb = (const uint16_t *)b;                                \
        uint16_t *pd = (uint16_t *)dst;                                          \
        for (size_t i = 0; i < n; i++) {                                         \
            const float x = TOF(pa[i]);                                          \
            const float y = TOF(pb[i]);                                          \
            pd[i] = FROMF(EXPR);                                                 \
        }                                                                        \
    }

/* ---- the baseline set ---- */
#define RC_SFX(name) name##_generic
#define RC_F16C 0
#include "reduce_kernels.inc"
#undef RC_SFX
#undef RC_F16C

/* ---- the AVX2 + F16C + FMA set ---- */
#if RC_HAVE_AVX2_SET
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,f16c,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,f16c,fma")
#endif
#define RC_SFX(name) name##_avx2
#define RC_F16C 1
#include "reduce_kernels.inc"
#undef RC_SFX
#undef RC_F16C
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif /* RC_HAVE_AVX2_SET */

/* ---- dispatch ---- */

typedef struct {
    const char *name;
    const rc_reduce_fn (*reduce)[RC_NUM_OPS];
    const rc_scale_fn *scale;
} rc_kset_t;

static const rc_kset_t rc_kset_generic = {
    "generic", rc_reduce_table_generic, rc_scale_table_generic};
#if RC_HAVE_AVX2_SET
static const rc_kset_t rc_kset_avx2 = {
    "avx2", rc_reduce_table_avx2, rc_scale_table_avx2};
#endif

static _Atomic(const rc_kset_t *) rc_kset_active;

#if RC_HAVE_AVX2_SET
static int rc_cpu_has_avx2_set(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
           __builtin_cpu_supports("fma");
}
#endif

static const rc_kset_t *rc_kset_detect(void)
{
    const char *env = getenv("RINGCOMM_ISA");
    if (env != NULL && strcmp(env, "generic") == 0)
        return &rc_kset_generic;
#if RC_HAVE_AVX2_SET
    if (rc_cpu_has_avx2_set())
        return &rc_kset_avx2;
#endif
    return &rc_kset_generic;
}

static const rc_kset_t *rc_kset(void)
{
    const rc_kset_t *k = atomic_load_explicit(&rc_kset_active, memory_order_acquire);
    if (k == NULL) {
        /* Racing first calls compute the same answer; either store wins. */
        k = rc_kset_detect();
        atomic_store_explicit(&rc_kset_active, k, memory_order_release);
    }
    return k;
}

rc_status_t rc_reduce_set_isa(const char *isa)
{
    const rc_kset_t *k;
    if (isa == NULL || strcmp(isa, "auto") == 0) {
        k = rc_kset_detect();
    } else if (strcmp(isa, "generic") == 0) {
        k = &rc_kset_generic;
    } else if (strcmp(isa, "avx2") == 0) {
#if RC_HAVE_AVX2_SET
        if (!rc_cpu_has_avx2_set())
            return RC_ERR_NOT_SUPPORTED;
        k = &rc_kset_avx2;
#else
        return RC_ERR_NOT_SUPPORTED;
#endif
    } else {
        return RC_ERR_INVALID_ARG;
    }
    atomic_store_explicit(&rc_kset_active, k, memory_order_release);
    return RC_OK;
}

int rc_op_valid_for(rc_dtype_t dt, rc_op_t op)
{
    if ((unsigned)op >= RC_NUM_OPS)
        return 0;
    switch (dt) {
    case RC_FLOAT32:
    case RC_FLOAT64:
    case RC_FLOAT16:
    case RC_BFLOAT16:
        return op <= RC_AVG;
    case RC_INT8:
    case RC_UINT8:
    case RC_INT32:
    case RC_INT64:
        return op != RC_AVG;
    default: /* RC_BOOL and unknown values */
        return 0;
    }
}

rc_reduce_fn rc_reduce_get(rc_dtype_t dt, rc_op_t op)
{
    if (!rc_op_valid_for(dt, op))
        return NULL;
    return rc_kset()->reduce[dt][op];
}

rc_scale_fn rc_scale_get(rc_dtype_t dt)
{
    if ((unsigned)dt >= RC_NUM_DTYPES)
        return NULL;
    return rc_kset()->scale[dt];
}

/* ---- public API (ringcomm.h) ---- */

const char *rc_reduce_isa(void)
{
    return rc_kset()->name;
}

size_t rc_dtype_size(rc_dtype_t dt)
{
    switch (dt) {
    case RC_FLOAT32: return 4;
    case RC_FLOAT64: return 8;
    case RC_FLOAT16: return 2;
    case RC_BFLOAT16: return 2;
    case RC_INT8: return 1;
    case RC_UINT8: return 1;
    case RC_INT32: return 4;
    case RC_INT64: return 8;
    case RC_BOOL: return 1;
    default: return 0;
    }
}

const char *rc_dtype_name(rc_dtype_t dt)
{
    static const char *const names[RC_NUM_DTYPES] = {
        [RC_FLOAT32] = "float32", [RC_FLOAT64] = "float64", [RC_FLOAT16] = "float16",
        [RC_BFLOAT16] = "bfloat16", [RC_INT8] = "int8", [RC_UINT8] = "uint8",
        [RC_INT32] = "int32", [RC_INT64] = "int64", [RC_BOOL] = "bool",
    };
    return (unsigned)dt < RC_NUM_DTYPES ? names[dt] : "unknown";
}

const char *rc_op_name(rc_op_t op)
{
    static const char *const names[RC_NUM_OPS] = {
        [RC_SUM] = "sum", [RC_PROD] = "prod", [RC_MIN] = "min", [RC_MAX] = "max",
        [RC_AVG] = "avg", [RC_BAND] = "band", [RC_BOR] = "bor", [RC_BXOR] = "bxor",
    };
    return (unsigned)op < RC_NUM_OPS ? names[op] : "unknown";
}

/* 1 when [p, p+bytes) and [q, q+bytes) overlap without being identical. */
static int rc_partial_overlap(const void *p, const void *q, size_t bytes)
{
    const uintptr_t x = (uintptr_t)p, y = (uintptr_t)q;
    if (x == y)
        return 0;
    return x < y ? y - x < bytes : x - y < bytes;
}

rc_status_t rc_reduce_local(void *dst, const void *a, const void *b, size_t n,
                            rc_dtype_t dt, rc_op_t op)
{
    rc_reduce_fn fn = rc_reduce_get(dt, op);
    if (fn == NULL)
        return RC_ERR_INVALID_ARG;
    if (n == 0)
        return RC_OK;
    const size_t es = rc_dtype_size(dt);
    if (dst == NULL || a == NULL || b == NULL || n > SIZE_MAX / es)
        return RC_ERR_INVALID_ARG;
    if (rc_partial_overlap(dst, a, n * es) || rc_partial_overlap(dst, b, n * es))
        return RC_ERR_INVALID_ARG;
    fn(dst, a, b, n);
    return RC_OK;
}

rc_status_t rc_scale_local(void *buf, size_t n, rc_dtype_t dt, double divisor)
{
    rc_scale_fn fn = rc_scale_get(dt);
    if (fn == NULL)
        return RC_ERR_INVALID_ARG;
    if (n == 0)
        return RC_OK;
    if (buf == NULL)
        return RC_ERR_INVALID_ARG;
    fn(buf, n, divisor);
    return RC_OK;
}

/* Index of the first NaN or infinity in buf, or n when there is none (and
 * for non-floating types).  RINGCOMM_CHECK_NAN=1 runs it on every input. */
size_t rc_find_nonfinite(const void *buf, size_t n, rc_dtype_t dt)
{
    size_t i;
    switch (dt) {
    case RC_FLOAT32: {
        const uint32_t *x = (const uint32_t *)buf;
        for (i = 0; i < n; i++)
            if ((x[i] & 0x7f800000u) == 0x7f800000u) return i;
        return n;
    }
    case RC_FLOAT64: {
        const uint64_t *x = (const uint64_t *)buf;
        for (i = 0; i < n; i++)
            if ((x[i] & 0x7ff0000000000000ull) == 0x7ff0000000000000ull) return i;
        return n;
    }
    case RC_FLOAT16: {
        const uint16_t *x = (const uint16_t *)buf;
        for (i = 0; i < n; i++)
            if ((x[i] & 0x7c00u) == 0x7c00u) return i;
        return n;
    }
    case RC_BFLOAT16: {
        const uint16_t *x = (const uint16_t *)buf;
        for (i = 0; i < n; i++)
            if ((x[i] & 0x7f80u) == 0x7f80u) return i;
        return n;
    }
    default:
        return n;
    }
}
