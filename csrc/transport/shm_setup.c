/* shm_setup.c - the shared-memory segment: its size (and what to do when
 * /dev/shm is too small), making it, attaching to it, checking its header,
 * connect and close.  The layout is shm.h's head comment.
 *
 * Size: the host's first rank plans
 *
 *   total = header + p x (64 rank info + 64 x p acks + 640 one-line outbox)
 *         + 2 lanes x p x p FIFOs x (256 + 32 x depth)
 *         + p x pages(2 x 64 + (cells[0] + cells[1]) x chunk_bytes)
 *
 * with depth = nslots (4), cells[0] = 2 MiB / chunk_bytes and cells[1] =
 * 1 MiB / chunk_bytes (at least depth + 1 and 2, at most 32; or
 * RINGCOMM_SHM_CELLS / RINGCOMM_SHM_P2P_CELLS): 3.1 MiB per rank at 8 ranks
 * and 128 KiB chunks, 3.3 MiB at 128 ranks.  It reserves the pages with
 * posix_fallocate, so a /dev/shm that cannot hold them fails here, on every
 * rank of the host, and never later with SIGBUS.  Where the plan does not
 * fit in what /dev/shm has free, it takes fewer cells and a shallower FIFO
 * (down to 2 cells per lane and 2 entries: slower, still correct; said at
 * RINGCOMM_DEBUG=INFO); where even that does not fit, the segment holds
 * only the header with the reason, which the other ranks read and raise.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>

#include "shm.h"

#define SHM_DIR "/dev/shm" /* where glibc's shm_open keeps segments */

typedef struct {
    uint32_t depth, cells[2];
    size_t stride, fifo, pool, total;
} shm_plan_t;

static void shm_plan_sizes(int p, shm_plan_t *pl) {
    pl->fifo = shm_fifo_bytes(pl->depth);
    pl->pool = shm_pool_bytes(pl->stride, pl->cells[0], pl->cells[1]);
    pl->total = shm_total_bytes(p, pl->fifo, pl->pool);
}

static uint32_t shm_clamp_cells(long long v, uint32_t lo) {
    if (v < lo) v = lo;
    if (v > SHM_MAX_CELLS) v = SHM_MAX_CELLS;
    return (uint32_t)v;
}

/* The default plan for p ranks (the creator's environment decides it for the host). */
static void shm_plan_default(const rc_comm_t *comm, int p, shm_plan_t *pl) {
    size_t chunk = comm->chunk_bytes;
    pl->depth = comm->nslots;
    pl->stride = RC_ALIGN_UP(chunk, RC_CACHELINE);
    long long c0 = (long long)((2u << 20) / chunk), c1 = (long long)((1u << 20) / chunk);
    pl->cells[0] = shm_clamp_cells(rc_env_ll("RINGCOMM_SHM_CELLS", c0),
                                   pl->depth + 1 < SHM_MAX_CELLS ? pl->depth + 1 : SHM_MAX_CELLS);
    pl->cells[1] = shm_clamp_cells(rc_env_ll("RINGCOMM_SHM_P2P_CELLS", c1), 2);
    shm_plan_sizes(p, pl);
}

size_t rc_shm_fit_chunk(const rc_addr_t *addrs, int size, size_t chunk, uint32_t nslots) {
    size_t best = chunk;
    for (int r = 0; r < size; r++) {
        int n = 0, first = 1;
        uint64_t free_mib = ~0ull;
        for (int q = 0; q < size; q++) {
            if (strncmp(addrs[q].host, addrs[r].host, sizeof addrs[r].host) != 0) continue;
            if (q < r) first = 0;
            n++;
            if (addrs[q].shm_free_mib < free_mib) free_mib = addrs[q].shm_free_mib;
        }
        if (!first || n < 2 || !free_mib || free_mib == ~0ull) continue;
        /* 90%: the others' segments (an MPI library's) may still grow */
        unsigned long long room = free_mib * 943718ull;
        size_t c = chunk;
        for (;;) {
            /* the plan shm_make may shrink to without hurting the
             * pipelines: a stream's cells (depth + 1) and 2 for p2p */
            shm_plan_t pl = {.depth = nslots, .stride = RC_ALIGN_UP(c, RC_CACHELINE)};
            pl.cells[0] = shm_clamp_cells(nslots + 1, 2);
            pl.cells[1] = 2;
            shm_plan_sizes(n, &pl);
            if (pl.total <= room || c / 2 < (16u << 10)) break;
            c /= 2;
        }
        if (c < best) best = c;
    }
    if (best < chunk)
        RC_LOG(RC_INFO, "shared memory: chunks of %zu bytes instead of %zu, so that every host's "
               "segment fits in what its /dev/shm has free", best, chunk);
    return best;
}

