"""Merge per-rank RINGCOMM_TRACE files into one trace for chrome://tracing
or https://ui.perfetto.dev:

    RINGCOMM_TRACE=/tmp/t.json mpirun -n 4 python train.py   # t.rank0.json ... t.rank3.json
    python -m ringcomm.trace /tmp/t.rank*.json -o /tmp/t.json

Each input is a JSON array of Trace Event Format events (one process per
file, one track per communicator); timestamps are CLOCK_MONOTONIC
microseconds, so ranks on one host line up.  A file cut short (a killed
rank) is read up to its last complete event."""

import argparse
import json
import sys


def load(path):
    """Events of one trace file; tolerates a missing closing bracket."""
    with open(path) as f:
        text = f.read().strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lines = [ln.rstrip(",") for ln in text.splitlines()[1:] if ln.startswith("{")]
        return [json.loads(ln) for ln in lines]


def merge(paths):
    events = []
    for p in paths:
        events.extend(e for e in load(p) if e.get("name") != "trace end")
    return events


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="per-rank trace files")
    ap.add_argument("-o", "--output", required=True, help="merged trace file")
    args = ap.parse_args(argv)
    events = merge(args.inputs)
    with open(args.output, "w") as f:
        json.dump(events, f)
    ops = sum(1 for e in events if e.get("cat") == "op")
    print(f"{args.output}: {ops} operations from {len(args.inputs)} files", file=sys.stderr)


if __name__ == "__main__":
    main()
