"""Topology-aware rank order (csrc/topo.c, docs/topology.md).

This machine has one NUMA node and one L3, so the tests build fake sysfs
trees (RINGCOMM_SYSFS_ROOT) and give each rank its CPUs either through
RINGCOMM_TOPO_CPUS (CPU ids the fake tree has and this 2-CPU machine has
not) or through a real affinity mask (sched_setaffinity to CPU 0 or 1, with
a fake tree that puts those two CPUs on different nodes):

* one process: the domain ids derived from the tree and the CPU set
  (single CPU, several CPUs in one domain, CPUs spanning domains, the real
  /sys of this machine, RINGCOMM_TOPO=0), against a Python model;
* mpirun at 2, 3, 4 and 6 ranks: the order every rank computes equals the
  model's (host, package, numa, l3, rank) sort, data flows in that order
  (bitwise against numpy models of the ring and binomial reductions), the
  ring's domain crossings before and after, and the collective sweeps,
  all-reduce sweeps and determinism checks under the permuted order.
"""

import re

import pytest

import ringcomm

pytestmark = [pytest.mark.timeout(900)]

NONE = -1


def make_sysfs(root, cpus):
    """A fake /sys: cpus = {cpu: (package, node, l3 group as a list of CPUs)}."""
    nodes = {}
    for c, (pkg, node, l3) in cpus.items():
        nodes.setdefault(node, []).append(c)
        cdir = root / "devices/system/cpu" / f"cpu{c}"
        (cdir / "topology").mkdir(parents=True)
        (cdir / "topology/physical_package_id").write_text(f"{pkg}\n")
        caches = [(1, [c]), (1, [c]), (2, [c]), (3, sorted(l3))]
        for i, (level, shared) in enumerate(caches):
            idx = cdir / "cache" / f"index{i}"
            idx.mkdir(parents=True)
            (idx / "level").write_text(f"{level}\n")
            (idx / "shared_cpu_list").write_text(",".join(map(str, shared)) + "\n")
    for node, members in nodes.items():
        ndir = root / "devices/system/node" / f"node{node}"
        ndir.mkdir(parents=True)
        (ndir / "cpulist").write_text(",".join(map(str, sorted(members))) + "\n")
    (root / "devices/system/node/online").write_text("0-%d\n" % (len(nodes) - 1))
    return root


