/* topo.c - the communicator-wide rank order that follows the machine.
 *
 * Each rank derives, from its own CPU set and the sysfs tree, three domain
 * ids: its package (socket), NUMA node and L3 group (the lowest CPU sharing
 * its L3), each RC_TOPO_NONE when its CPUs span several or sysfs does not
 * say.  It publishes them in its address blob.  At connect every rank sorts
 * all ranks by (host, package, numa, l3, rank), hosts in order of their
 * lowest rank: the same blobs give the same permutation on every rank.
 * Rings visit the positions of that order in turn, trees are built over
 * positions, so a ring crosses each NUMA (then L3) boundary once per
 * direction instead of up to once per hop (docs/topology.md):
 *
 *   8 ranks pinned to CPUs 0..7, CPUs alternating between 2 NUMA nodes:
 *   rank order  0 1 2 3 4 5 6 7  -> 8 NUMA crossings per ring trip
 *   topo order  0 2 4 6 1 3 5 7  -> 2
 *
 * With one domain (or an unbound rank everywhere) every key but the rank
 * ties: the order is the identity and comm->order stays NULL, so the
 * algorithms do exactly what they did before.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "topo.h"

#include <dirent.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NCPU ((int)sizeof(((rc_addr_t *)0)->cpus) * 8) /* CPUs 0..1023 */

typedef unsigned char cpuset_t[NCPU / 8];

static int cs_isset(const unsigned char *s, int c) { return c >= 0 && c < NCPU && (s[c / 8] >> (c % 8)) & 1; }
static void cs_set(unsigned char *s, int c) {
    if (c >= 0 && c < NCPU) s[c / 8] |= (unsigned char)(1u << (c % 8));
}

/* "0-3,8,10-11\n" into s; 0 when nothing parsed. */
static int parse_cpulist(const char *text, unsigned char *s) {
    int any = 0;
    const char *q = text;
    while (*q) {
        char *end;
        long a = strtol(q, &end, 10);
        if (end == q) break;
        long b = a;
        q = end;
        if (*q == '-') {
            b = strtol(q + 1, &end, 10);
            if (end == q + 1) break;
            q = end;
        }
        for (long c = a; c <= b && c < NCPU; c++) {
            cs_set(s, (int)c);
            any = 1;
        }
        while (*q == ',' || *q == ' ' || *q == '\n' || *q == '\t') q++;
    }
    return any;
}

