"""Soak worker: benches/soak.py's workload (all-reduces, async requests,
communicator create/close cycles) with its leak checks; every rank's
problems are gathered and the job fails on any.

    soak.py [--small N] [--large N] [--comms N] [--rss-bound-mib M] [--heap-bound-kib K]
"""

import argparse
import importlib.util
import sys
from pathlib import Path

from _common import RANK, WORLD, finish

BENCH = Path(__file__).resolve().parents[2] / "benches" / "soak.py"


def load_bench():
    # not imported as "soak": this file has that name on sys.path
    spec = importlib.util.spec_from_file_location("ringcomm_soak_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    bench = load_bench()
    p = argparse.ArgumentParser()
    p.add_argument("--small", type=int, default=20_000)
    p.add_argument("--large", type=int, default=100)
    p.add_argument("--comms", type=int, default=100)
    p.add_argument("--rss-bound-mib", type=float, default=bench.DEFAULT_RSS_BOUND_MIB)
    p.add_argument("--heap-bound-kib", type=float, default=bench.DEFAULT_HEAP_BOUND_KIB)
    a = p.parse_args()
    soak = bench.Soak(WORLD, intervals=4)
    soak.run(a.small, a.large, a.comms)
    problems = WORLD.allgather(soak.failures(a.rss_bound_mib, a.heap_bound_kib))
    table = bench.format_report(WORLD.allgather(soak.samples))
    if RANK == 0:
        print(table, flush=True)
    flat = [f for fl in problems for f in fl]
    if flat:
        # every rank fails (fail fast, no rank waits in finish()); rank 0 lists all
        if RANK != 0:
            raise AssertionError("soak found problems (listed by rank 0)")
        raise AssertionError(f"soak found {len(flat)} problem(s) (bounds: RSS "
                             f"+{a.rss_bound_mib} MiB, heap +{a.heap_bound_kib:.0f} KiB after "
                             "warm-up):\n" + "\n".join(flat))
    finish("soak", soak.calls)


if __name__ == "__main__":
    sys.exit(main())
