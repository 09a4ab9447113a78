/* tune.c - the thresholds of "auto" (rc_select in coll.c): built-in
 * defaults, the tune file written by `python -m ringcomm.tune`, and the
 * environment, in increasing order of precedence.
 *
 * Every threshold is a byte count of the call (the buffer for all-reduce,
 * broadcast and reduce; the big buffer, p blocks, for all-gather,
 * reduce-scatter and all-to-all).  "_max" keys: the algorithm is chosen up
 * to and including that size (0: never); "_min" keys: from that size up
 * (0: never).  Rank 0 decides (it reads the file and its environment; the
 * transport hands its rc_tune_t to the others), so "auto" agrees everywhere.
 *
 * The tune file (key=value lines, '#' comments) is found at
 * $RINGCOMM_TUNE_FILE (the value "none" turns files off), else
 * $XDG_CACHE_HOME/ringcomm/tune-<ranks>.conf, else
 * ~/.cache/ringcomm/tune-<ranks>.conf.  It is used only when it says
 * format=ringcomm-tune-1, the same rank count, the same number of online
 * CPUs and the same CPU model as this machine; a file that is not (or has a
 * line that is not key=value, or a threshold that is not a decimal number)
 * is ignored as a whole with a warning, and the built-in defaults are used.
 * Keys it does not name keep their defaults; keys it has that this version
 * does not know (the measured constants, identity, date) are ignored.
 *
 * Built-in defaults (keys[] below): the thresholds python -m ringcomm.tune
 * derived on the 2-vCPU AMD EPYC VM the project is developed on, one set for
 * a core per rank (measured at 2 ranks) and one for more ranks than CPUs
 * (measured at 4 ranks); see docs/design.md ("Auto thresholds") for the
 * constants and the validation.  Other rank counts and machines: run it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

typedef struct {
    const char *key;   /* in the tune file and rc_comm_threshold */
    const char *env;   /* environment override */
    uint64_t def_core; /* built-in default, a core per rank (0: never) */
    uint64_t def_over; /* built-in default, more ranks than CPUs */
} rc_tune_key_t;

/* The defaults.  A core per rank: the earlier hand-measured values (direct
 * all-reduce to 1 KiB, then ring; no cma), because the tune run of
 * 2026-11-27 at 2 ranks was taken at load average 8-12 and its thresholds
 * (direct to 140 KB, tree to 280 KB, cma beyond) made auto 1.3-2x slower
 * than ring at 4 KiB-16 MiB when checked at load 3 (make demo's bench).
 * More ranks than CPUs: python -m ringcomm.tune on the 2-vCPU AMD EPYC VM,
 * 2026-11-27 (noisy, see docs/design.md): its full 4-rank run
 * except all-reduce's four, from a 4-rank all-reduce run with a cleaner
 * calibration (the full run's small direct calls had measured 1.7x slower).  The old hand-set values were direct_max 1 KiB /
 * 64 KiB, tree_max 0 / 256 KiB, cma never, broadcast and reduce binomial up
 * to one chunk, all-gather and reduce-scatter direct as all-reduce's. */
