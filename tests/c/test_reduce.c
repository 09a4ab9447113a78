/* test_reduce.c - standalone test of the reduction kernels (csrc/reduce.c).
 *
 *   gcc -O3 -Wall -Wextra -std=c11 -I csrc/include -I csrc \
 *       csrc/reduce.c tests/c/test_reduce.c -o /tmp/test_reduce && /tmp/test_reduce
 *   RINGCOMM_ISA=generic /tmp/test_reduce     (also checks the env override)
 *   /tmp/test_reduce bench                    (GB/s table, no checks)
 *
 * Every dtype x op on every kernel set this CPU runs, against a naive scalar
 * reference written independently of the kernels (half/bfloat16 conversions
 * by frexp/ldexp and explicit nearest-even selection).  Inputs mix random bit
 * patterns (all NaN payloads, infinities, denormals) with ordinary values and
 * near-overflow values; lengths 0, 1, 7, 33, 1000003 and others around the
 * vector widths; out of place, dst == a, dst == b, dst == a == b, misaligned
 * pointers, with guard elements after dst.  Results must be bitwise equal to
 * the reference, except that a NaN only has to be a NaN.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reduce.h"

static int g_failures;
static long g_checks;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        g_checks++;                                                       \
        if (!(cond)) {                                                    \
            if (g_failures < 40) {                                        \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);      \
                fprintf(stderr, __VA_ARGS__);                             \
                fputc('\n', stderr);                                      \
            }                                                             \
            g_failures++;                                                 \
        }                                                                 \
    } while (0)

/* ---- deterministic random numbers (splitmix64) ---- */
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rnd_unit(void) { return (double)(rnd() >> 11) * 0x1.0p-53; }

/* ---- reference conversions (slow and obvious) ---- */
static float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static float ref_h2f(uint16_t h)
{
    const int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31) {
        if (m == 0)
            v = INFINITY;
        else
            return f32_from_bits((uint32_t)sign << 31 | 0x7FC00000u | (uint32_t)m << 13);
    } else if (e == 0) {
        v = ldexp((double)m, -24);
    } else {
        v = ldexp((double)(m + 1024), e - 25);
    }
    return (float)(sign ? -v : v);
}

/* round-half-to-even of a non-negative double below 2^52 to an integer
 * (integer truncation: no libm needed) */
static double rne(double x)
{
    const uint64_t i = (uint64_t)x;
    const double d = x - (double)i;
    return (double)(i + (d > 0.5 || (d == 0.5 && (i & 1))));
}

static uint16_t ref_f2h(float f)
{
    const uint32_t w = f32_bits(f);
    const uint16_t sign = (uint16_t)((w >> 16) & 0x8000u);
    if (isnan(f))  /* as F16C: quiet, sign and top payload bits kept */
        return (uint16_t)(sign | 0x7E00u | ((w >> 13) & 0x3FFu));
    const double x = fabs((double)f);
    if (x >= 65520.0)  /* halfway between 65504 and 2^16 rounds to even = inf */
        return (uint16_t)(sign | 0x7C00u);
    if (x < 0x1.0p-14)  /* denormal range (rounding up may reach 0x0400: fine) */
        return (uint16_t)(sign | (uint16_t)rne(x * 0x1.0p24));
    int e;
    const double fr = frexp(x, &e);  /* x = fr * 2^e, fr in [0.5,1) */
    double q = rne((fr * 2.0 - 1.0) * 1024.0);
    int be = e - 1 + 15;
    if (q == 1024.0) { q = 0; be++; }
    return (uint16_t)(sign | (uint16_t)(be << 10) | (uint16_t)q);
}

