"""Simulated hosts: what the host layout decides.

Run with RINGCOMM_TEST_HOSTS=a,a,b,b (rank r gets RINGCOMM_HOST_ID hosts[r],
see _common.py).  Checks on every rank:

  * "auto" all-reduce picks "hier" exactly when the ranks span hosts and
    every host holds the same number (> 1) of ranks (select_algorithm; for
    calls beyond direct's few bytes);
  * "hier", "auto", "ring" and "tree" all-reduces equal numpy (int64 sum:
    exact; float32 sum: bitwise identical on every rank) at counts 0, 1,
    P-1 and across many blocks; "hier" declines to the ring where the hosts
    hold different rank counts;
  * split communicators: the ranks of one host (shared memory only) and one
    rank of each host (network only) both reduce correctly, and so does a
    send/recv ring shift over the world.

--mode log: only connect and one all-reduce (the launcher then checks the
RINGCOMM_DEBUG=INFO lines naming the transport of every peer).
"""

import argparse
import os

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, finish, world_comm


def layout():
    hosts = os.environ["RINGCOMM_TEST_HOSTS"].split(",")
    assert len(hosts) == SIZE, (hosts, SIZE)
    order = list(dict.fromkeys(hosts))
    counts = [hosts.count(h) for h in order]
    return hosts, counts


def rank_data(count, dtype, r, seed=0):
    rng = np.random.default_rng([seed, count, r])
    if dtype == "int64":
        return rng.integers(-10**6, 10**6, count, dtype=np.int64)
    return (rng.standard_normal(count) * 10.0 ** rng.integers(-3, 4, count)).astype(dtype)


def check_allreduce(comm, ranks, algos, counts, cases):
    """comm's rank i is world rank ranks[i]."""
    for count in counts:
        for dtype in ("int64", "float32"):
            xs = [rank_data(count, dtype, r) for r in ranks]
            for algo in algos:
                x = xs[comm.rank].copy()
                comm.allreduce(x, algorithm=algo)
                if dtype == "int64":
                    assert np.array_equal(x, sum(xs[1:], xs[0].copy())), (algo, count)
                else:
                    ref = np.sum(np.array(xs, dtype=np.float64), axis=0)
                    err = np.abs(x - ref)
                    bound = (len(ranks) + 2) * 1.2e-7 * np.sum(np.abs(np.array(xs, np.float64)), 0)
                    assert np.all(err <= bound), (algo, count, float(np.max(err - bound)))
                    same = WORLD.allgather(x.tobytes()) if comm.size == SIZE else None
                    assert same is None or all(s == same[0] for s in same), (algo, count)
                cases += 1
    return cases


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", default="full", choices=("full", "log"))
    a = p.parse_args()
    hosts, counts = layout()
    comm = world_comm()
    if a.mode == "log":
        x = np.full(10, RANK, dtype=np.int64)
        comm.allreduce(x)
        assert np.all(x == SIZE * (SIZE - 1) // 2)
        comm.close()
        finish("multihost-log", 1)
        return
    cases = 0
    # 1. auto picks hier exactly on uniform layouts with several ranks per host
    # (tiny calls: one step of "direct" where it applies)
    want_hier = len(counts) > 1 and len(set(counts)) == 1 and counts[0] > 1
    for n in (1 << 16, 1 << 22):
        got = comm.select_algorithm(n, "float32")
        assert (got == "hier") == want_hier, (hosts, n, got)
        cases += 1
    assert comm.select_algorithm(2, "float32") in ("direct", "hier"), comm.select_algorithm(2)
    # 2. every all-reduce algorithm over the mixed transports
    chunk = comm.chunk_bytes // 8
    many = 3 * max(counts) * len(counts) * chunk + 5      # several hier blocks
    cases = check_allreduce(comm, list(range(SIZE)), ["hier", "auto", "ring", "tree"],
                            [0, 1, SIZE - 1, 1000, many], cases)
    # 3. split: one host (shared memory only), one rank per host (network only)
    host_of = sorted(set(hosts), key=hosts.index)
    mine = hosts[RANK]
    same_host = [r for r in range(SIZE) if hosts[r] == mine]
    local_idx = same_host.index(RANK)
    sub = comm.split(host_of.index(mine), key=RANK)
    assert sub.size == len(same_host), (sub.size, same_host)
    cases = check_allreduce(sub, same_host, ["auto", "ring"], [1, 1000], cases)
    sub.close()
    across = [r for r in range(SIZE)
              if [q for q in range(SIZE) if hosts[q] == hosts[r]].index(r) == local_idx]
    sub = comm.split(local_idx, key=RANK)
    assert sub.size == len(across), (sub.size, across)
    cases = check_allreduce(sub, across, ["auto", "ring", "hier"], [1, 1000], cases)
    sub.close()
    # 4. a send/recv ring shift over the world (shared memory and network hops)
    right, left = (RANK + 1) % SIZE, (RANK - 1) % SIZE
    for n in (0, 7, 300000):
        out = rank_data(n, "float32", RANK, seed=7)
        got = np.empty(n, np.float32)
        req = comm.isend(out, right, tag=5)
        comm.recv(got, left, tag=5)
        req.wait()
        assert np.array_equal(got, rank_data(n, "float32", left, seed=7)), n
        cases += 1
    comm.close()
    finish("multihost", cases)


if __name__ == "__main__":
    main()