static const rc_tune_key_t keys[RC_NUM_TUNE] = {
    [RC_TUNE_AR_DIRECT_MAX] = {"allreduce_direct_max", "RINGCOMM_DIRECT_MAX", 1024, 42488},
    [RC_TUNE_AR_BINOMIAL_MAX] = {"allreduce_binomial_max", "RINGCOMM_ALLREDUCE_BINOMIAL_MAX", 0,
                                 0},
    [RC_TUNE_AR_TREE_MAX] = {"allreduce_tree_max", "RINGCOMM_TREE_MAX", 0, 240384},
    [RC_TUNE_AR_CMA_MIN] = {"allreduce_cma_min", "RINGCOMM_CMA_ALLREDUCE_MIN", 0, 15384768},
    [RC_TUNE_BC_BINOMIAL_MAX] = {"broadcast_binomial_max", "RINGCOMM_BROADCAST_BINOMIAL_MAX",
                                 131072, 2719657},
    [RC_TUNE_BC_SAG_MIN] = {"broadcast_scatter_allgather_min",
                            "RINGCOMM_BROADCAST_SCATTER_ALLGATHER_MIN", 0, 0},
    /* Derived: binomial up to 1 MB-1 GiB at 2 and 4 ranks (the bench on the
     * quiet VM: binomial <= rs_gather at every size at 2 ranks, 1.3-2.4x
     * faster to 4 MiB at 4 ranks).  Kept at one chunk: with mismatched
     * roots a binomial reduce that blocks no rank (at most nslots chunks per
     * link) can return normally on some ranks, even through a following
     * barrier (tests/mpi/mismatch.py reduce_root, 800 KB); rs_gather
     * catches it.  (A blocked one is caught: rc_comm_peer_left.) */
    [RC_TUNE_RD_BINOMIAL_MAX] = {"reduce_binomial_max", "RINGCOMM_REDUCE_BINOMIAL_MAX", 131072,
                                 524288},
    /* All-gather and reduce-scatter, from the quiet runs of 2026-11-27
     * (load 0.8-2): at 2 ranks both tune runs derived direct to 71-85 KB
     * then cma, and the validation of the old defaults (direct to 1 KiB,
     * ring, no cma) measured direct 3-5x faster than ring at 8-128 KiB and
     * cma 1.2-5x faster from 512 KiB; at 4 ranks direct all-gather beat ring
     * up to 2 MiB (4.6x at 128 KiB; the runs derived 1.6-2.3 MB) and direct
     * reduce-scatter beat ring at 16 B-32 KiB (1.3-7.5x; derived 143-240 KB). */
    [RC_TUNE_AG_DIRECT_MAX] = {"allgather_direct_max", "RINGCOMM_ALLGATHER_DIRECT_MAX", 131072,
                               2097152},
    [RC_TUNE_AG_CMA_MIN] = {"allgather_cma_min", "RINGCOMM_ALLGATHER_CMA_MIN", 131073, 9147842},
    [RC_TUNE_RS_DIRECT_MAX] = {"reduce_scatter_direct_max", "RINGCOMM_REDUCE_SCATTER_DIRECT_MAX",
                               0, 131072},
    [RC_TUNE_A2A_CMA_MIN] = {"alltoall_cma_min", "RINGCOMM_ALLTOALL_CMA_MIN", 0, 9147842},
};

static const char *const origin_names[] = {"default", "file", "env"};

const char *rc_tune_key_name(int i) { return i >= 0 && i < RC_NUM_TUNE ? keys[i].key : NULL; }

/* The first "model name" of /proc/cpuinfo ("" when there is none), as
 * python -m ringcomm.tune writes it. */
static void cpu_model(char *buf, size_t len) {
    buf[0] = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        char *v = strchr(line, ':');
        if (!v) continue;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        v[strcspn(v, "\n")] = 0;
        snprintf(buf, len, "%s", v);
        break;
    }
    fclose(f);
}

/* The default file name; 0 when files are off or no directory is known. */
static int tune_path(int size, char *buf, size_t len) {
    const char *env = getenv("RINGCOMM_TUNE_FILE");
    if (env && *env) {
        if (!strcmp(env, "none")) return 0;
        snprintf(buf, len, "%s", env);
        return 1;
    }
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg)
        snprintf(buf, len, "%s/ringcomm/tune-%d.conf", xdg, size);
    else if (home && *home)
        snprintf(buf, len, "%s/.cache/ringcomm/tune-%d.conf", home, size);
    else
        return 0;
    return 1;
}

static int parse_u64(const char *s, uint64_t *out) {
    if (!*s || *s == '-' || *s == '+') return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    int shift = 0;
    if (*end == 'k' || *end == 'K') shift = 10, end++;
    else if (*end == 'm' || *end == 'M') shift = 20, end++;
    else if (*end == 'g' || *end == 'G') shift = 30, end++;
    if (errno || *end || end == s || v > (UINT64_MAX >> shift)) return 0;
    *out = (uint64_t)v << shift;
    return 1;
}