static float ref_bf2f(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

static uint16_t ref_f2bf(float f)
{
    const uint32_t w = f32_bits(f);
    if (isnan(f))
        return (uint16_t)((w >> 16) | 0x40u);
    if (isinf(f))
        return (uint16_t)(w >> 16);
    /* the two neighbours, compared as exact doubles */
    const uint32_t lo = w & 0xFFFF0000u;
    const double dlo = (double)f32_from_bits(lo);
    const uint32_t hi = lo + 0x10000u;  /* may step to inf: exponent all ones */
    double dhi;
    if (((hi >> 23) & 0xFF) == 0xFF)    /* overflow: nearest-even sees 2^128 */
        dhi = (w >> 31 ? -1.0 : 1.0) * 0x1.0p128;
    else
        dhi = (double)f32_from_bits(hi);
    const double x = (double)f;
    const double dl = fabs(x - dlo), dh = fabs(dhi - x);
    if (dl < dh || (dl == dh && ((lo >> 16) & 1) == 0))
        return (uint16_t)(lo >> 16);
    return (uint16_t)(hi >> 16);
}

/* ---- reference ops ---- */
static double ref_fop(rc_op_t op, double x, double y)
{
    switch (op) {
    case RC_SUM: case RC_AVG: return x + y;
    case RC_PROD: return x * y;
    case RC_MIN: return (isnan(x) || x <= y) ? x : y;  /* np.minimum */
    case RC_MAX: return (isnan(x) || x >= y) ? x : y;
    default: abort();
    }
}
/* float32 ops must be done in float, not double (double rounding) */
static float ref_fop32(rc_op_t op, float x, float y)
{
    switch (op) {
    case RC_SUM: case RC_AVG: return x + y;
    case RC_PROD: return x * y;
    default: return (float)ref_fop(op, x, y);  /* min/max: exact */
    }
}

static uint64_t ref_iop(rc_op_t op, int64_t x, int64_t y, int bits, int is_signed)
{
    uint64_t r;
    switch (op) {
    case RC_SUM: r = (uint64_t)x + (uint64_t)y; break;
    case RC_PROD: r = (uint64_t)x * (uint64_t)y; break;
    case RC_MIN: r = (uint64_t)(x < y ? x : y); break;
    case RC_MAX: r = (uint64_t)(x > y ? x : y); break;
    case RC_BAND: r = (uint64_t)x & (uint64_t)y; break;
    case RC_BOR: r = (uint64_t)x | (uint64_t)y; break;
    case RC_BXOR: r = (uint64_t)x ^ (uint64_t)y; break;
    default: abort();
    }
    (void)is_signed;
    return bits == 64 ? r : r & ((1ull << bits) - 1);
}

/* element i of a buffer as a signed/unsigned 64-bit integer */
static int64_t load_int(const void *p, size_t i, rc_dtype_t dt)
{
    switch (dt) {
    case RC_INT8: return ((const int8_t *)p)[i];
    case RC_UINT8: return ((const uint8_t *)p)[i];
    case RC_INT32: return ((const int32_t *)p)[i];
    case RC_INT64: return ((const int64_t *)p)[i];
    default: abort();
    }
}

static int is_float(rc_dtype_t dt) { return dt <= RC_BFLOAT16; }

/* ref[i] = a[i] op b[i], as raw bits */
static void ref_reduce(void *dst, const void *a, const void *b, size_t n, rc_dtype_t dt, rc_op_t op)
{
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case RC_FLOAT32:
            ((float *)dst)[i] = ref_fop32(op, ((const float *)a)[i], ((const float *)b)[i]);
            break;
        case RC_FLOAT64:
            ((double *)dst)[i] = ref_fop(op, ((const double *)a)[i], ((const double *)b)[i]);
            break;
        case RC_FLOAT16:
            ((uint16_t *)dst)[i] = ref_f2h(ref_fop32(op, ref_h2f(((const uint16_t *)a)[i]),
                                                     ref_h2f(((const uint16_t *)b)[i])));
            break;
        case RC_BFLOAT16:
            ((uint16_t *)dst)[i] = ref_f2bf(ref_fop32(op, ref_bf2f(((const uint16_t *)a)[i]),
                                                      ref_bf2f(((const uint16_t *)b)[i])));
            break;
        default: {
            const int bits = (int)rc_dtype_size(dt) * 8;
            const uint64_t r = ref_iop(op, load_int(a, i, dt), load_int(b, i, dt), bits,
                                       dt != RC_UINT8);
            memcpy((char *)dst + i * (size_t)(bits / 8), &r, (size_t)(bits / 8)); /* little endian */
        }
        }
    }
}

