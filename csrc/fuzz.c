/* fuzz.c - rc_fuzz_check: the checks every byte from another process goes
 * through, callable on arbitrary bytes (tests/test_fuzz.py drives them with
 * Hypothesis, also under AddressSanitizer).  Each check must return a
 * verdict for any input: never read outside `data`, never crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p2p.h"
#include "prims.h"
#include "transport/transport.h"

typedef struct {
    uint32_t expect_msg;
    int32_t mid_message;
    uint64_t cur_bytes, cur_off;
    int32_t cur_tag;
    uint32_t chunk_bytes;
} fuzz_p2p_state_t;

rc_status_t rc_fuzz_check(int kind, const void *data, size_t len) {
    const unsigned char *b = data;
    char why[400];
    if (!data && len) return rc_set_error(RC_ERR_INVALID_ARG, "fuzz_check: NULL data");
    switch (kind) {
    case RC_FUZZ_ADDRESSES: {
        int32_t size;
        if (len < sizeof size) return RC_ERR_INVALID_ARG;
        memcpy(&size, b, sizeof size);
        if (size < 1 || (size_t)size > (len - sizeof size) / sizeof(rc_addr_t))
            return RC_ERR_INVALID_ARG; /* rc_comm_connect checks the blob length first */
        rc_addr_t *a = malloc((size_t)size * sizeof *a);
        if (!a) return RC_ERR_NO_MEMORY;
        memcpy(a, b + sizeof size, (size_t)size * sizeof *a);
        rc_status_t st = rc_addr_check(a, size, 0, "fuzz");
        free(a);
        return st;
    }
    case RC_FUZZ_SHM_HEADER: {
        int32_t p;
        if (len < sizeof p) return RC_ERR_INVALID_ARG;
        memcpy(&p, b, sizeof p);
        size_t n = len - sizeof p, need = rc_shm_header_bytes();
        /* the header lives in a mapping of at least its own size */
        unsigned char *h = calloc(1, n > need ? n : need);
        if (!h) return RC_ERR_NO_MEMORY;
        memcpy(h, b + sizeof p, n);
        rc_status_t st = rc_shm_header_check(h, n, p, why, sizeof why);
        free(h);
        return st;
    }
    case RC_FUZZ_COLL_DESC: {
        rc_desc_t got, cur;
        uint64_t want;
        if (len < 2 * sizeof got + sizeof want) return RC_ERR_INVALID_ARG;
        memcpy(&got, b, sizeof got);
        memcpy(&cur, b + sizeof got, sizeof cur);
        memcpy(&want, b + 2 * sizeof got, sizeof want);
        return rc_prim_desc_ok(&got, &cur, (size_t)want) ? RC_OK : RC_ERR_MISMATCH;
    }
    case RC_FUZZ_P2P_DESC: {
        rc_desc_t d;
        fuzz_p2p_state_t s;
        if (len < sizeof d + sizeof s) return RC_ERR_INVALID_ARG;
        memcpy(&d, b, sizeof d);
        memcpy(&s, b + sizeof d, sizeof s);
        if (s.chunk_bytes == 0) return RC_ERR_INVALID_ARG; /* never a real chunk size */
        return rc_p2p_desc_check(&d, s.expect_msg, s.mid_message != 0, s.cur_bytes, s.cur_off,
                                 s.cur_tag, s.chunk_bytes, why, sizeof why);
    }
    default:
        return rc_set_error(RC_ERR_INVALID_ARG, "fuzz_check: unknown kind %d", kind);
    }
}
