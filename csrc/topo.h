/* topo.h - where each rank sits inside its host (package, NUMA node, L3
 * group) and the communicator-wide rank order that rings and trees follow
 * (topo.c; docs/topology.md). */
#ifndef RC_TOPO_H
#define RC_TOPO_H

#include "transport/transport.h"

/* A domain id a rank does not have: unknown, or its CPUs span several. */
#define RC_TOPO_NONE 0xFFFFu
/* rc_addr_t.topo bits */
#define RC_TOPO_VALID 1u     /* topo_package/numa/l3 are this rank's (RINGCOMM_TOPO != 0) */
#define RC_TOPO_HIER_NUMA 2u /* RINGCOMM_HIER_DOMAIN=numa (rank 0's decides) */
#define RC_TOPO_HIER_L3 4u   /* RINGCOMM_HIER_DOMAIN=l3 */

/* Phase 1 (comm_address): this rank's domain ids from the sysfs tree under
 * RINGCOMM_SYSFS_ROOT (default /sys) and its CPU set (its affinity mask, or
 * RINGCOMM_TOPO_CPUS, a cpulist, for tests), into a->topo*. */
void rc_topo_address(const rc_comm_t *comm, rc_addr_t *a);

/* Phase 2 (comm_connect, before the transports connect): every rank's ids
 * (comm->topo_ids) and the rank order by (host, package, numa, l3, rank)
 * (comm->order / comm->pos; left NULL when the order is the identity, or
 * when some rank published no ids). */
rc_status_t rc_topo_connect(rc_comm_t *comm, const rc_addr_t *addrs);

/* Pure helpers (also used by the tests through rc_comm_topology): ring
 * crossings of `order` (consecutive positions, wrapping, whose ranks differ
 * at `level`: 0 host, 1 package, 2 numa, 3 l3, counting also the coarser
 * levels) given ids[rank * 4 + level]. */
int rc_topo_crossings(const int *ids, const int *order, int p, int level);

#endif
