"""comm.stragglers(): the straggler report and RINGCOMM_STRAGGLER.

Cases (argv[1]):
  sleeper R   rank R sleeps 20 ms before each of 50 all-reduces: every rank's
              report is the same, names R, its median lateness within 25% of
              20 ms; then 50 calls without a sleeper name nobody (reset).
  window      reset and the window: the report covers exactly the calls since
              the reset (also async ones posted before it); 20000 calls keep
              the last 4096 and the resident memory does not grow; a forced
              Cristian estimate on one clock is within its own RTT/2 of 0;
              bad arguments raise.
  torch R     ringcomm.torch.stragglers(group) names R on the default group
              and on a new ringcomm group; a gloo group raises.
  periodic R  RINGCOMM_STRAGGLER (set on rank 0 only: rank 0's setting decides
              for every rank): rank R sleeps; rank 0 prints the line.
"""

import os
import sys
import time

import numpy as np

import ringcomm
from ringcomm import stragglers as strag
from _common import RANK, SIZE, WORLD, finish

SLEEP = 0.020


def same_everywhere(rep):
    d = rep.as_dict()
    alld = WORLD.allgather(d)
    assert all(x == d for x in alld), alld
    return d


def case_sleeper(comm, sleeper):
    x = np.arange(8, dtype=np.float32)
    for _ in range(50):
        if RANK == sleeper:
            time.sleep(SLEEP)
        comm.allreduce(x)
    rep = comm.stragglers(reset=True)
    if RANK == 0:
        print(rep, flush=True)
    d = same_everywhere(rep)
    assert d["ncalls"] == 50, d
    assert d["straggler"] == sleeper, str(rep)
    med = d["ranks"][sleeper]["median_lateness"]
    assert 0.75 * SLEEP <= med <= 1.25 * SLEEP, str(rep)
    assert d["ranks"][sleeper]["last"] >= 45, str(rep)
    for r in d["ranks"]:
        if r["rank"] != sleeper:
            assert r["median_lateness"] < 0.25 * SLEEP, str(rep)
    # the others waited about 20 ms per call for it
    assert d["ranks"][sleeper]["waited_for"] >= 0.5 * 50 * SLEEP, str(rep)
    # no sleeper: nobody is named
    for _ in range(50):
        comm.allreduce(x)
    rep = comm.stragglers()
    if RANK == 0:
        print(rep, flush=True)
    d = same_everywhere(rep)
    assert d["ncalls"] == 50, d
    assert d["straggler"] is None, str(rep)
    return 2


def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def case_window(comm):
    x = np.ones(4, np.float64)
    n = 0
    comm.allreduce(x)
    comm.stragglers(reset=True)
    # exactly the calls since the reset: 3 blocking, 4 async, 1 broadcast
    for _ in range(3):
        comm.allreduce(x)
    reqs = [comm.allreduce(np.ones(4), async_op=True) for _ in range(4)]
    comm.broadcast(x, root=SIZE - 1)
    rep = comm.stragglers()
    d = same_everywhere(rep)
    assert d["ncalls"] == 8, d
    for r in reqs:
        r.wait()
    # without reset the window goes on: 8 + 2
    comm.barrier()
    comm.barrier()
    assert comm.stragglers(reset=True).ncalls == 10
    assert comm.stragglers().ncalls == 0
    n += 3
    # many calls: the ring keeps the last 4096, memory stays flat
    for _ in range(3000):
        comm.allreduce(x)
    before = rss_kib()
    for _ in range(20000):
        comm.allreduce(x)
    after = rss_kib()
    rep = comm.stragglers(reset=True)
    d = same_everywhere(rep)
    # the ring holds the last 4096 sequence numbers, the report's own quiet
    # barrier among them
    assert strag.RING - 2 <= d["ncalls"] <= strag.RING, d
    assert d["calls_since_reset"] > strag.RING, d
    assert "kept of" in str(rep), str(rep)
    assert after - before < 1024, (before, after)
    n += 1
    # Cristian's method on one clock: the estimate is within RTT/2 of 0
    boots = ["same"] * SIZE
    off, rtt = strag.clock_offset(comm, boots, force=True)
    assert abs(off) <= rtt / 2 + 1e-9, (off, rtt)
    assert strag.clock_offset(comm, boots) == (0.0, 0.0)
    n += 1
    # bad arguments raise before any communication
    for bad in ("yes", 1, None):
        try:
            comm.stragglers(reset=bad)
        except TypeError as e:
            assert "reset" in str(e)
        else:
            raise AssertionError("reset=%r did not raise" % (bad,))
    n += 1
    return n


def case_periodic(comm, sleeper):
    assert comm.straggler_period == 0.2, comm.straggler_period
    x = np.ones(2, np.float32)
    for _ in range(60):
        if RANK == sleeper:
            time.sleep(SLEEP)
        comm.allreduce(x)
    WORLD.Barrier()
    for _ in range(200):
        comm.allreduce(x)
    return 1


def case_torch(sleeper):
    """ringcomm.torch.stragglers(group) on the default group and a new one."""
    import torch
    import torch.distributed as dist

    import ringcomm.torch as rt
    dist.init_process_group("ringcomm")
    sub = dist.new_group(list(range(SIZE)), backend="ringcomm")
    try:
        for group in (None, sub):
            t = torch.ones(16)
            for _ in range(30):
                if RANK == sleeper:
                    time.sleep(SLEEP)
                dist.all_reduce(t, group=group)
            rep = rt.stragglers(group, reset=True)
            d = same_everywhere(rep)
            assert d["ncalls"] == 30 and d["straggler"] == sleeper, str(rep)
        try:
            rt.stragglers(dist.new_group(backend="gloo"))
        except ValueError as e:
            assert "ringcomm" in str(e)
        else:
            raise AssertionError("a gloo group did not raise")
    finally:
        dist.destroy_process_group()
    return 3


def main():
    case = sys.argv[1]
    if case == "torch":
        finish("stragglers-torch", case_torch(int(sys.argv[2])))
        return
    if case == "periodic":
        if RANK == 0:
            os.environ["RINGCOMM_STRAGGLER"] = "0.2"
            os.environ["RINGCOMM_STRAGGLER_CALLS"] = "10"
        else:
            os.environ.pop("RINGCOMM_STRAGGLER", None)
    comm = ringcomm.Communicator.from_mpi(WORLD, timeout=60)
    try:
        if case == "sleeper":
            n = case_sleeper(comm, int(sys.argv[2]))
        elif case == "window":
            n = case_window(comm)
        else:
            n = case_periodic(comm, int(sys.argv[2]))
    finally:
        comm.close()
    finish("stragglers-" + case, n)


main()