def interleaved(ncpu=8):
    """2 sockets = 2 NUMA nodes, CPUs alternating between them (c % 2), each
    node 2 L3 groups ({0,4}, {2,6} on node 0; {1,5}, {3,7} on node 1)."""
    def l3(c):
        return [q for q in range(ncpu) if q % 2 == c % 2 and (q // 2) % 2 == (c // 2) % 2]
    return {c: (c % 2, c % 2, l3(c)) for c in range(ncpu)}


def model_ids(tree, cpus):
    """(package, numa, l3) of a CPU set: the common id, else NONE."""
    def one(f):
        ids = {f(c) for c in cpus}
        return ids.pop() if len(ids) == 1 else NONE
    return (one(lambda c: tree[c][0]), one(lambda c: tree[c][1]),
            one(lambda c: min(tree[c][2])))


def model_order(domains):
    big = 1 << 20   # NONE sorts last (the C side's 0xFFFF)
    key = [tuple(big if v == NONE else v for v in d) + (r,) for r, d in enumerate(domains)]
    return [r for *_, r in sorted(key)]


def crossings(domains, order, level):
    p = len(order)
    return sum(domains[order[i]][:level + 1] != domains[order[(i + 1) % p]][:level + 1]
               for i in range(p)) if p > 1 else 0


# ---- one process: the ids a rank publishes ----------------------------------------------

@pytest.mark.parametrize("cpus", ["0", "5", "0,4", "2,6", "0,2", "1-3", "0-7", "3,7"])
def test_domain_ids_from_fake_tree(tmp_path, monkeypatch, cpus):
    """One rank's (package, numa, l3) from the fake tree and its CPU list."""
    tree = interleaved()
    monkeypatch.setenv("RINGCOMM_SYSFS_ROOT", str(make_sysfs(tmp_path, tree)))
    monkeypatch.setenv("RINGCOMM_TOPO_CPUS", cpus)
    cpuset = set()
    for part in cpus.split(","):
        a, _, b = part.partition("-")
        cpuset |= set(range(int(a), int(b or a) + 1))
    with ringcomm.init() as comm:
        topo = comm._topology()
    assert topo["order"] == [0]
    assert topo["domains"] == [(0,) + model_ids(tree, cpuset)], (cpus, topo)


def test_domain_ids_real_affinity(tmp_path, monkeypatch):
    """Without RINGCOMM_TOPO_CPUS the affinity mask decides: this process
    may use CPUs 0-1, which the 2-node fake tree puts on different nodes."""
    import os
    tree = {0: (0, 0, [0]), 1: (1, 1, [1])}
    monkeypatch.setenv("RINGCOMM_SYSFS_ROOT", str(make_sysfs(tmp_path, tree)))
    monkeypatch.delenv("RINGCOMM_TOPO_CPUS", raising=False)
    mask = os.sched_getaffinity(0)
    try:
        for pin in ({0}, {1}, {0, 1}):
            os.sched_setaffinity(0, pin)
            with ringcomm.init() as comm:
                assert comm._topology()["domains"] == [(0,) + model_ids(tree, pin)], pin
    finally:
        os.sched_setaffinity(0, mask)


def test_this_machine_and_switch(monkeypatch, tmp_path):
    """The real /sys (one node, one L3 here) gives one domain; missing files
    (an empty root) give none; RINGCOMM_TOPO=0 publishes nothing."""
    monkeypatch.delenv("RINGCOMM_SYSFS_ROOT", raising=False)
    monkeypatch.delenv("RINGCOMM_TOPO_CPUS", raising=False)
    with ringcomm.init() as comm:
        (dom,) = comm._topology()["domains"]
    assert dom[0] == 0 and all(v >= 0 for v in dom), dom
    monkeypatch.setenv("RINGCOMM_SYSFS_ROOT", str(tmp_path))
    with ringcomm.init() as comm:
        assert comm._topology()["domains"] == [(0, NONE, NONE, NONE)]
    monkeypatch.setenv("RINGCOMM_TOPO", "0")
    monkeypatch.delenv("RINGCOMM_SYSFS_ROOT")
    with ringcomm.init() as comm:
        assert comm._topology()["domains"] == [(0, NONE, NONE, NONE)]


def test_order_model():
    """The model itself on the 8-rank interleaved layout (the numbers of docs/topology.md)."""
    tree = interleaved()
    domains = [(0,) + model_ids(tree, {r}) for r in range(8)]
    order = model_order(domains)
    assert order == [0, 4, 2, 6, 1, 5, 3, 7]
    assert (crossings(domains, list(range(8)), 2), crossings(domains, order, 2)) == (8, 2)
    assert (crossings(domains, list(range(8)), 3), crossings(domains, order, 3)) == (8, 4)


# ---- mpirun: the order, the data path, the sweeps ---------------------------------------

def layout(kind, p):
    """(tree, env, domains) of a p-rank layout."""
    if kind == "fake-cpus":      # rank r on fake CPU r of the interleaved 8-CPU tree
        tree = interleaved()
        env = {"RINGCOMM_TEST_TOPO_CPUS": ";".join(str(r) for r in range(p))}
        sets = [{r} for r in range(p)]
    elif kind == "pinned":       # rank r really pinned to CPU r % 2; CPUs 0, 1 on 2 nodes
        tree = {0: (0, 0, [0]), 1: (1, 1, [1])}
        env = {"RINGCOMM_TEST_PIN": ";".join(str(r % 2) for r in range(p))}
        sets = [{r % 2} for r in range(p)]
    else:
        raise ValueError(kind)
    return tree, env, [(0,) + model_ids(tree, s) for s in sets]


def _env(tmp_path, kind, p, extra=None):
    tree, env, domains = layout(kind, p)
    env["RINGCOMM_SYSFS_ROOT"] = str(make_sysfs(tmp_path / "sys", tree))
    env.update(extra or {})
    return env, domains


def _fmt(domains):
    return ";".join(".".join(str(v) for v in d) for d in domains)


CROSSINGS = {}   # (kind, p) -> (numa before, after, l3 before, after), for the report


@pytest.mark.mpi
@pytest.mark.parametrize("kind,nprocs", [("fake-cpus", 2), ("fake-cpus", 3), ("fake-cpus", 4),
                                         ("fake-cpus", 6), ("pinned", 4), ("pinned", 3)])
def test_order_and_data_path(run_mpi, tmp_path, kind, nprocs):
    """Every rank computes the model's order; ring and binomial reductions run
    in it (bitwise against numpy models, many chunks); RINGCOMM_TOPO=0 gives
    rank order; the INFO line lists domains and order; crossings reported."""
    env, domains = _env(tmp_path, kind, nprocs,
                        {"RINGCOMM_CHUNK_BYTES": "256", "RINGCOMM_DEBUG": "INFO"})
    order = model_order(domains)
    res = run_mpi(nprocs, "topology.py", "--order", ",".join(map(str, order)),
                  "--domains", _fmt(domains), env=env)
    m = re.search(r"TOPO-CROSSINGS p=(\d+) order=(\S+) numa (\d+) -> (\d+) l3 (\d+) -> (\d+)",
                  res.output)
    assert m, res.output[-3000:]
    got = tuple(int(x) for x in m.groups()[2:])
    ident = list(range(nprocs))
    want = (crossings(domains, ident, 2), crossings(domains, order, 2),
            crossings(domains, ident, 3), crossings(domains, order, 3))
    assert got == want
    assert want[1] <= want[0] and want[3] <= want[2]
    CROSSINGS[(kind, nprocs)] = want
    print(f"\n{kind} p={nprocs}: order {order}; ring NUMA crossings {want[0]} -> {want[1]}, "
          f"L3 crossings {want[2]} -> {want[3]}")
    # the INFO line (rank 0, once per communicator) names the same order
    lines = [ln for ln in res.output.splitlines() if "topology (rank=host.package.numa.l3" in ln]
    assert any(("ring order " + " ".join(map(str, order)) + ";") in ln for ln in lines), lines
    if nprocs >= 4:
        assert want[1] < want[0], "the topology order must cross fewer NUMA boundaries"


@pytest.mark.mpi
@pytest.mark.parametrize("nprocs", [2, 3, 4, 6])
def test_collectives_under_permuted_order(run_mpi, tmp_path, nprocs):
    """coll_sweep (every collective x algorithm x root, counts 0, 1, P-1,
    17, 1000 and many chunks), vs numpy and mpi4py, with the interleaved
    layout's permuted order."""
    env, domains = _env(tmp_path, "fake-cpus", nprocs, {"RINGCOMM_CHUNK_BYTES": "256"})
    assert nprocs < 4 or model_order(domains) != list(range(nprocs))
    run_mpi(nprocs, "coll_sweep.py", "--rotate", "--counts", "0,1,P-1,17,1000", env=env)


@pytest.mark.mpi
@pytest.mark.parametrize("nprocs", [2, 3, 4, 6])
def test_allreduce_under_permuted_order(run_mpi, tmp_path, nprocs):
    """allreduce_sweep (every algorithm, dtype, op) at counts 0, 1, 3, P-1,
    1000, 4099 across many 256-byte chunks, with the permuted order."""
    env, _ = _env(tmp_path, "fake-cpus", nprocs, {"RINGCOMM_CHUNK_BYTES": "256"})
    run_mpi(nprocs, "allreduce_sweep.py", "--counts", "0,1,3,P-1,1000,4099", "--rotate",
            "--variants", "np-in,np-out", env=env)


@pytest.mark.mpi
@pytest.mark.parametrize("nprocs", [4, 6])
def test_determinism_under_permuted_order(run_mpi, tmp_path, nprocs):
    """Bitwise identical on every rank and run, every algorithm, permuted order."""
    env, _ = _env(tmp_path, "fake-cpus", nprocs, {"RINGCOMM_CHUNK_BYTES": "1024"})
    run_mpi(nprocs, "determinism.py", env=env)


@pytest.mark.mpi
@pytest.mark.parametrize("domain", ["numa", "l3"])
def test_hier_over_domains(run_mpi, tmp_path, domain):
    """RINGCOMM_HIER_DOMAIN: the hierarchical all-reduce with NUMA nodes (L3
    groups) as its hosts, 4 ranks of the interleaved layout (2 nodes x 2
    ranks; 4 L3 groups of one rank each), every algorithm incl. hier."""
    env, _ = _env(tmp_path, "fake-cpus", 4, {"RINGCOMM_CHUNK_BYTES": "256",
                                              "RINGCOMM_HIER_DOMAIN": domain})
    run_mpi(4, "allreduce_sweep.py", "--counts", "0,1,3,1000,4099", "--rotate",
            "--variants", "np-in,np-out", env=env)