static void trim(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = 0;
}

/* Reads `path` into t (thresholds it names); 1 on success, 0 (why filled)
 * when the file is missing, corrupt or from another machine / rank count. */
static int tune_read(const char *path, int size, size_t chunk, rc_tune_t *t, char *why,
                     size_t len) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(why, len, "cannot open it (%s)", strerror(errno));
        return -1;
    }
    char line[600], model[256];
    cpu_model(model, sizeof model);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int have_format = 0, have_ranks = 0, lineno = 0, ok = 1;
    uint64_t v[RC_NUM_TUNE];
    int seen[RC_NUM_TUNE] = {0};
    while (ok && fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(why, len, "line %d is too long", lineno);
            ok = 0;
            break;
        }
        trim(line);
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq || eq == s) {
            snprintf(why, len, "line %d is not key=value", lineno);
            ok = 0;
            break;
        }
        *eq = 0;
        const char *key = s, *val = eq + 1;
        uint64_t u;
        if (!strcmp(key, "format")) {
            if (strcmp(val, "ringcomm-tune-1") != 0) {
                snprintf(why, len, "format %.40s is not ringcomm-tune-1", val);
                ok = 0;
            }
            have_format = 1;
        } else if (!strcmp(key, "ranks")) {
            if (!parse_u64(val, &u) || u != (uint64_t)size) {
                snprintf(why, len, "it is for %.20s ranks, this communicator has %d", val, size);
                ok = 0;
            }
            have_ranks = 1;
        } else if (!strcmp(key, "cpus")) {
            if (!parse_u64(val, &u) || (ncpu > 0 && u != (uint64_t)ncpu)) {
                snprintf(why, len, "it is for %.20s CPUs, this machine has %ld", val, ncpu);
                ok = 0;
            }
        } else if (!strcmp(key, "chunk_bytes")) {
            if (parse_u64(val, &u) && u != chunk)
                rc_log(RC_WARN, "tune file %s was made with %s-byte chunks, this communicator "
                       "uses %zu (RINGCOMM_CHUNK_BYTES): its thresholds may not fit", path, val,
                       chunk);
        } else if (!strcmp(key, "cpu_model")) {
            if (*model && strcmp(val, model) != 0) {
                snprintf(why, len, "it is for CPU \"%.80s\", this machine has \"%.80s\"", val,
                         model);
                ok = 0;
            }
        } else {
            for (int i = 0; i < RC_NUM_TUNE; i++) {
                if (strcmp(key, keys[i].key) != 0) continue;
                if (!parse_u64(val, &v[i])) {
                    snprintf(why, len, "line %d: %s=%.40s is not a byte count", lineno, key, val);
                    ok = 0;
                }
                seen[i] = 1;
            }
        }
    }
    fclose(f);
    if (ok && !have_format) {
        snprintf(why, len, "no format=ringcomm-tune-1 line");
        ok = 0;
    }
    if (ok && !have_ranks) {
        snprintf(why, len, "no ranks= line");
        ok = 0;
    }
    if (!ok) return 0;
    for (int i = 0; i < RC_NUM_TUNE; i++)
        if (seen[i]) {
            t->v[i] = v[i];
            t->from[i] = RC_TUNE_FROM_FILE;
        }
    return 1;
}