/* One step smaller (0 when at the smallest): point-to-point cells first,
 * then collective cells down to depth + 1, then the FIFO depth, then the
 * collective cells to 2. */
static int shm_plan_shrink(int p, shm_plan_t *pl) {
    if (pl->cells[1] > 2) pl->cells[1] = pl->cells[1] / 2 > 2 ? pl->cells[1] / 2 : 2;
    else if (pl->cells[0] > pl->depth + 1) pl->cells[0] = pl->cells[0] / 2 > pl->depth + 1 ? pl->cells[0] / 2 : pl->depth + 1;
    else if (pl->depth > 2) pl->depth--;
    else if (pl->cells[0] > 2) pl->cells[0]--;
    else return 0;
    shm_plan_sizes(p, pl);
    return 1;
}

unsigned long long rc_shm_dir_free(void) {
    struct statvfs v;
    if (statvfs(SHM_DIR, &v) != 0) return ~0ull; /* unknown: let fallocate decide */
    return (unsigned long long)v.f_bavail * (unsigned long long)v.f_frsize;
}

/* FNV-1a: simulated hosts on one machine get different segment names */
static void shm_name(const rc_comm_t *comm, const char *host, char *buf, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *c = (const unsigned char *)host; *c; c++)
        h = (h ^ *c) * 0x100000001b3ull;
    snprintf(buf, len, "/ringcomm-%s-%016llx", comm->token, (unsigned long long)h);
}

static rc_status_t shm_map(rc_comm_t *comm, int fd, size_t bytes) {
    void *base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        return rc_set_error(RC_ERR_IO, "rank %d: mmap of %zu bytes of shared memory %s failed: %s",
                            comm->rank, bytes, comm->shm->name, strerror(errno));
    comm->shm->base = base;
    comm->shm->bytes = bytes;
    comm->shm->hdr = (shm_hdr_t *)base;
    comm->shm->info = (shm_rankinfo_t *)((char *)base + SHM_HDR_BYTES);
    return RC_OK;
}

static void shm_unmap(struct rc_shm *s) {
    if (s->base) munmap(s->base, s->bytes);
    s->base = NULL;
    s->hdr = NULL;
    s->info = NULL;
}

static void shm_unlink_once(struct rc_shm *s) {
    if (!s->unlinked) {
        shm_unlink(s->name);
        s->unlinked = 1;
    }
}

/* Phase 1: only the back-off; the segment is made at connect, when the
 * ranks of this host are known. */
rc_status_t rc_shm_create(rc_comm_t *comm) {
    struct rc_shm *s = calloc(1, sizeof *s);
    if (!s) return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", comm->rank);
    comm->shm = s;
    s->unlinked = 1; /* nothing of ours to unlink yet */
    return RC_OK;
}

/* Reserve the pages of `total` bytes: 0, or the errno that says they do
 * not fit.  A file system without fallocate (not tmpfs) is let through:
 * nothing can be reserved there. */
static int shm_reserve(int fd, size_t total) {
    if (ftruncate(fd, (off_t)total) != 0) return errno;
    int e = posix_fallocate(fd, 0, (off_t)total);
    return e == EOPNOTSUPP || e == EINVAL ? 0 : e;
}

/* The creator could not make the segment: leave only the header, with the
 * reason, for the host's other ranks (they raise it too); shm_close unlinks it. */