static void ref_scale(void *buf, size_t n, rc_dtype_t dt, double d)
{
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case RC_FLOAT32: ((float *)buf)[i] = ((float *)buf)[i] / (float)d; break;
        case RC_FLOAT64: ((double *)buf)[i] = ((double *)buf)[i] / d; break;
        case RC_FLOAT16:
            ((uint16_t *)buf)[i] = ref_f2h(ref_h2f(((uint16_t *)buf)[i]) / (float)d);
            break;
        case RC_BFLOAT16:
            ((uint16_t *)buf)[i] = ref_f2bf(ref_bf2f(((uint16_t *)buf)[i]) / (float)d);
            break;
        default: abort();
        }
    }
}

/* is element i a NaN (floats only) */
static int elem_isnan(const void *p, size_t i, rc_dtype_t dt)
{
    switch (dt) {
    case RC_FLOAT32: return isnan(((const float *)p)[i]);
    case RC_FLOAT64: return isnan(((const double *)p)[i]);
    case RC_FLOAT16: { uint16_t h = ((const uint16_t *)p)[i]; return (h & 0x7C00) == 0x7C00 && (h & 0x3FF); }
    case RC_BFLOAT16: { uint16_t h = ((const uint16_t *)p)[i]; return (h & 0x7F80) == 0x7F80 && (h & 0x7F); }
    default: return 0;
    }
}

static void describe(char *out, size_t cap, const void *p, size_t i, rc_dtype_t dt)
{
    const size_t es = rc_dtype_size(dt);
    uint64_t bits = 0;
    memcpy(&bits, (const char *)p + i * es, es);
    double v = 0;
    switch (dt) {
    case RC_FLOAT32: v = ((const float *)p)[i]; break;
    case RC_FLOAT64: v = ((const double *)p)[i]; break;
    case RC_FLOAT16: v = ref_h2f(((const uint16_t *)p)[i]); break;
    case RC_BFLOAT16: v = ref_bf2f(((const uint16_t *)p)[i]); break;
    default: v = (double)load_int(p, i, dt);
    }
    snprintf(out, cap, "%.9g (0x%llx)", v, (unsigned long long)bits);
}

/* compare n elements: bitwise, or both NaN; returns the first bad index or n */
static size_t compare(const void *got, const void *want, size_t n, rc_dtype_t dt)
{
    const size_t es = rc_dtype_size(dt);
    if (memcmp(got, want, n * es) == 0)
        return n;
    for (size_t i = 0; i < n; i++) {
        if (memcmp((const char *)got + i * es, (const char *)want + i * es, es) == 0)
            continue;
        if (is_float(dt) && elem_isnan(got, i, dt) && elem_isnan(want, i, dt))
            continue;
        return i;
    }
    return n;
}

/* ---- input generation ---- */
static const float k_f32_special[] = {
    0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1.0f, -1.0f, 3.4028235e38f, -3.4028235e38f,
    1.17549435e-38f, 1.4e-45f, -1.4e-45f, 65504.0f, 65520.0f, 65519.99f, 6.1035156e-05f,
    5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f, 1e-10f, 0.5f, 1.5f, 2.5f,
};

/* fill n elements; "mode" picks the mix: 0 random bits, 1 ordinary values,
 * 2 specials / near-overflow. */
