"""What a communicator made now takes from the tune file and the environment.

argv[1]: JSON {"thresholds": {name: [bytes or null, origin], ...} (a subset),
               "source": prefix of comm.tune_source,
               "select": [[count, collective, algorithm], ...] (float32),
               "pin": "own" (rank r runs on CPU r mod the CPUs it may use) or
                      "first" (every rank on the first of them), set before
                      the communicator is made}
Every rank checks (rank 0's values are everyone's).
"""
import json
import os
import sys

import ringcomm
from _common import RANK, WORLD, finish


def main():
    want = json.loads(sys.argv[1])
    ncases = 0
    if want.get("pin"):
        cpus = sorted(os.sched_getaffinity(0))
        pick = cpus[RANK % len(cpus)] if want["pin"] == "own" else cpus[0]
        os.sched_setaffinity(0, {pick})
    with ringcomm.Communicator.from_mpi(WORLD) as comm:
        got = comm.thresholds(origins=True)
        assert set(got) == set(comm.thresholds()), got
        for name, (value, origin) in want.get("thresholds", {}).items():
            assert got[name][1] == origin and value in (None, got[name][0]), \
                f"rank {RANK}: {name} is {got[name]}, expected {(value, origin)}; " \
                f"source {comm.tune_source}"
            ncases += 1
        src = comm.tune_source
        assert src.startswith(want["source"]), f"rank {RANK}: tune_source {src!r}"
        ncases += 1
        for count, coll, algo in want.get("select", []):
            pick = comm.select_algorithm(count, "float32", coll)
            assert pick == algo, f"rank {RANK}: auto picks {pick} for {coll} count={count}, " \
                                 f"expected {algo} ({got})"
            ncases += 1
    finish("tune_read", ncases)


if __name__ == "__main__":
    main()