static rc_status_t shm_make_failed(rc_comm_t *comm, int fd, rc_status_t st) {
    struct rc_shm *s = comm->shm;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", rc_last_error());
    if (ftruncate(fd, SHM_HDR_BYTES) == 0 && shm_map(comm, fd, SHM_HDR_BYTES) == RC_OK) {
        shm_hdr_t *h = s->hdr;
        h->abort_status = st;
        h->abort_rank = comm->rank;
        snprintf(h->abort_msg, sizeof h->abort_msg, "%s", msg);
        atomic_store_explicit((_Atomic uint64_t *)&h->magic, SHM_MAGIC_FAILED, memory_order_release);
    } else {
        shm_unlink_once(s); /* the others time out naming the segment */
    }
    close(fd);
    return rc_set_error(st, "%s", msg);
}

/* The host's first rank creates, sizes and reserves the segment for its nl ranks. */
static rc_status_t shm_make(rc_comm_t *comm, shm_plan_t *pl) {
    struct rc_shm *s = comm->shm;
    const int p = s->nl;
    int fd = shm_open(s->name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0)
        return rc_set_error(RC_ERR_IO, "rank %d: cannot create shared memory %s: %s", comm->rank,
                            s->name, strerror(errno));
    s->unlinked = 0;
    const shm_plan_t want = *pl;
    unsigned long long avail = rc_shm_dir_free();
    int e = 0, fitted = 0;
    /* the first try is the plan that fits what statvfs says is free; a
     * reservation that still fails (another process took the space) shrinks on */
    while (pl->total > avail && shm_plan_shrink(p, pl)) fitted = 1;
    for (;;) {
        e = shm_reserve(fd, pl->total);
        if (e != ENOSPC && e != ENOMEM && e != EFBIG) break;
        if (!shm_plan_shrink(p, pl)) break;
        fitted = 1;
    }
    if (e) {
        shm_plan_t least = want;
        while (shm_plan_shrink(p, &least)) {}
        rc_set_error(RC_ERR_NO_MEMORY,
                     "rank %d: the shared memory of this host's %d ranks does not fit in "
                     SHM_DIR ": it needs %zu bytes (%zu at the smallest setting: %u cells of "
                     "%zu bytes per rank and lane, FIFOs of 2), " SHM_DIR " has %llu bytes free "
                     "(%s); fixes: give the container more (docker run --shm-size=%zum), or "
                     "lower RINGCOMM_CHUNK_BYTES (now %zu) or RINGCOMM_NSLOTS (now %u), or run "
                     "fewer ranks per host",
                     comm->rank, p, want.total, least.total, least.cells[0], least.stride,
                     avail == ~0ull ? 0ull : avail, strerror(e),
                     (want.total >> 20) + 64, comm->chunk_bytes, comm->nslots);
        return shm_make_failed(comm, fd, RC_ERR_NO_MEMORY);
    }
    if (fitted)
        RC_LOG(RC_INFO, "rank %d: " SHM_DIR " has %llu bytes free, the default shared memory of "
               "%zu bytes for %d ranks does not fit: using %u collective and %u point-to-point "
               "cells per rank and FIFOs of %u (%zu bytes); docker run --shm-size=%zum restores "
               "the defaults",
               comm->rank, avail, want.total, p, pl->cells[0], pl->cells[1], pl->depth,
               pl->total, (want.total >> 20) + 64);
    rc_status_t st = shm_map(comm, fd, pl->total);
    if (st != RC_OK) return shm_make_failed(comm, fd, st);
    close(fd);
    shm_hdr_t *h = s->hdr;
    h->size = (uint32_t)p;
    h->nslots = pl->depth;
    h->chunk_bytes = comm->chunk_bytes;
    h->slot_stride = pl->stride;
    h->chan_bytes = pl->fifo;
    h->ncells[0] = pl->cells[0];
    h->ncells[1] = pl->cells[1];
    h->total_bytes = pl->total;
    h->algo_env = comm->algo_env;
    h->tune = comm->tune;
    h->stream_min = comm->stream_min;
    atomic_store_explicit((_Atomic uint64_t *)&h->magic, SHM_MAGIC, memory_order_release);
    return RC_OK;
}