static void fill(void *p, size_t n, rc_dtype_t dt)
{
    for (size_t i = 0; i < n; i++) {
        const uint64_t r = rnd();
        const int mode = (int)(r % 8) < 2 ? 0 : ((int)(r % 8) < 7 ? 1 : 2);
        const double ord = (rnd_unit() - 0.5) * ldexp(1.0, (int)(rnd() % 24) - 8);
        const float sp = k_f32_special[rnd() % (sizeof k_f32_special / sizeof k_f32_special[0])];
        switch (dt) {
        case RC_FLOAT32: {
            float v = mode == 0 ? f32_from_bits((uint32_t)rnd()) : mode == 1 ? (float)ord : sp;
            ((float *)p)[i] = v;
            break;
        }
        case RC_FLOAT64: {
            double v;
            if (mode == 0) { uint64_t u = rnd(); memcpy(&v, &u, 8); }
            else if (mode == 1) v = ord;
            else v = (rnd() & 1) ? (double)sp : (rnd() & 1 ? 1.7976931348623157e308 : 4.9e-324);
            ((double *)p)[i] = v;
            break;
        }
        case RC_FLOAT16: {
            uint16_t h;
            if (mode == 0) h = (uint16_t)rnd();
            else if (mode == 1) h = ref_f2h((float)ord);
            else h = ref_f2h(sp) ^ (uint16_t)(rnd() & 1); /* specials and their neighbours */
            ((uint16_t *)p)[i] = h;
            break;
        }
        case RC_BFLOAT16: {
            uint16_t h;
            if (mode == 0) h = (uint16_t)rnd();
            else if (mode == 1) h = ref_f2bf((float)ord);
            else h = (uint16_t)(ref_f2bf(sp) ^ (uint16_t)(rnd() & 1));
            ((uint16_t *)p)[i] = h;
            break;
        }
        case RC_INT8: case RC_UINT8: ((uint8_t *)p)[i] = (uint8_t)r; break;
        case RC_INT32: ((uint32_t *)p)[i] = mode == 1 ? (uint32_t)(int32_t)(ord * 1000) : (uint32_t)(r >> 7); break;
        case RC_INT64: ((uint64_t *)p)[i] = mode == 1 ? (uint64_t)(int64_t)(ord * 1e6) : r; break;
        default: memset((char *)p + i, (int)(r & 1), 1);
        }
    }
}

/* ---- the tests ---- */
#define GUARD 64  /* guard bytes after dst */

static void test_pair(rc_dtype_t dt, rc_op_t op, size_t n, const char *isa)
{
    const size_t es = rc_dtype_size(dt);
    const size_t bytes = n * es;
    /* +es so pointers can be misaligned by one element */
    unsigned char *a = malloc(bytes + es), *b = malloc(bytes + es);
    unsigned char *d = malloc(bytes + es + GUARD), *want = malloc(bytes + es);
    unsigned char *a0 = malloc(bytes + es), *b0 = malloc(bytes + es);
    if (!a || !b || !d || !want || !a0 || !b0) { perror("malloc"); exit(2); }
    const size_t off = (n & 1) ? es : 0;  /* odd n: misaligned start */
    unsigned char *pa = a + off, *pb = b + off, *pd = d + off;
    fill(pa, n, dt);
    fill(pb, n, dt);
    memcpy(a0, pa, bytes);
    memcpy(b0, pb, bytes);
    char s1[64] = "", s2[64] = "", s3[64] = "", s4[64] = "";

    enum { OUT, DST_A, DST_B, DST_AB, NMODES };
    static const char *const mode_name[] = {"out-of-place", "dst==a", "dst==b", "dst==a==b"};
    for (int mode = 0; mode < NMODES; mode++) {
        memcpy(pa, a0, bytes);
        memcpy(pb, b0, bytes);
        void *dst = pd;
        const void *x = pa, *y = pb;
        if (mode == DST_A) dst = pa;
        if (mode == DST_B) dst = pb;
        if (mode == DST_AB) { dst = pa; y = pa; }
        ref_reduce(want, a0, mode == DST_AB ? a0 : b0, n, dt, op);
        memset(pd, 0xA5, bytes + GUARD - off);
        rc_status_t st = rc_reduce_local(dst, x, y, n, dt, op);
        CHECK(st == RC_OK, "[%s] %s %s n=%zu %s: status %d", isa, rc_dtype_name(dt),
              rc_op_name(op), n, mode_name[mode], (int)st);
        size_t bad = compare(dst, want, n, dt);
        if (bad < n) {
            describe(s1, sizeof s1, a0, bad, dt);
            describe(s2, sizeof s2, mode == DST_AB ? a0 : b0, bad, dt);
            describe(s3, sizeof s3, dst, bad, dt);
            describe(s4, sizeof s4, want, bad, dt);
        }
        CHECK(bad == n, "[%s] %s %s n=%zu %s: at %zu: %s op %s = %s, want %s", isa,
              rc_dtype_name(dt), rc_op_name(op), n, mode_name[mode], bad, s1, s2, s3, s4);
        if (mode == OUT) {
            int guard_ok = 1;
            for (size_t g = 0; g < GUARD - off; g++)
                guard_ok &= pd[bytes + g] == 0xA5;
            CHECK(guard_ok, "[%s] %s %s n=%zu: wrote past dst", isa, rc_dtype_name(dt),
                  rc_op_name(op), n);
            CHECK(memcmp(pa, a0, bytes) == 0 && memcmp(pb, b0, bytes) == 0,
                  "[%s] %s %s n=%zu: inputs modified", isa, rc_dtype_name(dt), rc_op_name(op), n);
        }
        if (mode == DST_A)
            CHECK(memcmp(pb, b0, bytes) == 0, "[%s] %s %s n=%zu dst==a: b modified", isa,
                  rc_dtype_name(dt), rc_op_name(op), n);
        if (mode == DST_B)
            CHECK(memcmp(pa, a0, bytes) == 0, "[%s] %s %s n=%zu dst==b: a modified", isa,
                  rc_dtype_name(dt), rc_op_name(op), n);
    }
    free(a); free(b); free(d); free(want); free(a0); free(b0);
}

