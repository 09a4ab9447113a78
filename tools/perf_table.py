#!/usr/bin/env python3
"""Regenerate the README's performance table from ``python -m ringcomm.bench`` runs.

    make perf-table                 # = .venv/bin/python tools/perf_table.py
    .venv/bin/python tools/perf_table.py --dry-run      # only print the commands

Runs the bench under ``mpirun`` (the one beside this Python, i.e.
``.venv/bin/mpirun``) at 2 and 4 ranks, with mpi4py and torch's gloo as
peers in the same processes:

- all-reduce at 8 B, 64 KiB, 1 MiB, 16 MiB, 256 MiB, every algorithm + auto;
- broadcast, reduce, all-gather, reduce-scatter, all-to-all, gather and
  scatter at 64 KiB and 16 MiB, every algorithm + auto;
- send/recv ping-pong at 8 B and 16 MiB.

Timing: ``-r 5`` (the median of 5 repetitions); ``-n``/``-w`` are left to
the bench's defaults, which scale with the size and cap one repetition of a
column at 50 ms (so gloo's ~1 ms small calls and every 256 MiB call run a
few times, not a thousand): about 3-5 minutes on the 2-core VM, most of it
the 256 MiB all-reduces at 4 ranks and the ~10 s start-up (torch, gloo) of
each of the 6 runs.

Each group's runs append to one Markdown table (``--markdown FILE
--markdown-append``, work files in ``build/perf-table/``); the tables, the
exact commands, the date, the CPU model, CPU count and load average go
between the ``<!-- perf-table:begin -->`` and ``<!-- perf-table:end -->``
markers in README.md.  Also writes the raw results of every run
(``--json``, default docs/perf.json) and a busbw plot (``--plot``, default
docs/perf.png, needs matplotlib), which the README shows.

The numbers are only as good as the machine is quiet: the load average at
the start and the end is in the generated text (and a warning when it was
above the CPU count).  Nothing is written when a run fails or counts wrong
elements.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "perf-table"
BEGIN, END = "<!-- perf-table:begin -->", "<!-- perf-table:end -->"

#: (name, heading, bench arguments); every group runs at every rank count
GROUPS = [
    ("allreduce", "All-reduce, float32 sum",
     ["-C", "allreduce", "-s", "8,64K,1M,16M,256M", "-a", "all"]),
    ("collectives", "The other collectives, float32 (reduce, reduce-scatter: sum; root 0)",
     ["-C", "broadcast,reduce,allgather,reducescatter,alltoall,gather,scatter", "-s", "64K,16M", "-a", "all"]),
    ("sendrecv", "Send/recv ping-pong between ranks 0 and 1 (time = half the round trip)",
     ["-C", "sendrecv", "-s", "8,16M"]),
]
PEERS = "mpi,gloo"
#: a run that takes longer than this is stuck (the whole table takes a few minutes)
RUN_TIMEOUT_S = 900


def rel(path) -> str:
    """path relative to the repository root when it is inside it (for the commands shown)."""
    p = Path(os.path.abspath(path))
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return "unknown"
    for key in ("model name", "Model", "cpu model", "cpu", "Processor"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", info, re.M)
        if m and m.group(1).strip():
            return re.sub(r"\s+", " ", m.group(1).strip())
    return "unknown"


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def fmt_load(la) -> str:
    return " / ".join(f"{x:.2f}" for x in la) + " (1 / 5 / 15 min)" if la else "unknown"


def plan(args) -> list[dict]:
    """The bench runs: group by group, each at every rank count (so each table is 2 ranks, then 4)."""
    py = Path(sys.executable)          # .venv/bin/python (not resolved: the venv's mpirun is beside it)
    mpirun = py.parent / "mpirun"
    runs = []
    for name, heading, bench_args in GROUPS:
        if args.quick:
            bench_args = list(bench_args)
            i = bench_args.index("-s") + 1
            bench_args[i] = ",".join(s for s in bench_args[i].split(",") if s in ("8", "64K", "1M"))
        for n in args.ranks:
            md, js = WORK / f"{name}.md", WORK / f"{name}-n{n}.json"
            argv = [str(mpirun), "-n", str(n), str(py), "-m", "ringcomm.bench", *bench_args,
                    "--peers", PEERS, "-r", str(args.repeats), "--no-progress",
                    "--markdown", str(md), "--markdown-append", "--json", str(js)]
            shown = [rel(a) if os.path.isabs(a) else a for a in argv]
            runs.append({"group": name, "heading": heading, "ranks": n, "argv": argv,
                         "command": shlex.join(shown), "markdown": md, "json": js})
    return runs


def run(r, log) -> int:
    """One bench run, its output copied to stdout and the log; its process group is killed on timeout."""
    env = dict(os.environ)
    src = str(ROOT / "src")          # the tree this tool lives in, not whatever the venv has installed
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(r["argv"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)

    def kill(sig=signal.SIGTERM):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    timed_out = []
    watchdog = threading.Timer(RUN_TIMEOUT_S, lambda: (timed_out.append(True), kill()))
    watchdog.start()
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
        rc = proc.wait()
    except KeyboardInterrupt:
        kill()
        raise
    finally:
        watchdog.cancel()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill(signal.SIGKILL)
            proc.wait()
    if timed_out:
        print(f"== killed after {RUN_TIMEOUT_S} s", flush=True)
        return rc or -1
    return rc


def fmt_duration(s: float) -> str:
    m, s = divmod(int(round(s)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def versions(runs_data) -> str:
    meta = next((d["meta"] for d in runs_data if d.get("meta")), {})
    parts = []
    if meta.get("ringcomm_version"):
        parts.append(f"ringcomm {meta['ringcomm_version']} (reduction ISA {meta.get('isa') or '?'})")
    if meta.get("mpi_library"):
        lib = re.sub(r"\s+", " ", meta["mpi_library"]).replace("Version: ", "")
        parts.append(f"{lib} through mpi4py")
    if meta.get("torch_version"):
        parts.append(f"torch {meta['torch_version']} (gloo)")
    return ", ".join(parts)


def block(args, runs, runs_data, machine, elapsed) -> str:
    """The README text between the markers."""
    cpus = machine["cpus"]
    la0, la1 = machine["loadavg_start"], machine["loadavg_end"]
    lines = [
        "<!-- generated by tools/perf_table.py (make perf-table): edits between the markers are overwritten -->",
        "",
        f"Generated {machine['date']} on {machine['cpu_model']}, {cpus} CPUs"
        f" (`{machine['host']}`), load average at the start {fmt_load(la0)}, at the end"
        f" {fmt_load(la1)}; {versions(runs_data)}. The whole table took {fmt_duration(elapsed)}.",
    ]
    if la0 and la0[0] > cpus or la1 and la1[0] > cpus:
        lines += ["", f"**Warning: the machine was busy (load average above its {cpus} CPUs): these numbers"
                      " are noisier than usual; regenerate on a quiet machine.**"]
    if args.quick:
        lines += ["", "**Quick smoke test (`--quick`: small sizes, few repetitions): not for publishing.**"]
    lines += ["", "Commands (from the repository root, `PYTHONPATH=src`):", "", "```sh"]
    lines += [r["command"] for r in runs]
    lines += ["```"]
    for name, heading, _ in GROUPS:
        md = WORK / f"{name}.md"
        if not md.exists():
            continue
        lines += ["", f"**{heading}**", "", md.read_text().strip()]
    if args.plot and Path(args.plot).exists():
        plot = os.path.relpath(os.path.abspath(args.plot), os.path.dirname(os.path.abspath(args.readme)))
        lines += ["", f"![busbw against size, every collective, 2 and 4 ranks]({plot})"]
    return "\n".join(lines)


def rewrite_readme(path: str, text: str) -> None:
    readme = Path(path).read_text()
    i, j = readme.find(BEGIN), readme.find(END)
    if i < 0 or j < i:
        raise SystemExit(f"perf_table: {path} has no {BEGIN} ... {END} markers")
    Path(path).write_text(readme[:i + len(BEGIN)] + "\n" + text + "\n" + readme[j:])


def write_plot(path: str, runs_data) -> None:
    """busbw against size, one panel per collective: ringcomm's best, mpi, gloo at each rank count."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    # (collective, ranks, series) -> {size: busbw}
    series = {}
    for d in runs_data:
        n = d["meta"]["ranks"]
        for r in d["results"]:
            if r.get("busbw_GBps") is None:
                continue
            label = "ringcomm best" if r["kind"] == "ringcomm" else r["column"]
            pts = series.setdefault((r["collective"], n, label), {})
            pts[r["size"]] = max(pts.get(r["size"], 0.0), r["busbw_GBps"])
    colls = list(dict.fromkeys(c for c, _, _ in series))
    if not colls:
        return
    ranks = sorted({n for _, n, _ in series})
    ncols = 3 if len(colls) > 4 else 2 if len(colls) > 1 else 1
    nrows = (len(colls) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False)
    colors = {"ringcomm best": "C0", "mpi": "C1", "gloo": "C2"}
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D"]

    def fmt_bytes(x, _pos):
        x = int(round(x))
        for unit, mult in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
            if x >= mult:
                return f"{x / mult:g}{unit}"
        return str(x)

    for ax, coll in zip(axes.flat, colls):
        for (c, n, label), pts in series.items():
            if c != coll:
                continue
            xs = sorted(s for s in pts if s > 0 and pts[s] > 0)
            if not xs:
                continue
            k = ranks.index(n) % len(styles)
            ax.plot(xs, [pts[s] for s in xs], color=colors.get(label, "C3"), linestyle=styles[k],
                    marker=markers[k], markersize=4, label=f"{label}, {n} ranks")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(fmt_bytes))
        ax.set_xlabel("size (B)")
        ax.set_ylabel("busbw (GB/s)")
        ax.set_title(coll, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(colls):]:
        ax.set_visible(False)
    legend = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    fig.legend(list(legend.values()), list(legend.keys()), loc="lower center", ncol=min(len(legend), 6),
               fontsize=8, frameon=False)
    fig.suptitle("ringcomm.bench: busbw (nccl-tests definition, GB = 1e9 B), median of repetitions", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", default="2,4", help="rank counts, comma list (default 2,4)")
    ap.add_argument("-r", "--repeats", type=int, default=5,
                    help="bench --repeats: repetitions per size, the median is reported (default 5)")
    ap.add_argument("--readme", default=str(ROOT / "README.md"), help="README to rewrite between the markers")
    ap.add_argument("--json", default=str(ROOT / "docs" / "perf.json"), help="raw results (default docs/perf.json)")
    ap.add_argument("--plot", default=str(ROOT / "docs" / "perf.png"), help="busbw plot (default docs/perf.png)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test of this tool: sizes up to 1 MiB only (the text says it is not for publishing)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)
    args.ranks = [int(x) for x in args.ranks.split(",") if x.strip()]

    runs = plan(args)
    if args.dry_run:
        print("\n".join(r["command"] for r in runs))
        return 0
    if not Path(runs[0]["argv"][0]).exists():
        raise SystemExit(f"perf_table: no mpirun beside {sys.executable} (run it with the venv's python:"
                         " make perf-table)")
    text = Path(args.readme).read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"perf_table: {args.readme} has no {BEGIN} ... {END} markers")

    WORK.mkdir(parents=True, exist_ok=True)
    for r in runs:       # the runs append: start from empty tables
        for f in (r["markdown"], r["json"]):
            if f.exists():
                f.unlink()
    machine = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "cpu_model": cpu_model(), "cpus": os.cpu_count(), "host": os.uname().nodename,
               "loadavg_start": loadavg()}
    print(f"perf_table: {len(runs)} runs; {machine['cpu_model']}, {machine['cpus']} CPUs,"
          f" load average {fmt_load(machine['loadavg_start'])}", flush=True)
    if machine["loadavg_start"] and machine["loadavg_start"][0] > machine["cpus"]:
        print("perf_table: warning: the machine is busy; the numbers will be noisy", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    failed = []
    with open(WORK / "bench.log", "w") as log:
        for k, r in enumerate(runs, 1):
            head = f"== [{k}/{len(runs)}] {r['command']}"
            print(head, flush=True)
            log.write(head + "\n")
            t_run = time.perf_counter()
            rc = run(r, log)
            r["elapsed_s"] = round(time.perf_counter() - t_run, 1)
            print(f"== run took {r['elapsed_s']:.1f} s, exit status {rc}", flush=True)
            if rc != 0:
                failed.append(f"{r['command']} (exit status {rc})")
    elapsed = time.perf_counter() - t0
    machine["loadavg_end"] = loadavg()
    if failed:
        print("perf_table: failed, README, JSON and plot left alone:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1

    runs_data = []
    for r in runs:
        data = json.loads(r["json"].read_text())
        runs_data.append({"group": r["group"], "ranks": r["ranks"], "command": r["command"],
                          "elapsed_s": r["elapsed_s"], "meta": data["meta"], "results": data["results"]})
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"generated_by": "tools/perf_table.py", "machine": machine,
                       "elapsed_s": round(elapsed, 1), "quick": args.quick,
                       "commands": [r["command"] for r in runs], "runs": runs_data}, f, indent=1)
    if args.plot:
        try:
            Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
            write_plot(args.plot, runs_data)
        except ImportError:
            print("perf_table: no plot: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
    rewrite_readme(args.readme, block(args, runs, runs_data, machine, elapsed))
    print(f"perf_table: {rel(args.readme)}, {rel(args.json)}, {rel(args.plot)} written;"
          f" {len(runs)} runs in {fmt_duration(elapsed)}; load average at the end {fmt_load(machine['loadavg_end'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
