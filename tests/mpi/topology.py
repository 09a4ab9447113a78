"""topology: the rank order rings and trees follow (csrc/topo.c), under a
fake sysfs tree (RINGCOMM_SYSFS_ROOT) with per-rank CPU sets
(RINGCOMM_TEST_TOPO_CPUS / RINGCOMM_TEST_PIN, see _common.py).

On every rank:
  * comm._topology() gives the expected domains and order (--order,
    --domains: the pytest side's own model of the fake tree), the same on
    every rank;
  * the data really flows in that order: float32 sums of mixed magnitudes
    (so any other association shows in the bits) from the ring all-reduce,
    the ring reduce-scatter, the binomial all-reduce and the binomial
    reduce (every root) equal, bit for bit, a numpy model that reduces in
    the order the algorithm's comment gives over the topology positions;
    the ring all-gather is exact;
  * a communicator made with RINGCOMM_TOPO=0 uses rank order (identity) and
    matches the same models with the identity order;
  * rank 0 prints the ring's domain crossings in rank order and in the
    topology order (TOPO-CROSSINGS line).
"""

import argparse
import os

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, finish, log


def seg(n, p, i):
    q, r = divmod(n, p)
    off = i * q + min(i, r)
    return off, q + (1 if i < r else 0)


def data(rank, count, seed):
    rng = np.random.default_rng([seed, rank])
    mag = 10.0 ** rng.integers(-6, 7, count)   # mixed magnitudes: order-sensitive sums
    return (rng.standard_normal(count) * mag).astype(np.float32)


def model_ring_allreduce(xs, order, count):
    p = len(order)
    out = np.empty(count, np.float32)
    for s in range(p):                       # segment s starts at position s
        off, n = seg(count, p, s)
        acc = xs[order[s]][off:off + n].copy()
        for j in range(1, p):
            acc = np.add(acc, xs[order[(s + j) % p]][off:off + n], dtype=np.float32)
        out[off:off + n] = acc
    return out


def model_reduce_scatter(xs, order, rank, count):
    p = len(order)
    q = order.index(rank)                    # block `rank` starts at the next position
    blk = slice(rank * count, (rank + 1) * count)
    acc = xs[order[(q + 1) % p]][blk].copy()
    for k in range(2, p + 1):
        acc = np.add(acc, xs[order[(q + k) % p]][blk], dtype=np.float32)
    return acc


def model_binomial(xs, order, base):
    """Binomial reduce over positions relative to `base` (pattern.h's tree):
    a node folds in its children v+1, v+2, v+4, ... in that order."""
    p = len(order)

    def sub(v):
        acc = xs[order[(v + base) % p]].copy()
        limit = p if v == 0 else v & -v
        d = 1
        while d < limit and v + d < p:
            acc = np.add(acc, sub(v + d), dtype=np.float32)
            d <<= 1
        return acc
    return sub(0)


def check_comm(comm, order, count, seed, what):
    cases = 0
    topo = comm._topology()
    assert topo["order"] == order, f"{what}: order {topo['order']}, expected {order}"
    all_topo = WORLD.allgather(topo)
    assert all(t == topo for t in all_topo), f"{what}: ranks disagree on the topology {all_topo}"
    xs = [data(r, count, seed) for r in range(SIZE)]
    # ring all-reduce
    buf = xs[RANK].copy()
    comm.allreduce(buf, algorithm="ring")
    want = model_ring_allreduce(xs, order, count)
    assert buf.tobytes() == want.tobytes(), \
        f"{what}: ring all-reduce differs from the model in order {order} at " \
        f"{np.flatnonzero(buf.view(np.uint32) != want.view(np.uint32))[:5]}"
    cases += 1
    # binomial all-reduce (rooted at position 0)
    buf = xs[RANK].copy()
    comm.allreduce(buf, algorithm="binomial")
    want = model_binomial(xs, order, 0)
    assert buf.tobytes() == want.tobytes(), f"{what}: binomial all-reduce differs from the model"
    cases += 1
    # binomial reduce, every root (positions counted from the root's)
    for root in range(SIZE):
        out = np.zeros(count, np.float32)
        comm.reduce(xs[RANK], out=out, root=root, algorithm="binomial")
        if RANK == root:
            want = model_binomial(xs, order, order.index(root))
            assert out.tobytes() == want.tobytes(), \
                f"{what}: binomial reduce to {root} differs from the model"
        cases += 1
    # ring reduce-scatter: block r of the reduction on rank r
    big = [data(r, count * SIZE, seed + 1) for r in range(SIZE)]
    out = np.zeros(count, np.float32)
    comm.reduce_scatter(big[RANK], out, algorithm="ring")
    want = model_reduce_scatter(big, order, RANK, count)
    assert out.tobytes() == want.tobytes(), f"{what}: ring reduce-scatter differs from the model"
    cases += 1
    # ring all-gather: blocks stay in rank order
    out = np.zeros(count * SIZE, np.float32)
    comm.allgather(xs[RANK], out, algorithm="ring")
    assert out.tobytes() == np.concatenate(xs).tobytes(), f"{what}: ring all-gather wrong"
    cases += 1
    return cases, topo


def crossings(domains, order, level):
    p = len(order)
    return sum(domains[order[i]][:level + 1] != domains[order[(i + 1) % p]][:level + 1]
               for i in range(p)) if p > 1 else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--order", required=True, help="expected ring order, comma list")
    ap.add_argument("--domains", required=True,
                    help="expected host.package.numa.l3 per rank, ';' list (-1: none)")
    ap.add_argument("--count", type=int, default=1003)
    args = ap.parse_args()
    order = [int(x) for x in args.order.split(",")]
    domains = [tuple(int(v) for v in d.split(".")) for d in args.domains.split(";")]
    assert len(order) == SIZE and len(domains) == SIZE, "test arguments are for another size"
    cases = 0
    comm = ringcomm.Communicator.from_mpi(WORLD)
    n, topo = check_comm(comm, order, args.count, 11, "topology order")
    cases += n
    assert topo["domains"] == domains, f"domains {topo['domains']}, expected {domains}"
    comm.close()
    # the switch: rank order, nothing else changes
    os.environ["RINGCOMM_TOPO"] = "0"
    comm = ringcomm.Communicator.from_mpi(WORLD)
    n, _ = check_comm(comm, list(range(SIZE)), args.count, 12, "RINGCOMM_TOPO=0")
    cases += n
    comm.close()
    del os.environ["RINGCOMM_TOPO"]
    if RANK == 0:
        ident = list(range(SIZE))
        log(f"TOPO-CROSSINGS p={SIZE} order={','.join(map(str, order))} "
            f"numa {crossings(domains, ident, 2)} -> {crossings(domains, order, 2)} "
            f"l3 {crossings(domains, ident, 3)} -> {crossings(domains, order, 3)}")
    finish("topology", cases)


if __name__ == "__main__":
    main()