static void test_scale(rc_dtype_t dt, size_t n, double divisor, const char *isa)
{
    const size_t es = rc_dtype_size(dt);
    unsigned char *buf = malloc(n * es + es + GUARD), *want = malloc(n * es + 1);
    if (!buf || !want) { perror("malloc"); exit(2); }
    unsigned char *p = buf + ((n & 1) ? es : 0);
    memset(buf, 0xA5, n * es + es + GUARD);
    fill(p, n, dt);
    memcpy(want, p, n * es);
    ref_scale(want, n, dt, divisor);
    rc_status_t st = rc_scale_local(p, n, dt, divisor);
    CHECK(st == RC_OK, "[%s] scale %s: status %d", isa, rc_dtype_name(dt), (int)st);
    size_t bad = compare(p, want, n, dt);
    char s1[64] = "", s2[64] = "";
    if (bad < n) { describe(s1, sizeof s1, p, bad, dt); describe(s2, sizeof s2, want, bad, dt); }
    CHECK(bad == n, "[%s] scale %s n=%zu /%g: at %zu got %s want %s", isa, rc_dtype_name(dt), n,
          divisor, bad, s1, s2);
    int guard_ok = 1;
    for (size_t g = 0; g < GUARD; g++)
        guard_ok &= p[n * es + g] == 0xA5;
    CHECK(guard_ok, "[%s] scale %s n=%zu: wrote past end", isa, rc_dtype_name(dt), n);
    free(buf); free(want);
}

/* All 65536 halves / bfloat16s: x + (-0) must be x (conversion round trip),
 * and all 2^16 x 256 products / quotients against the reference. */
