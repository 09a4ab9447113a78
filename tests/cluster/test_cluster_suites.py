"""The multi-host suites over real namespace hosts (tools/cluster.py): every
rank's host is its own network namespace (veth into a bridge), /dev/shm and
hostname, so the host identity (boot id + /dev/shm device + hostname) tells
the hosts apart by itself: no RINGCOMM_HOST_ID.

Layouts 2x1, 2x2, 3x1 and 2+1 (two ranks on h0, one on h1), each over TCP
(RINGCOMM_TRANSPORT=shm,tcp: shared memory inside a host, TCP between
hosts) and over MPI (RINGCOMM_TRANSPORT unset: under mpirun the network
transport is MPI, whose own traffic between the namespace hosts is MPICH's
over the veths).  The tests/mpi/ workers run unchanged:

* coll_sweep.py: every collective x dtype x op, algorithm/root/variant round
  robin, against numpy and mpi4py;
* allreduce_sweep.py: every all-reduce algorithm (hier where the layout
  allows it, else its fallback), bitwise identical on every rank;
* p2p.py: send/recv, tags, ANY_SOURCE, large messages;
* multihost.py: "auto" picks hier exactly on uniform layouts with several
  ranks per host; split inside a host and across hosts; a send/recv ring;
* split.py: MPI_Comm_split semantics against mpi4py.

RINGCOMM_DEBUG=INFO shows the transport of every (rank, peer) pair: shm
exactly for peers with the same hostname, the network transport for the
others, and each rank's host string carries its namespace's hostname and
/dev/shm device.
"""

import re

import pytest

pytestmark = pytest.mark.timeout(400)

LAYOUTS = {"2x1": (1, 1), "2x2": (2, 2), "3x1": (1, 1, 1), "2+1": (2, 1)}


def cases(layouts=LAYOUTS, nets=("tcp", "mpi")):
    return [pytest.param(lay, net, id=f"{lay}-{net}") for lay in layouts for net in nets]


def budget(layout):
    """2x2 gets every op of every dtype; the other layouts (time budget of the
    suite: ~8 min on 2 cores) one op per dtype, rotating."""
    return () if layout == "2x2" else ("--ops-per-dtype", "1")


def env_for(net, **extra):
    return {"RINGCOMM_TRANSPORT": "shm,tcp" if net == "tcp" else "", **extra}


@pytest.mark.parametrize("layout,net", cases())
def test_collectives(cluster, run_cluster, layout, net):
    """Every collective x dtype x op at counts 0, 1, P-1, 17, 1000, 100003 (round robin over algorithms, roots, variants) vs numpy and mpi4py."""
    lay = LAYOUTS[layout]
    c = cluster(len(lay))
    run_cluster(c, lay, "coll_sweep.py", "--rotate", *budget(layout), "--counts",
                "0,1,P-1,17,1000,100003" if layout == "2x2" else "0,1,P-1,1000,100003",
                env=env_for(net))


@pytest.mark.parametrize("layout,net", cases())
def test_allreduce(cluster, run_cluster, layout, net):
    """Every all-reduce algorithm x dtype x op, round robin, vs numpy and mpi4py, bitwise identical on every rank."""
    lay = LAYOUTS[layout]
    c = cluster(len(lay))
    run_cluster(c, lay, "allreduce_sweep.py", "--rotate", *budget(layout),
                "--counts", "0,1,3,P-1,17,1000,100003", env=env_for(net))


@pytest.mark.parametrize("layout,net", cases())
def test_p2p_split_hier(cluster, run_cluster, layout, net):
    """On one cluster: p2p.py (send/recv), multihost.py (auto = hier exactly on uniform multi-rank layouts, hier/auto/ring/tree vs numpy, split inside a host and across hosts), split.py (vs mpi4py's Split)."""
    lay = LAYOUTS[layout]
    c = cluster(len(lay))
    for worker in ("p2p.py", "multihost.py", "split.py"):
        run_cluster(c, lay, worker, env=env_for(net))


@pytest.mark.parametrize("layout,net", cases(["2x2"]))
def test_hier_many_blocks(cluster, run_cluster, layout, net):
    """hier and auto on 2x2, every dtype x op, small chunks (256 B over TCP, 4 KiB over MPI, whose per-message cost is higher: tens of pipeline blocks either way), and 1000003 elements at default chunks."""
    c = cluster(2)
    run_cluster(c, (2, 2), "allreduce_sweep.py", "--algos", "hier,auto",
                "--counts", "0,1,P-1,1000,4099" if net == "tcp" else "0,1,P-1,4099",
                env=env_for(net, RINGCOMM_CHUNK_BYTES="256" if net == "tcp" else "4096"))
    run_cluster(c, (2, 2), "allreduce_sweep.py", "--algos", "hier", "--counts", "1000003",
                "--rotate", "--ops-per-dtype", "1", env=env_for(net))


def test_mpi_interleave(cluster, run_cluster):
    """MPI transport across hosts (2x2, RINGCOMM_TRANSPORT=mpi for every peer): the user's MPI traffic interleaved with ringcomm's never crosses."""
    c = cluster(2)
    run_cluster(c, (2, 2), "mpi_transport.py", "--interleave", env={"RINGCOMM_TRANSPORT": "mpi"})


LOG_LINE = re.compile(r"INFO rank (\d+) -> rank (\d+): transport (\w+) \(host ([^)]*)\)")


@pytest.mark.parametrize("layout,net", cases(["2x2", "2+1"]))
def test_host_identity(cluster, run_cluster, layout, net):
    """Without RINGCOMM_HOST_ID the namespace hosts are different hosts: RINGCOMM_DEBUG=INFO names shm exactly for same-hostname peers, the network transport for the others, and the peer's host string ends in its hostname."""
    lay = LAYOUTS[layout]
    hosts = [f"h{i}" for i, n in enumerate(lay) for _ in range(n)]
    c = cluster(len(lay))
    res = run_cluster(c, lay, "multihost.py", "--mode", "log",
                      env=env_for(net, RINGCOMM_DEBUG="INFO"))
    seen, ident = {}, {}
    for me, peer, tp, host in LOG_LINE.findall(res.output):
        seen[int(me), int(peer)] = tp
        ident[int(peer)] = host
    want = {(r, q): "shm" if hosts[r] == hosts[q] else net
            for r in range(len(hosts)) for q in range(len(hosts)) if r != q}
    assert seen == want, res.output
    assert all(ident[q].endswith("/" + hosts[q]) and not ident[q].startswith("env:")
               for q in ident), ident
    # boot id/shm device/hostname: one string per host, different between hosts
    per_host = {hosts[q]: ident[q] for q in ident}
    assert len(set(per_host.values())) == len(lay), per_host