/* Every field of the creator's header another rank relies on, checked before use
 * (a corrupt or hostile header must not lead to an access outside the
 * mapping).  Also the fuzz target for the header bytes (csrc/fuzz.c). */
rc_status_t rc_shm_header_check(const void *hdr, size_t mapped, int p, char *why, size_t len) {
    shm_hdr_t h;
    if (mapped < sizeof h || p < 1 || p > 65536) {
        snprintf(why, len, "%zu bytes is too small for a header", mapped);
        return RC_ERR_MISMATCH;
    }
    memcpy(&h, hdr, sizeof h);
    const char *bad = NULL;
    if (h.magic != SHM_MAGIC) bad = "bad magic";
    else if (h.size != (uint32_t)p) bad = "another rank count";
    else if (h.nslots < 2 || h.nslots > 1024) bad = "FIFO depth out of [2, 1024]";
    else if (h.chunk_bytes < 64 || h.chunk_bytes > (1u << 30) || h.chunk_bytes % 64) bad = "chunk size";
    else if (h.slot_stride != RC_ALIGN_UP(h.chunk_bytes, RC_CACHELINE)) bad = "cell stride";
    else if (h.chan_bytes != shm_fifo_bytes(h.nslots)) bad = "FIFO size";
    else if (h.ncells[0] < 2 || h.ncells[0] > SHM_MAX_CELLS || h.ncells[1] < 2 ||
             h.ncells[1] > SHM_MAX_CELLS) bad = "cell count out of [2, 32]";
    else if (h.total_bytes != shm_total_bytes(p, h.chan_bytes, shm_pool_bytes(h.slot_stride,
                                              h.ncells[0], h.ncells[1])) ||
             h.total_bytes != mapped)
        bad = "segment size";
    else if (h.algo_env < 0 || h.algo_env >= RC_NUM_ALGOS) bad = "algorithm";
    if (!bad) return RC_OK;
    snprintf(why, len, "%s (header says %u ranks, FIFOs of %u, %llu + %llu cells of %llu bytes, "
             "%llu bytes in all; mapped %zu)", bad, h.size, h.nslots,
             (unsigned long long)h.ncells[0], (unsigned long long)h.ncells[1],
             (unsigned long long)h.chunk_bytes, (unsigned long long)h.total_bytes, mapped);
    return RC_ERR_MISMATCH;
}

size_t rc_shm_header_bytes(void) { return sizeof(shm_hdr_t); }

/* The other ranks of the host: open the segment once the first rank has
 * made it (retrying until the deadline; failing fast when that rank's
 * process is gone), map its header, wait for the magic, then map it whole
 * and check the header.  (The creator may resize the file while it looks
 * for a size that fits, never below the header: the size is trusted only
 * once the magic is there.) */