static void test_exhaustive16(rc_dtype_t dt, const char *isa)
{
    const size_t n = 65536;
    uint16_t *x = malloc(n * 2), *y = malloc(n * 2), *got = malloc(n * 2), *want = malloc(n * 2);
    if (!x || !y || !got || !want) { perror("malloc"); exit(2); }
    for (size_t i = 0; i < n; i++) { x[i] = (uint16_t)i; y[i] = 0x8000; }
    rc_reduce_local(got, x, y, n, dt, RC_SUM);
    ref_reduce(want, x, y, n, dt, RC_SUM);
    size_t bad = compare(got, want, n, dt);
    CHECK(bad == n, "[%s] %s: all-values round trip fails at 0x%04zx: got 0x%04x want 0x%04x",
          isa, rc_dtype_name(dt), bad, bad < n ? got[bad] : 0, bad < n ? want[bad] : 0);
    int rounds = 0;
    for (int k = 0; k < 256; k++) {
        const uint16_t yk = (uint16_t)rnd();
        for (size_t i = 0; i < n; i++) y[i] = yk;
        for (int op = RC_SUM; op <= RC_MAX; op++) {
            rc_reduce_local(got, x, y, n, dt, (rc_op_t)op);
            ref_reduce(want, x, y, n, dt, (rc_op_t)op);
            bad = compare(got, want, n, dt);
            CHECK(bad == n, "[%s] %s %s with 0x%04x fails at 0x%04zx: got 0x%04x want 0x%04x", isa,
                  rc_dtype_name(dt), rc_op_name((rc_op_t)op), yk, bad, bad < n ? got[bad] : 0,
                  bad < n ? want[bad] : 0);
            rounds++;
        }
    }
    /* scale all values by a few awkward divisors */
    static const double divs[] = {3.0, 7.0, 0.1, 1e-5, 1e5, 65536.0, 1.0 / 3.0, -1.5};
    for (size_t k = 0; k < sizeof divs / sizeof divs[0]; k++) {
        memcpy(got, x, n * 2);
        memcpy(want, x, n * 2);
        rc_scale_local(got, n, dt, divs[k]);
        ref_scale(want, n, dt, divs[k]);
        bad = compare(got, want, n, dt);
        CHECK(bad == n, "[%s] %s scale /%g fails at 0x%04zx: got 0x%04x want 0x%04x", isa,
              rc_dtype_name(dt), divs[k], bad, bad < n ? got[bad] : 0, bad < n ? want[bad] : 0);
    }
    (void)rounds;
    free(x); free(y); free(got); free(want);
}

static void test_api(void)
{
    static const char *const dnames[] = {"float32", "float64", "float16", "bfloat16", "int8",
                                         "uint8", "int32", "int64", "bool"};
    static const size_t dsizes[] = {4, 8, 2, 2, 1, 1, 4, 8, 1};
    static const char *const onames[] = {"sum", "prod", "min", "max", "avg", "band", "bor", "bxor"};
    for (int dt = 0; dt < RC_NUM_DTYPES; dt++) {
        CHECK(strcmp(rc_dtype_name((rc_dtype_t)dt), dnames[dt]) == 0, "dtype name %d", dt);
        CHECK(rc_dtype_size((rc_dtype_t)dt) == dsizes[dt], "dtype size %d", dt);
    }
    CHECK(rc_dtype_size(RC_NUM_DTYPES) == 0, "size of unknown dtype");
    CHECK(rc_dtype_name((rc_dtype_t)99) != NULL, "name of unknown dtype");
    for (int op = 0; op < RC_NUM_OPS; op++)
        CHECK(strcmp(rc_op_name((rc_op_t)op), onames[op]) == 0, "op name %d", op);
    CHECK(rc_op_name((rc_op_t)-1) != NULL, "name of unknown op");

    for (int dt = 0; dt < RC_NUM_DTYPES; dt++) {
        for (int op = 0; op < RC_NUM_OPS; op++) {
            int want;
            if (dt == RC_BOOL) want = 0;
            else if (op == RC_AVG) want = is_float((rc_dtype_t)dt);
            else if (op >= RC_BAND) want = !is_float((rc_dtype_t)dt);
            else want = 1;
            CHECK(rc_op_valid_for((rc_dtype_t)dt, (rc_op_t)op) == want, "valid_for(%s,%s)",
                  dnames[dt], onames[op]);
            CHECK((rc_reduce_get((rc_dtype_t)dt, (rc_op_t)op) != NULL) == want,
                  "reduce_get(%s,%s)", dnames[dt], onames[op]);
            uint64_t x[4] = {1, 2, 3, 4}, y[4] = {5, 6, 7, 8}, z[4];
            rc_status_t st = rc_reduce_local(z, x, y, 1, (rc_dtype_t)dt, (rc_op_t)op);
            CHECK(st == (want ? RC_OK : RC_ERR_INVALID_ARG), "reduce_local(%s,%s) = %d",
                  dnames[dt], onames[op], (int)st);
        }
        const int fl = is_float((rc_dtype_t)dt);
        CHECK((rc_scale_get((rc_dtype_t)dt) != NULL) == fl, "scale_get(%s)", dnames[dt]);
        uint64_t x[2] = {0, 0};
        CHECK(rc_scale_local(x, 1, (rc_dtype_t)dt, 2.0) == (fl ? RC_OK : RC_ERR_INVALID_ARG),
              "scale_local(%s)", dnames[dt]);
    }
    CHECK(rc_reduce_get(RC_NUM_DTYPES, RC_SUM) == NULL, "reduce_get(bad dtype)");
    CHECK(rc_reduce_get(RC_FLOAT32, RC_NUM_OPS) == NULL, "reduce_get(bad op)");
    CHECK(rc_reduce_get(RC_FLOAT32, RC_AVG) == rc_reduce_get(RC_FLOAT32, RC_SUM), "avg is sum");
    CHECK(rc_scale_get(RC_NUM_DTYPES) == NULL, "scale_get(bad dtype)");
    float f[8] = {0};
    CHECK(rc_reduce_local(NULL, NULL, NULL, 0, RC_FLOAT32, RC_SUM) == RC_OK, "n=0 with NULL");
    CHECK(rc_reduce_local(NULL, f, f, 1, RC_FLOAT32, RC_SUM) == RC_ERR_INVALID_ARG, "NULL dst");
    CHECK(rc_reduce_local(f + 1, f, f + 4, 4, RC_FLOAT32, RC_SUM) == RC_ERR_INVALID_ARG,
          "partial overlap");
    CHECK(rc_reduce_local(f, f, f + 4, 4, RC_FLOAT32, RC_SUM) == RC_OK, "dst==a");
    CHECK(rc_scale_local(NULL, 1, RC_FLOAT32, 2.0) == RC_ERR_INVALID_ARG, "scale NULL");
    CHECK(rc_reduce_set_isa("bogus") == RC_ERR_INVALID_ARG, "set_isa(bogus)");
}