/* The first line of root/path (printf-style), NUL-terminated; 0 when unreadable. */
static int read_line(char *buf, size_t len, const char *root, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int read_line(char *buf, size_t len, const char *root, const char *fmt, ...) {
    char rel[200], path[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    snprintf(path, sizeof path, "%s/%s", root, rel);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int ok = fgets(buf, (int)len, f) != NULL;
    fclose(f);
    return ok;
}

/* One id for the whole CPU set at one level: the same for every CPU, else
 * RC_TOPO_NONE.  `id` gives a CPU's (negative: unknown). */
typedef struct {
    long id;
    int seen;
} agree_t;
static void agree(agree_t *g, long id) {
    if (id < 0 || id >= (long)RC_TOPO_NONE) g->id = -1;
    else if (!g->seen) g->id = id;
    else if (g->id != id) g->id = -1;
    g->seen = 1;
}
static uint16_t agreed(const agree_t *g) {
    return g->seen && g->id >= 0 ? (uint16_t)g->id : (uint16_t)RC_TOPO_NONE;
}

/* The L3 group of CPU c: the lowest CPU that shares its level-3 cache. */
static long l3_of(const char *root, int c) {
    char buf[4096];
    for (int i = 0; i < 16; i++) {
        if (!read_line(buf, sizeof buf, root, "devices/system/cpu/cpu%d/cache/index%d/level", c, i))
            continue;
        if (atoi(buf) != 3) continue;
        if (!read_line(buf, sizeof buf, root,
                       "devices/system/cpu/cpu%d/cache/index%d/shared_cpu_list", c, i))
            return -1;
        cpuset_t s = {0};
        if (!parse_cpulist(buf, s)) return -1;
        for (int q = 0; q < NCPU; q++)
            if (cs_isset(s, q)) return q;
    }
    return -1;
}

void rc_topo_address(const rc_comm_t *comm, rc_addr_t *a) {
    a->topo = 0;
    a->topo_package = a->topo_numa = a->topo_l3 = (uint16_t)RC_TOPO_NONE;
    const char *on = getenv("RINGCOMM_TOPO");
    if (on && !strcmp(on, "0")) return; /* rank order (every rank then uses it) */
    const char *hier = getenv("RINGCOMM_HIER_DOMAIN");
    a->topo = RC_TOPO_VALID;
    if (hier && !strcmp(hier, "numa")) a->topo |= RC_TOPO_HIER_NUMA;
    else if (hier && !strcmp(hier, "l3")) a->topo |= RC_TOPO_HIER_L3;
    else if (hier && *hier && strcmp(hier, "host") != 0 && comm->rank == 0)
        rc_log(RC_WARN, "RINGCOMM_HIER_DOMAIN=%s: expected host, numa or l3; using host", hier);

    const char *root = getenv("RINGCOMM_SYSFS_ROOT");
    if (!root || !*root) root = "/sys";
    /* this rank's CPUs: RINGCOMM_TOPO_CPUS (tests: CPUs a fake tree has
     * but this machine has not), else the affinity mask published in a->cpus */
    cpuset_t cpus = {0};
    const char *over = getenv("RINGCOMM_TOPO_CPUS");
    if (!(over && *over && parse_cpulist(over, cpus))) memcpy(cpus, a->cpus, sizeof cpus);

    /* NUMA nodes: node<N>/cpulist */
    long *node = malloc(NCPU * sizeof *node);
    if (node) {
        for (int c = 0; c < NCPU; c++) node[c] = -1;
        char dir[800], buf[4096];
        snprintf(dir, sizeof dir, "%s/devices/system/node", root);
        DIR *d = opendir(dir);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            char *end;
            if (strncmp(e->d_name, "node", 4) != 0) continue;
            long n = strtol(e->d_name + 4, &end, 10);
            if (end == e->d_name + 4 || *end || n < 0) continue;
            cpuset_t s = {0};
            if (!read_line(buf, sizeof buf, root, "devices/system/node/%s/cpulist", e->d_name) ||
                !parse_cpulist(buf, s))
                continue;
            for (int c = 0; c < NCPU; c++)
                if (cs_isset(s, c) && cs_isset(cpus, c)) node[c] = n;
        }
        if (d) closedir(d);
    }
    agree_t pkg = {0, 0}, numa = {0, 0}, l3 = {0, 0};
    char buf[64];
    for (int c = 0; c < NCPU; c++) {
        if (!cs_isset(cpus, c)) continue;
        agree(&numa, node ? node[c] : -1);
        long id = -1;
        if (read_line(buf, sizeof buf, root, "devices/system/cpu/cpu%d/topology/physical_package_id", c))
            id = strtol(buf, NULL, 10);
        agree(&pkg, id);
        if (l3.seen && l3.id < 0) continue; /* spans already: skip the cache files */
        agree(&l3, l3_of(root, c));
    }
    free(node);
    a->topo_package = agreed(&pkg);
    a->topo_numa = agreed(&numa);
    a->topo_l3 = agreed(&l3);
}

/* ---- phase 2: one order for the communicator ---- */

static const int *sort_ids; /* qsort has no context argument; under topo_mu */
static pthread_mutex_t topo_mu = PTHREAD_MUTEX_INITIALIZER;

static int cmp_pos(const void *x, const void *y) {
    const int a = *(const int *)x, b = *(const int *)y;
    for (int l = 0; l < 4; l++) {
        int d = sort_ids[a * 4 + l] - sort_ids[b * 4 + l];
        if (d) return d;
    }
    return a - b;
}

int rc_topo_crossings(const int *ids, const int *order, int p, int level) {
    int n = 0;
    if (p < 2) return 0;
    for (int i = 0; i < p; i++) {
        const int a = order ? order[i] : i, b = order ? order[(i + 1) % p] : (i + 1) % p;
        for (int l = 0; l <= level; l++)
            if (ids[a * 4 + l] != ids[b * 4 + l]) {
                n++;
                break;
            }
    }
    return n;
}

static void log_topology(const rc_comm_t *c) {
    char line[4096];
    size_t o = 0;
    const int p = c->size;
    o += (size_t)snprintf(line + o, sizeof line - o, "topology (rank=host.package.numa.l3, - none):");
    for (int r = 0; r < p && o < sizeof line - 200; r++) {
        char v[4][8];
        for (int l = 0; l < 4; l++) {
            int id = c->topo_ids[r * 4 + l];
            if (id == (int)RC_TOPO_NONE) snprintf(v[l], sizeof v[l], "-");
            else snprintf(v[l], sizeof v[l], "%d", id);
        }
        o += (size_t)snprintf(line + o, sizeof line - o, " %d=%s.%s.%s.%s", r, v[0], v[1], v[2], v[3]);
    }
    o += (size_t)snprintf(line + o, sizeof line - o, "; ring order");
    for (int i = 0; i < p && o < sizeof line - 120; i++)
        o += (size_t)snprintf(line + o, sizeof line - o, " %d", c->order ? c->order[i] : i);
    if (o >= sizeof line - 120) o += (size_t)snprintf(line + o, sizeof line - o, " ...");
    snprintf(line + o, sizeof line - o,
             "; ring crossings numa %d -> %d, l3 %d -> %d (rank order -> this order)",
             rc_topo_crossings(c->topo_ids, NULL, p, 2),
             rc_topo_crossings(c->topo_ids, c->order, p, 2),
             rc_topo_crossings(c->topo_ids, NULL, p, 3),
             rc_topo_crossings(c->topo_ids, c->order, p, 3));
    rc_log(RC_INFO, "rank %d: %s", c->rank, line);
}

/* allreduce_hier's groups: ranks that agree on the ids of levels
 * 0..hier_domain (host; host, package, numa; or down to l3), walked in
 * position order (so with the default, hosts in order of their lowest rank
 * and each host's ring following its domains). */
static rc_status_t groups(rc_comm_t *comm) {
    const int p = comm->size, lv = comm->hier_domain;
    int *gid = malloc((size_t)p * sizeof *gid), *count = calloc((size_t)p, sizeof *count);
    int *lead = malloc((size_t)p * sizeof *lead); /* a member of each group */
    free(comm->grp_ranks);
    comm->grp_ranks = NULL;
    if (!gid || !count || !lead) {
        free(gid);
        free(count);
        free(lead);
        return rc_set_error(RC_ERR_NO_MEMORY, "comm_connect on rank %d: out of memory", comm->rank);
    }
    int ng = 0;
    for (int i = 0; i < p; i++) {
        const int r = rc_rank_at(comm, i);
        int g = -1;
        for (int k = 0; k < ng && g < 0; k++) {
            int same = 1;
            for (int l = 0; l <= lv; l++)
                if (comm->topo_ids[lead[k] * 4 + l] != comm->topo_ids[r * 4 + l]) same = 0;
            if (same) g = k;
        }
        if (g < 0) {
            g = ng++;
            lead[g] = r;
        }
        gid[r] = g;
        if (r == comm->rank) {
            comm->grp_idx = g;
            comm->grp_lidx = count[g];
        }
        count[g]++;
    }
    comm->grp_n = ng;
    comm->grp_size = count[0];
    for (int g = 1; g < ng; g++)
        if (count[g] != count[0]) comm->grp_size = 0;
    rc_status_t st = RC_OK;
    if (comm->grp_size) {
        comm->grp_ranks = malloc((size_t)p * sizeof *comm->grp_ranks);
        if (!comm->grp_ranks) {
            st = rc_set_error(RC_ERR_NO_MEMORY, "comm_connect on rank %d: out of memory", comm->rank);
        } else {
            memset(count, 0, (size_t)p * sizeof *count);
            for (int i = 0; i < p; i++) {
                const int r = rc_rank_at(comm, i);
                comm->grp_ranks[gid[r] * comm->grp_size + count[gid[r]]++] = r;
            }
        }
    }
    free(gid);
    free(count);
    free(lead);
    return st;
}

rc_status_t rc_topo_connect(rc_comm_t *comm, const rc_addr_t *addrs) {
    const int p = comm->size;
    free(comm->order);
    free(comm->pos);
    free(comm->topo_ids);
    comm->order = comm->pos = NULL;
    comm->topo_ids = malloc((size_t)p * 4 * sizeof *comm->topo_ids);
    int *order = malloc((size_t)p * sizeof *order);
    if (!comm->topo_ids || !order) {
        free(order);
        return rc_set_error(RC_ERR_NO_MEMORY, "comm_connect on rank %d: out of memory (%d-rank "
                            "topology)", comm->rank, p);
    }
    /* any rank without ids (RINGCOMM_TOPO=0 there): rank order for all */
    int valid = 1;
    for (int r = 0; r < p; r++)
        if (!(addrs[r].topo & RC_TOPO_VALID)) valid = 0;
    int nhost = 0;
    for (int r = 0; r < p; r++) {
        int h = -1;
        for (int q = 0; q < r && h < 0; q++)
            if (strncmp(addrs[q].host, addrs[r].host, sizeof addrs[r].host) == 0)
                h = comm->topo_ids[q * 4];
        comm->topo_ids[r * 4 + 0] = h >= 0 ? h : nhost++;
        comm->topo_ids[r * 4 + 1] = valid ? addrs[r].topo_package : (int)RC_TOPO_NONE;
        comm->topo_ids[r * 4 + 2] = valid ? addrs[r].topo_numa : (int)RC_TOPO_NONE;
        comm->topo_ids[r * 4 + 3] = valid ? addrs[r].topo_l3 : (int)RC_TOPO_NONE;
        order[r] = r;
    }
    if (valid) {
        pthread_mutex_lock(&topo_mu);
        sort_ids = comm->topo_ids;
        qsort(order, (size_t)p, sizeof *order, cmp_pos);
        sort_ids = NULL;
        pthread_mutex_unlock(&topo_mu);
    }
    int identity = 1;
    for (int i = 0; i < p; i++)
        if (order[i] != i) identity = 0;
    if (!identity) {
        comm->pos = malloc((size_t)p * sizeof *comm->pos);
        if (!comm->pos) {
            free(order);
            return rc_set_error(RC_ERR_NO_MEMORY, "comm_connect on rank %d: out of memory", comm->rank);
        }
        for (int i = 0; i < p; i++) comm->pos[order[i]] = i;
        comm->order = order;
    } else {
        free(order);
    }
    comm->hier_domain = !valid ? 0 : (addrs[0].topo & RC_TOPO_HIER_NUMA) ? 2
                                 : (addrs[0].topo & RC_TOPO_HIER_L3) ? 3 : 0;
    RC_CHECK(groups(comm));
    if (rc_debug_level() >= RC_INFO && comm->rank == 0) log_topology(comm);
    return RC_OK;
}
