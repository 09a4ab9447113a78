"""algorithm selection: RINGCOMM_ALGO overrides "auto"; algorithm= overrides both.

Algorithms are told apart by their bits: with mixed-magnitude float32 data at
P >= 3 each algorithm's reduction order leaves a different fingerprint.
  1. A communicator made without RINGCOMM_ALGO gives the fingerprint of every
     named algorithm.
  2. For each algorithm X: RINGCOMM_ALGO=X is set (on every rank, or on rank 0
     only with --rank0-only: rank 0's value rules) before a new communicator
     is made; "auto" must then give X's fingerprint, and algorithm=Y must give
     Y's.
With --expect X the launcher set RINGCOMM_ALGO=X for the whole job: "auto" on
a communicator made at start must give X's fingerprint (step 1 then runs with
algorithm= only).
"""

import argparse
import os

import ringcomm
from _common import RANK, SIZE, WORLD, case_seed, finish, gen_rank_data, make_buf, raw_bytes

COUNTS = (64, 3001, 200003)


def fingerprints(comm, algos):
    fp = {}
    for count in COUNTS:
        data = gen_rank_data("float32", "sum", count, case_seed(99, count), RANK, SIZE,
                             nonfinite=False)
        for algo in algos:
            buf = make_buf("numpy", "float32", data)
            comm.allreduce(buf, op="sum", algorithm=algo)
            fp[(algo, count)] = raw_bytes(buf)
    return fp


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rank0-only", action="store_true")
    p.add_argument("--expect")
    a = p.parse_args()
    assert SIZE >= 3, "fingerprints need P >= 3 (at P=2 every order gives the same sum)"
    names = list(ringcomm.algorithms())
    with ringcomm.Communicator.from_mpi(WORLD) as comm:
        base = fingerprints(comm, names + ["auto"])
    ncases = 0
    distinguishable = {x: [c for c in COUNTS
                           if any(base[(x, c)] != base[(y, c)] for y in names if y != x)]
                       for x in names}
    if a.expect:
        x = a.expect
        assert distinguishable[x], f"{x} gives the same bits as every other algorithm: " \
                                   "the override cannot be observed"
        for c in COUNTS:
            assert base[("auto", c)] == base[(x, c)], \
                f"RINGCOMM_ALGO={x} in the job environment: auto at count {c} is not {x}"
            ncases += 1
        finish("algo_select", ncases)
        return
    for x in names:
        assert distinguishable[x], f"{x} gives the same bits as every other algorithm " \
                                   f"at counts {COUNTS}: the override cannot be observed"
        if RANK == 0 or not a.rank0_only:
            os.environ["RINGCOMM_ALGO"] = x
        else:
            os.environ.pop("RINGCOMM_ALGO", None)
        try:
            with ringcomm.Communicator.from_mpi(WORLD) as comm:
                fp = fingerprints(comm, names + ["auto"])
        finally:
            os.environ.pop("RINGCOMM_ALGO", None)
        for c in COUNTS:
            assert fp[("auto", c)] == base[(x, c)], \
                f"RINGCOMM_ALGO={x}: auto at count {c} does not give {x}'s result"
            for y in names:
                assert fp[(y, c)] == base[(y, c)], \
                    f"RINGCOMM_ALGO={x}: algorithm={y!r} at count {c} does not give {y}'s result"
            ncases += 1
    finish("algo_select", ncases)


if __name__ == "__main__":
    main()