/* ---- benchmark ---- */
static double now(void)
{
    struct timespec ts;
    /* thread CPU time: the test machines are shared, and time spent
     * descheduled is not the kernel's */
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bench(void)
{
    static const char *const isas[] = {"generic", "avx2"};
    static const rc_dtype_t dts[] = {RC_FLOAT32, RC_BFLOAT16, RC_FLOAT16};
    static const size_t sizes[] = {64 << 10, 64 << 20};
    printf("GB/s = 3 x bytes(one array) / time (read a, read b, write dst); "
           "best of 30 runs, thread CPU time\n");
    printf("%-8s %-9s %9s %14s %10s\n", "isa", "dtype", "bytes", "out-of-place", "dst==a");
    for (size_t s = 0; s < 2; s++) {
        const size_t bytes = sizes[s];
        char *a = aligned_alloc(64, bytes), *b = aligned_alloc(64, bytes), *d = aligned_alloc(64, bytes);
        if (!a || !b || !d) { perror("aligned_alloc"); exit(2); }
        for (size_t k = 0; k < 2; k++) {
            if (rc_reduce_set_isa(isas[k]) != RC_OK) continue;
            for (size_t t = 0; t < 3; t++) {
                const size_t n = bytes / rc_dtype_size(dts[t]);
                /* ordinary values in [-1, 1): random bit patterns would be
                 * full of denormals, whose microcode assists cost ~100
                 * cycles each and measure the CPU, not the kernel */
                for (size_t i = 0; i < n; i++) {
                    const float x = (float)(rnd_unit() * 2 - 1), y = (float)(rnd_unit() * 2 - 1);
                    if (dts[t] == RC_FLOAT32) { ((float *)a)[i] = x; ((float *)b)[i] = y; }
                    else if (dts[t] == RC_FLOAT16) { ((uint16_t *)a)[i] = ref_f2h(x); ((uint16_t *)b)[i] = ref_f2h(y); }
                    else { ((uint16_t *)a)[i] = ref_f2bf(x); ((uint16_t *)b)[i] = ref_f2bf(y); }
                }
                memset(d, 0, bytes);
                double gbs[2];
                for (int inplace = 0; inplace < 2; inplace++) {
                    /* in place: d += b repeatedly; b is small and values
                     * stay ordinary (|d| grows by at most 1 per rep) */
                    if (inplace) memcpy(d, a, bytes);
                    const int reps = bytes < (1 << 20) ? 2000 : 2;
                    double best = 1e30;
                    for (int run = 0; run < 30; run++) {
                        double t0 = now();
                        for (int r = 0; r < reps; r++)
                            rc_reduce_local(d, inplace ? d : a, b, n, dts[t], RC_SUM);
                        double el = (now() - t0) / reps;
                        if (el < best) best = el;
                    }
                    gbs[inplace] = 3.0 * (double)bytes / best / 1e9;
                }
                printf("%-8s %-9s %9zu %14.1f %10.1f\n", isas[k], rc_dtype_name(dts[t]), bytes,
                       gbs[0], gbs[1]);
            }
        }
        free(a); free(b); free(d);
    }
    rc_reduce_set_isa(NULL);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        bench();
        return 0;
    }
    /* the env override and the default choice, before anything forces a set */
    const char *env = getenv("RINGCOMM_ISA");
    const char *initial = rc_reduce_isa();
    printf("initial kernel set: %s (RINGCOMM_ISA=%s)\n", initial, env ? env : "(unset)");
    if (env && strcmp(env, "generic") == 0)
        CHECK(strcmp(initial, "generic") == 0, "RINGCOMM_ISA=generic ignored: %s", initial);

    test_api();

    static const size_t lens[] = {0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 65, 100, 1000,
                                  4097, 1000003};
    static const char *const isas[] = {"generic", "avx2"};
    int sets_run = 0;
    for (size_t k = 0; k < 2; k++) {
        /* under RINGCOMM_ISA=generic only the generic set runs */
        if (env && strcmp(env, "generic") == 0 && k == 1) break;
        rc_status_t st = rc_reduce_set_isa(isas[k]);
        if (st == RC_ERR_NOT_SUPPORTED) {
            printf("kernel set %s: not supported on this CPU/build, skipped\n", isas[k]);
            continue;
        }
        CHECK(st == RC_OK && strcmp(rc_reduce_isa(), isas[k]) == 0, "set_isa(%s)", isas[k]);
        const int before = g_failures;
        int pairs = 0;
        for (int dt = 0; dt < RC_BOOL; dt++) {
            for (int op = 0; op < RC_NUM_OPS; op++) {
                if (!rc_op_valid_for((rc_dtype_t)dt, (rc_op_t)op)) continue;
                pairs++;
                for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
                    test_pair((rc_dtype_t)dt, (rc_op_t)op, lens[l], isas[k]);
            }
            if (is_float((rc_dtype_t)dt)) {
                static const double divs[] = {1.0, 2.0, 3.0, 4.0, 0.3, -7.0, 1e-30, 1e30, 12345.678};
                for (size_t v = 0; v < sizeof divs / sizeof divs[0]; v++)
                    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
                        test_scale((rc_dtype_t)dt, lens[l], divs[v], isas[k]);
            }
        }
        test_exhaustive16(RC_FLOAT16, isas[k]);
        test_exhaustive16(RC_BFLOAT16, isas[k]);
        printf("kernel set %-7s: %d dtype x op pairs, %zu lengths x 4 aliasing modes: %s\n",
               isas[k], pairs, sizeof lens / sizeof lens[0],
               g_failures == before ? "ok" : "FAILED");
        sets_run++;
    }
    rc_reduce_set_isa(NULL);
    printf("%ld checks, %d failures, %d kernel set(s)\n", g_checks, g_failures, sets_run);
    return g_failures ? 1 : 0;
}