static rc_status_t shm_open_made(rc_comm_t *comm, const rc_addr_t *leader) {
    struct rc_shm *s = comm->shm;
    const int first = s->l2g[0];
    double t0 = rc_now(), next_check = t0 + 0.05;
    struct stat sb;
    int fd = -1;
    uint64_t magic = 0;
    for (uint32_t i = 0;; i++) {
        if (fd < 0) {
            fd = shm_open(s->name, O_RDWR, 0600);
            if (fd < 0 && errno != ENOENT)
                return rc_set_error(RC_ERR_IO, "rank %d: cannot open shared memory %s created "
                                    "by rank %d: %s", comm->rank, s->name, first, strerror(errno));
        }
        if (fd >= 0 && !s->base && fstat(fd, &sb) == 0 && sb.st_size >= SHM_HDR_BYTES) {
            rc_status_t st = shm_map(comm, fd, SHM_HDR_BYTES);
            if (st != RC_OK) {
                close(fd);
                return st;
            }
        }
        if (s->base) {
            magic = atomic_load_explicit((_Atomic uint64_t *)&s->hdr->magic, memory_order_acquire);
            if (magic == SHM_MAGIC || magic == SHM_MAGIC_FAILED) break;
        }
        struct timespec ts = {0, i < 20 ? 50000 : 1000000};
        nanosleep(&ts, NULL);
        double now = rc_now();
        if (now < next_check) continue;
        next_check = now + 0.05;
        const char *why = NULL;
        rc_status_t st = RC_ERR_TIMEOUT;
        if (leader->pid > 0 && kill(leader->pid, 0) != 0 && errno == ESRCH) {
            why = "is gone";
            st = RC_ERR_PEER_LOST;
        } else if (now - t0 > comm->timeout_s) {
            why = "did not make it in time";
        }
        if (why) {
            if (fd >= 0) close(fd);
            shm_unmap(s);
            return rc_set_error(st, "rank %d: rank %d (pid %d), which creates this host's "
                                "shared memory %s, %s (%.0f s)", comm->rank, first,
                                (int)leader->pid, s->name, why, now - t0);
        }
    }
    if (magic == SHM_MAGIC_FAILED) {
        char msg[1024];
        memcpy(msg, s->hdr->abort_msg, sizeof msg);
        msg[sizeof msg - 1] = 0;
        rc_status_t st = s->hdr->abort_status < 0 ? (rc_status_t)s->hdr->abort_status
                                                   : RC_ERR_NO_MEMORY;
        close(fd);
        shm_unmap(s);
        return rc_set_error(st, "rank %d: this host's shared memory could not be made by rank "
                            "%d: %s", comm->rank, first, msg);
    }
    uint64_t total = s->hdr->total_bytes;
    shm_unmap(s);
    if (fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != total || total < SHM_HDR_BYTES) {
        close(fd);
        return rc_set_error(RC_ERR_MISMATCH, "rank %d: shared memory %s holds %lld bytes, its "
                            "header says %llu", comm->rank, s->name, (long long)sb.st_size,
                            (unsigned long long)total);
    }
    rc_status_t st = shm_map(comm, fd, (size_t)total);
    close(fd);
    RC_CHECK(st);
    shm_hdr_t *h = s->hdr;
    char why[240];
    if (rc_shm_header_check(h, s->bytes, s->nl, why, sizeof why) != RC_OK)
        return rc_set_error(RC_ERR_MISMATCH, "rank %d: shared memory %s is not a valid "
                            "%d-rank ringcomm segment: %s", comm->rank, s->name, s->nl, why);
    /* the chunking comes from rank 0's address for every transport; the
     * creator may only have made the FIFOs shallower */
    if (h->chunk_bytes != comm->chunk_bytes || h->nslots > comm->nslots)
        return rc_set_error(RC_ERR_MISMATCH, "rank %d: shared memory %s has FIFOs of %u and "
                            "cells of %llu bytes, this rank expects at most %u of %zu",
                            comm->rank, s->name, h->nslots, (unsigned long long)h->chunk_bytes,
                            comm->nslots, comm->chunk_bytes);
    return RC_OK;
}

/* Wait (spin, then 200 us sleeps) until every rank of the segment has
 * bumped *counter; 0 when the communicator's timeout passes first. */