void rc_tune_init(rc_comm_t *c) {
    rc_tune_t *t = &c->tune;
    memset(t, 0, sizeof *t);
    int over = c->oversubscribed;
    for (int i = 0; i < RC_NUM_TUNE; i++) {
        uint64_t d = over ? keys[i].def_over : keys[i].def_core;
        t->v[i] = d;
        t->from[i] = RC_TUNE_FROM_DEFAULT;
    }
    /* only rank 0's choice is used: the others need not read or log */
    int log = c->rank == 0;
    char path[512], why[300];
    if (c->rank == 0 && tune_path(c->size, path, sizeof path)) {
        int explicit = getenv("RINGCOMM_TUNE_FILE") && *getenv("RINGCOMM_TUNE_FILE");
        int r = tune_read(path, c->size, c->chunk_bytes, t, why, sizeof why);
        if (r > 0) {
            snprintf(t->source, sizeof t->source, "file %.220s", path);
        } else {
            snprintf(t->source, sizeof t->source, "built-in defaults (%s)",
                     over ? "more ranks than CPUs" : "a core per rank");
            if (r == 0 || explicit)
                rc_log(RC_WARN, "tune file %s: %s; using the built-in defaults for \"auto\"",
                       path, why);
        }
    } else {
        snprintf(t->source, sizeof t->source, "built-in defaults (%s)",
                 over ? "more ranks than CPUs" : "a core per rank");
    }
    int nenv = 0;
    for (int i = 0; i < RC_NUM_TUNE; i++) {
        const char *e = getenv(keys[i].env);
        uint64_t u;
        if (!e || !*e) continue;
        if (!parse_u64(e, &u)) {
            if (log) rc_log(RC_WARN, "%s=%s is not a byte count; ignored", keys[i].env, e);
            continue;
        }
        t->v[i] = u;
        t->from[i] = RC_TUNE_FROM_ENV;
        nenv++;
    }
    if (nenv) {
        size_t n = strlen(t->source);
        snprintf(t->source + n, sizeof t->source - n, ", %d from the environment", nenv);
    }
}

void rc_tune_adopt(rc_comm_t *c, const rc_tune_t *rank0) {
    rc_tune_t *t = &c->tune;
    *t = *rank0;
    int over = c->oversubscribed;
    for (int i = 0; i < RC_NUM_TUNE; i++)
        if (t->from[i] == RC_TUNE_FROM_DEFAULT) t->v[i] = over ? keys[i].def_over : keys[i].def_core;
    /* "built-in defaults (a core per rank), 2 from the environment": the
     * parenthesis follows the decision made now */
    static const char pre[] = "built-in defaults (";
    if (strncmp(t->source, pre, sizeof pre - 1) == 0) {
        const char *rest = strchr(t->source, ')');
        char tail[sizeof t->source];
        snprintf(tail, sizeof tail, "%s", rest ? rest + 1 : "");
        snprintf(t->source, sizeof t->source, "%s%s)%.160s", pre,
                 over ? "more ranks than CPUs" : "a core per rank", tail);
    }
    if (c->rank == 0 && rc_debug_level() >= RC_INFO) {
        char list[800] = "";
        int file = !strncmp(t->source, "file", 4);
        for (int i = 0; i < RC_NUM_TUNE; i++) {
            size_t n = strlen(list);
            snprintf(list + n, sizeof list - n, "%s%s=%llu%s", i ? " " : "", keys[i].key,
                     (unsigned long long)t->v[i],
                     t->from[i] == RC_TUNE_FROM_ENV                ? "(env)"
                     : t->from[i] == RC_TUNE_FROM_DEFAULT && file ? "(default)"
                                                                   : "");
        }
        rc_log(RC_INFO, "auto thresholds from %s: %s", t->source, list);
    }
}

rc_status_t rc_comm_threshold(const rc_comm_t *comm, int i, const char **name, uint64_t *value,
                              const char **origin) {
    if (!comm) return rc_set_error(RC_ERR_INVALID_ARG, "comm_threshold: comm is NULL");
    if (i < 0 || i >= RC_NUM_TUNE) return RC_ERR_INVALID_ARG; /* the end of the list: no text */
    unsigned o = comm->tune.from[i];
    if (name) *name = keys[i].key;
    if (value) *value = comm->tune.v[i];
    if (origin) *origin = o < 3 ? origin_names[o] : "?";
    return RC_OK;
}

const char *rc_comm_tune_source(const rc_comm_t *comm) {
    return comm ? comm->tune.source : "";
}
