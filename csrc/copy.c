/* copy.c - the copy large collectives use for slots and results.
 *
 * rc_copy_stream writes with non-temporal (streaming) stores: the
 * destination is not read into the cache first (no read-for-ownership), a
 * peer reading it fetches it from memory instead of out of this core's
 * cache, and it does not evict the inputs still in use.  Only worth it for
 * calls larger than the caches: coll.c decides (cur.stream), prims.c uses it. */
#include <string.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include "core.h"

void rc_copy_stream(void *dst, const void *src, size_t bytes) {
#if defined(__x86_64__)
    char *d = (char *)dst;
    const char *s = (const char *)src;
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;
    if (head > bytes) head = bytes;
    memcpy(d, s, head);
    d += head, s += head, bytes -= head;
    size_t n = bytes / 64;
    for (size_t i = 0; i < n; i++, d += 64, s += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)s);
        __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));
        _mm_stream_si128((__m128i *)d, a);
        _mm_stream_si128((__m128i *)(d + 16), b);
        _mm_stream_si128((__m128i *)(d + 32), c);
        _mm_stream_si128((__m128i *)(d + 48), e);
    }
    memcpy(d, s, bytes % 64);
    _mm_sfence(); /* streaming stores are weakly ordered: publish before returning */
#else
    memcpy(dst, src, bytes);
#endif
}