static int shm_wait_count(rc_comm_t *comm, _Atomic uint32_t *counter) {
    double t0 = rc_now();
    for (uint32_t i = 0; atomic_load(counter) < (uint32_t)comm->shm->nl; i++) {
        if (i < 1000) {
            shm_cpu_relax();
        } else {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
        if ((i & 1023) == 0 && rc_now() - t0 > comm->timeout_s) return 0;
    }
    return 1;
}

/* After every rank attached: which peers' memory can this rank read? */
static void shm_cma_probe(rc_comm_t *comm) {
    struct rc_shm *s = comm->shm;
    uint64_t mask = 0;
    for (int q = 0; q < s->nl && q < 64 && s->me < 64; q++) {
        pid_t pid = atomic_load(&s->info[q].pid);
        uint64_t addr = s->info[q].probe_addr, word = 0;
        if (q == s->me || pid <= 0 || !addr) continue;
        struct iovec lv = {&word, sizeof word}, rv = {(void *)(uintptr_t)addr, sizeof word};
        if (process_vm_readv(pid, &lv, 1, &rv, 1, 0) == (ssize_t)sizeof word &&
            word == rc_shm_probe_word)
            mask |= 1ull << q;
    }
    atomic_store_explicit(&s->self->cma_mask, mask, memory_order_release);
    atomic_fetch_add(&s->hdr->probed, 1);
    RC_LOG(RC_INFO, "rank %d: single-copy reads (process_vm_readv) from local indices mask "
           "0x%llx%s",
           comm->rank, (unsigned long long)mask, mask ? "" : " (none: messages use the cells)");
}

/* This rank's ends of the FIFOs and its view of the pools, from the header. */
static void shm_wire(rc_comm_t *comm) {
    struct rc_shm *s = comm->shm;
    const int P = comm->size, p = s->nl;
    const shm_hdr_t *h = s->hdr;
    s->depth = h->nslots;
    s->ncells[0] = (uint32_t)h->ncells[0];
    s->ncells[1] = (uint32_t)h->ncells[1];
    s->hot = s->depth + 1;
    s->cell_stride = h->slot_stride;
    s->fifo_bytes = h->chan_bytes;
    s->pools_off = shm_pools_off(p, s->fifo_bytes);
    s->pool_bytes = shm_pool_bytes(s->cell_stride, s->ncells[0], s->ncells[1]);
    for (int lane = 0; lane < RC_NLANES; lane++) {
        s->free[lane] = s->ncells[lane] == 32 ? ~0u : (1u << s->ncells[lane]) - 1;
        for (int q = 0; q < p; q++) {
            int g = s->l2g[q];
            shm_end_t *tx = &s->tx[lane * P + g], *rx = &s->rx[lane * P + g];
            tx->f = shm_fifo(s, lane, s->me, q);
            rx->f = shm_fifo(s, lane, q, s->me);
            tx->q = rx->q = q;
            tx->cell = rx->cell = -1;
        }
    }
}

/* Phase 2: the ranks of this host (the peers comm.c gave this transport,
 * and this rank) map one segment, publish their pids, and the last to
 * attach unlinks it. */
rc_status_t rc_shm_connect(rc_comm_t *comm, const rc_addr_t *addrs) {
    struct rc_shm *s = comm->shm;
    const int P = comm->size;
    /* Back-off: with a core per rank, spin long (a peer is about to post);
     * with more ranks than cores, spinning steals the peer's core, so spin
     * briefly and yield (MPICH does the same when oversubscribed). */
    int over = comm->oversubscribed;
    s->spin = (uint32_t)rc_env_ll("RINGCOMM_SPIN", over ? 30 : 4000);
    s->yields = (uint32_t)rc_env_ll("RINGCOMM_YIELDS", over ? 4 : 200);
    s->g2l = malloc((size_t)P * sizeof *s->g2l);
    s->l2g = malloc((size_t)P * sizeof *s->l2g);
    s->tx = calloc((size_t)RC_NLANES * P, sizeof *s->tx);
    s->rx = calloc((size_t)RC_NLANES * P, sizeof *s->rx);
    if (!s->g2l || !s->l2g || !s->tx || !s->rx)
        return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", comm->rank);
    s->nl = 0;
    for (int r = 0; r < P; r++) {
        s->g2l[r] = -1;
        if (r == comm->rank || rc_peer_is(comm, r, &rc_transport_shm)) {
            if (r == comm->rank) s->me = s->nl;
            s->g2l[r] = s->nl;
            s->l2g[s->nl++] = r;
        }
    }
    const int p = s->nl;
    shm_name(comm, addrs[comm->rank].host, s->name, sizeof s->name);
    if (s->me == 0) {
        shm_plan_t pl;
        shm_plan_default(comm, p, &pl);
        RC_CHECK(shm_make(comm, &pl));
    } else {
        RC_CHECK(shm_open_made(comm, &addrs[s->l2g[0]]));
    }
    shm_wire(comm);
    s->self = &s->info[s->me];
    s->ll = (shm_ll_t *)((char *)s->base + shm_ll_off(p));
    s->ll_k = 0;
    s->ll_free = RC_SHM_LL_LINES; /* fresh lines: calls 0 .. RC_SHM_LL_LINES - 1 */
    s->self->probe_addr = (uint64_t)(uintptr_t)&rc_shm_probe_word;
    atomic_store(&s->self->pid, (int32_t)getpid());
    uint32_t n = atomic_fetch_add(&s->hdr->attached, 1) + 1;
    if (n == (uint32_t)p) {
        s->unlinked = 0;
        shm_unlink_once(s);
    }
    /* Wait for every rank to attach: then all pids are known and the name is gone. */
    if (!shm_wait_count(comm, &s->hdr->attached)) {
        if (s->me == 0) {
            s->unlinked = 0;
            shm_unlink_once(s);
        }
        return rc_set_error(RC_ERR_TIMEOUT,
                            "rank %d: only %u of this host's %d ranks attached to shared memory "
                            "%s within %.0f s",
                            comm->rank, atomic_load(&s->hdr->attached), p, s->name,
                            comm->timeout_s);
    }
    shm_cma_probe(comm);
    /* Collectives may read peers' buffers only when every rank can read
     * every other: decided from all masks, so the same on every rank (and
     * never when some ranks are on other hosts). */
    if (!shm_wait_count(comm, &s->hdr->probed))
        return rc_set_error(RC_ERR_TIMEOUT, "rank %d: only %u of this host's %d ranks finished "
                            "connecting within %.0f s", comm->rank, atomic_load(&s->hdr->probed),
                            p, comm->timeout_s);
    comm->cma_all = p <= 64 && p == P;
    for (int q = 0; q < p && comm->cma_all; q++) {
        uint64_t want = (p == 64 ? ~0ull : (1ull << p) - 1) & ~(1ull << q);
        if ((atomic_load(&s->info[q].cma_mask) & want) != want) comm->cma_all = 0;
    }
    s->pidfd = malloc((size_t)p * sizeof *s->pidfd);
    if (!s->pidfd) return rc_set_error(RC_ERR_NO_MEMORY, "rank %d: out of memory", comm->rank);
    for (int q = 0; q < p; q++) {
        pid_t pid = atomic_load(&s->info[q].pid);
        s->pidfd[q] = -1;
#ifdef SYS_pidfd_open
        if (q != s->me && pid > 0)
            s->pidfd[q] = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
        if (s->pidfd[q] >= 0) fcntl(s->pidfd[q], F_SETFD, FD_CLOEXEC);
    }
    RC_LOG(RC_INFO, "rank %d: shared memory %s for %d ranks of this host (local index %d): %zu "
           "bytes, %zu per rank (%u + %u cells of %zu bytes, FIFOs of %u)",
           comm->rank, s->name, p, s->me, s->bytes, s->bytes / (size_t)p, s->ncells[0],
           s->ncells[1], s->cell_stride, s->depth);
    return RC_OK;
}

size_t rc_shm_segment_bytes(const rc_comm_t *comm) {
    return comm && comm->shm ? comm->shm->bytes : 0;
}

void rc_shm_close(rc_comm_t *comm) {
    struct rc_shm *s = comm->shm;
    if (!s) return;
    /* Closed before every rank attached: the creator's name may still exist. */
    if (s->me == 0 && s->hdr && atomic_load(&s->hdr->attached) < (uint32_t)s->nl)
        shm_unlink_once(s);
    for (int lane = 0; lane < RC_NLANES && s->hdr; lane++)
        if (s->starving[lane]) atomic_fetch_sub(&s->hdr->starving, 1);
    shm_unmap(s);
    for (int q = 0; s->pidfd && q < s->nl; q++)
        if (s->pidfd[q] >= 0) close(s->pidfd[q]);
    for (int i = 0; s->rx && i < RC_NLANES * comm->size; i++) {
        shm_end_t *e = &s->rx[i];
        for (uint32_t k = 0; e->copy && k < s->depth; k++) free(e->copy[k]);
        free(e->copy);
    }
    while (s->spare) {
        void *next = *(void **)s->spare;
        free(s->spare);
        s->spare = next;
    }
    free(s->pidfd);
    free(s->tx);
    free(s->rx);
    free(s->g2l);
    free(s->l2g);
    free(s);
    comm->shm = NULL;
}
