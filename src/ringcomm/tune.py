"""python -m ringcomm.tune: measure the cost-model constants on this machine at
this rank count, derive the thresholds of algorithm="auto" from the model,
validate them by timing auto against every fixed algorithm, and write them to
the tune file the library reads at communicator creation.

Run it under the launcher and rank count you will use:

    mpirun -n 2 python -m ringcomm.tune            # or: torchrun --nproc-per-node 2 -m ringcomm.tune
    mpirun -n 2 python -m ringcomm.tune --quick    # a few seconds, rough

The file (key=value lines) goes to --output, else $RINGCOMM_TUNE_FILE, else
$XDG_CACHE_HOME/ringcomm/tune-<ranks>.conf, else
~/.cache/ringcomm/tune-<ranks>.conf: the place the library looks (csrc/tune.c).
The environment variables (RINGCOMM_DIRECT_MAX, ...) still override it.

The model (docs/design.md, "Auto thresholds"): each algorithm's time is

    T(n) = A(n) alpha_a + B(n) beta_a(n) + G(n) gamma

with A, B, G the steps, the bytes on the critical path and the bytes reduced
that its file's head comment states (csrc/algo/*.c), for p ranks and chunk C.
The constants are measured per algorithm, because on a machine with fewer
cores than ranks a "hop" costs what the scheduler makes it cost, and that
depends on how many ranks an algorithm keeps waiting:

* alpha_a (s per step): from the smallest calls (8, 32, 128 B);
* beta_a(n) (s per byte): from mid-size calls (16-256 KiB, cache-resident) and
  large ones (4-64 MiB), placed at 64 KiB and 16 MiB and interpolated in
  log n between them (constant outside);
* gamma (s per reduced byte): reduce_local minus a copy of the same bytes, on
  this rank's core while every rank runs (float32; bfloat16 is reported).

Thresholds: on a grid of sizes (8 B .. 1 GiB, 4 per octave) the model's time
of every algorithm is evaluated, and the interval boundaries of rc_select's
fixed order (e.g. direct < binomial < tree < ring < cma for all-reduce) are
chosen by dynamic programming to minimise the sum over the grid of
log(T_auto / T_best).  Validation times "auto" (a fresh communicator that
reads the new file) beside every fixed algorithm, interleaved, medians of
max-over-ranks times, on 8 B .. 64 MiB x4, and reports auto/best per size.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import socket
import sys
import time

import numpy as np

import ringcomm

FORMAT = "ringcomm-tune-1"

# rc_select's order per collective: ("max" algorithms in order), default, ("min" algorithms)
# and the tune key of each bounded algorithm (csrc/tune.c).
SELECTION = {
    "allreduce": (["direct", "binomial", "tree"], "ring", ["cma"]),
    "broadcast": (["binomial"], "chain", ["scatter_allgather"]),
    "reduce": (["binomial"], "rs_gather", []),
    "allgather": (["direct"], "ring", ["cma"]),
    "reduce_scatter": (["direct"], "ring", []),
    "alltoall": ([], "pairwise", ["cma"]),
}
KEYS = {
    ("allreduce", "direct"): "allreduce_direct_max",
    ("allreduce", "binomial"): "allreduce_binomial_max",
    ("allreduce", "tree"): "allreduce_tree_max",
    ("allreduce", "cma"): "allreduce_cma_min",
    ("broadcast", "binomial"): "broadcast_binomial_max",
    ("broadcast", "scatter_allgather"): "broadcast_scatter_allgather_min",
    ("reduce", "binomial"): "reduce_binomial_max",
    ("allgather", "direct"): "allgather_direct_max",
    ("allgather", "cma"): "allgather_cma_min",
    ("reduce_scatter", "direct"): "reduce_scatter_direct_max",
    ("alltoall", "cma"): "alltoall_cma_min",
}
# environment variables that would override the file (or force an algorithm)
ENV_OVERRIDES = ("RINGCOMM_ALGO", "RINGCOMM_DIRECT_MAX", "RINGCOMM_TREE_MAX",
                 "RINGCOMM_CMA_ALLREDUCE_MIN") + tuple(
    "RINGCOMM_" + k.upper() for k in KEYS.values()
    if k not in ("allreduce_direct_max", "allreduce_tree_max", "allreduce_cma_min"))


# --------------------------------------------------------------------------
# the cost model: (A steps, B bytes on the critical path, G bytes reduced),
# or None where the algorithm declines.  n = the call's bytes as rc_select
# counts them (the big buffer for block collectives).
# --------------------------------------------------------------------------

def _lg(p):
    return max(1, math.ceil(math.log2(p)))


def _k(n, c):
    return max(1, math.ceil(n / c))


def terms(coll, algo, p, n, c):
    L, f = _lg(p), (p - 1) / p
    if coll == "allreduce":
        if algo == "direct":
            return (1, (p - 1) * n, (p - 1) * n) if n <= c and p <= 8 else None
        if algo == "binomial":   # the root receives and sends n once per child
            return (2 * (L + _k(n, c) - 1), 2 * L * n, L * n)
        if algo == "tree":       # two trees, each half of the buffer
            return (2 * (L + _k(n, 2 * c) - 1), 2 * n, n)
        if algo == "ring":
            return (2 * (p - 1) * _k(n, p * c), 2 * f * n, f * n)
        if algo == "cma":        # addresses + two barriers; reads
            return (3 + 2 * L, 2 * f * n, f * n)
    if coll == "broadcast":
        if algo == "binomial":
            return (L + _k(n, c) - 1, L * n, 0)
        if algo == "chain":
            return (p + _k(n, c) - 2, n + (p - 2) * min(n, c), 0)
        if algo == "scatter_allgather":
            return (2 * (p - 1) * _k(n, p * c), 2 * f * n, 0)
    if coll == "reduce":
        if algo == "binomial":
            return (L + _k(n, c) - 1, L * n, L * n)
        if algo == "rs_gather":
            return ((p - 1) * _k(n, p * c) + 1, 2 * f * n, f * n)
    if coll == "allgather":
        if algo == "direct":
            return (1, f * n, 0) if n / p <= c and p <= 8 else None
        if algo == "ring":
            return ((p - 1) * _k(n, p * c), f * n, 0)
        if algo == "cma":
            return (1 + 2 * L, f * n, 0)
    if coll == "reduce_scatter":
        if algo == "direct":
            return (1, f * n, f * n) if n / p <= c and p <= 8 else None
        if algo == "ring":
            return ((p - 1) * _k(n, p * c), f * n, f * n)
    if coll == "alltoall":
        if algo == "pairwise":
            return ((p - 1) * _k(n / p, c), f * n, 0)
        if algo == "cma":
            return (1 + 2 * L, f * n, 0)
    raise KeyError((coll, algo))


class AlgoModel:
    """One algorithm's measured constants: alpha (s/step), beta at a few sizes (s/byte)."""

    def __init__(self, coll, algo, p, c, gamma):
        self.coll, self.algo, self.p, self.c, self.gamma = coll, algo, p, c, gamma
        self.alpha = 0.0
        self.points = []   # [(n, beta)]

    def beta(self, n):
        pts = self.points
        if not pts:
            return 0.0
        if n <= pts[0][0] or len(pts) == 1:
            return pts[0][1]
        if n >= pts[-1][0]:
            return pts[-1][1]
        # piecewise linear in log(size) between neighbouring calibration points
        i = next(i for i in range(1, len(pts)) if n <= pts[i][0])
        (n0, b0), (n1, b1) = pts[i - 1], pts[i]
        w = math.log(n / n0) / math.log(n1 / n0)
        return b0 + w * (b1 - b0)

    def time(self, n):
        t = terms(self.coll, self.algo, self.p, n, self.c)
        if t is None:
            return math.inf
        a, b, g = t
        return a * self.alpha + b * self.beta(n) + g * self.gamma

    def fit(self, groups):
        """groups = [[(n, T), ...], ...]: the smallest calls, mid-size ones,
        large ones (three sizes each; a group an algorithm declines is empty).  alpha: the median over the small calls
        of (T - B beta - G gamma) / A; beta of each other group: the median of
        (T - A alpha - G gamma) / B, placed at the group's middle size.  Two
        passes (each uses the other); medians so one bad size does not move it."""
        small, rest = groups[0], [g for g in groups[1:] if g]
        self.points = []
        for _ in range(2):
            al = []
            for n, t in small:
                a, b, g = terms(self.coll, self.algo, self.p, n, self.c)
                al.append((t - b * self.beta(n) - g * self.gamma) / a)
            self.alpha = max(0.0, float(np.median(al)))
            pts = []
            for grp in rest:
                be = []
                for n, t in grp:
                    a, b, g = terms(self.coll, self.algo, self.p, n, self.c)
                    be.append((t - a * self.alpha - g * self.gamma) / b)
                pts.append((sorted(n for n, _ in grp)[len(grp) // 2],
                            max(1e-13, float(np.median(be)))))
            self.points = sorted(dict(pts).items())


def derive(coll, models, p, grid):
    """Thresholds minimising sum(log(T_auto / T_best)) over the grid under
    rc_select's order; also returns the model's winner per grid size."""
    maxs, default, mins = SELECTION[coll]
    order = [a for a in maxs + [default] + mins if a in models]
    T = np.array([[models[a].time(n) for a in order] for n in grid])
    best = T.min(axis=1)
    cost = np.log(T / best[:, None])
    G, S = cost.shape
    dp = np.full((G, S), math.inf)
    back = np.zeros((G, S), dtype=int)
    dp[0] = cost[0]
    for i in range(1, G):
        for s in range(S):
            j = int(np.argmin(dp[i - 1, :s + 1]))
            dp[i, s] = cost[i, s] + dp[i - 1, j]
            back[i, s] = j
    seg = [0] * G
    s = int(np.argmin(dp[-1]))
    for i in range(G - 1, -1, -1):
        seg[i] = s
        s = back[i, s]
    chosen = [order[s] for s in seg]
    thr = {}
    for a in maxs:
        if (coll, a) not in KEYS:
            continue
        idx = [i for i, x in enumerate(chosen) if x == a]
        if not idx:
            thr[KEYS[coll, a]] = 0
        elif idx[-1] == G - 1:
            thr[KEYS[coll, a]] = int(grid[-1])
        else:   # between the last size it wins and the next grid size
            thr[KEYS[coll, a]] = int(math.sqrt(grid[idx[-1]] * grid[idx[-1] + 1]))
    for a in mins:
        idx = [i for i, x in enumerate(chosen) if x == a]
        if not idx:
            thr[KEYS[coll, a]] = 0
        elif idx[0] == 0:
            thr[KEYS[coll, a]] = 1
        else:
            thr[KEYS[coll, a]] = int(math.ceil(math.sqrt(grid[idx[0] - 1] * grid[idx[0]])))
    winners = [order[int(np.argmin(row))] for row in T]
    return thr, chosen, winners, float(np.exp(cost[np.arange(G), seg].max()))


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------

def block_count(coll, n, p):
    """(count argument, send elements, recv elements) for a call of n bytes (float32)."""
    if coll in ("allreduce", "broadcast", "reduce"):
        cnt = max(1, n // 4)
        return cnt, cnt, cnt
    blk = max(1, n // (4 * p))
    if coll == "allgather":
        return blk, blk, blk * p
    if coll == "reduce_scatter":
        return blk, blk * p, blk
    return blk, blk * p, blk * p          # alltoall


def call_bytes(coll, n, p):
    cnt = block_count(coll, n, p)[0]
    return cnt * 4 * (p if coll in ("allgather", "reduce_scatter", "alltoall") else 1)


def make_call(comm, coll, n, algo):
    p = comm.size
    cnt, ns, nr = block_count(coll, n, p)
    send = np.zeros(ns, np.float32)
    recv = np.zeros(nr, np.float32)
    if coll == "allreduce":
        return lambda: comm.allreduce(send, algorithm=algo)
    if coll == "broadcast":
        return lambda: comm.broadcast(send, root=0, algorithm=algo)
    if coll == "reduce":
        return lambda: comm.reduce(send, recv, root=0, algorithm=algo)
    if coll == "allgather":
        return lambda: comm.allgather(send, recv, algorithm=algo)
    if coll == "reduce_scatter":
        return lambda: comm.reduce_scatter(send, recv, algorithm=algo)
    return lambda: comm.alltoall(send, recv, algorithm=algo)


class Timer:
    """Medians over interleaved repetitions of the max over ranks of each
    rank's q-quantile time per call (q = 0.25 by default).  Every call is
    timed by itself: a low quantile is what a call costs while the ranks
    run, and is not moved by the calls during which another process held
    a core (shared machines: on the 2-vCPU VM at load 8 even the median
    8-byte call waited ~0.3 ms for the scheduler); with more ranks than
    cores the ranks' own context switches are in nearly every call, so in
    the quantile too."""

    def __init__(self, world, reps, budget_s, q=0.25):
        self.world, self.reps, self.budget, self.q = world, reps, budget_s, q
        self.heavy = False

    def settle(self):
        """After seconds of busy ranks, the scheduler lets the processes that
        waited run first: small calls timed right after big ones stalled for
        0.1-0.5 ms each on the shared VM.  A pause (every rank, then a
        barrier) before timing again."""
        if self.heavy:
            time.sleep(0.3)
            self.world.barrier()
        self.heavy = False

    def agree_max(self, values):
        a = np.array(values, dtype=np.float64)
        self.world.allreduce(a, op="max")
        return a

    def run(self, fns):
        """fns: {label: callable}; returns {label: median seconds per call}."""
        labels = list(fns)
        clock, barrier = time.perf_counter, self.world.barrier
        self.settle()
        probe = []
        for lab in labels:
            fn = fns[lab]
            fn()                           # warm-up (first touch, connections)
            ts = []
            for _ in range(3):
                t0 = clock()
                fn()
                ts.append(clock() - t0)
            probe.append(sorted(ts)[1])
        probe = self.agree_max(probe)
        iters = [int(min(1000, max(5, self.budget / max(t, 1e-7)))) for t in probe]
        local = np.zeros((self.reps, len(labels)))
        for r in range(self.reps):
            for j, lab in enumerate(labels):
                fn, k = fns[lab], iters[j]
                ts = [0.0] * k
                barrier()
                for i in range(k):
                    t0 = clock()
                    fn()
                    ts[i] = clock() - t0
                local[r, j] = float(np.quantile(ts, self.q))
        worst = self.agree_max(local.ravel()).reshape(local.shape)
        self.heavy = float(worst.max()) > 1e-3
        return {lab: float(np.median(worst[:, j])) for j, lab in enumerate(labels)}


def measure_gamma(timer, n):
    """Seconds per byte of reduce_local beyond a copy of the same bytes, every rank at once."""
    out = {}
    for dt, npdt in (("float32", np.float32), ("bfloat16", None)):
        if npdt is None:
            try:
                import torch
                a, b, o = (torch.ones(n // 2, dtype=torch.bfloat16) for _ in range(3))
            except Exception:
                continue
        else:
            a, b, o = (np.ones(n // 4, npdt) for _ in range(3))
        src, dst = np.ones(n, np.uint8), np.zeros(n, np.uint8)
        t = timer.run({"reduce": lambda: ringcomm.reduce_local(a, b, o),
                       "copy": lambda: np.copyto(dst, src)})
        out[dt] = (t["reduce"] / n, t["copy"] / n)
    return out


# --------------------------------------------------------------------------
# identity and the file
# --------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def default_path(size):
    env = os.environ.get("RINGCOMM_TUNE_FILE")
    if env and env != "none":
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ringcomm", f"tune-{size}.conf")


def write_file(path, header, values, comments=()):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write("# ringcomm tune file, written by python -m ringcomm.tune (key=value;\n"
                "# the library reads format, ranks, cpus, cpu_model, chunk_bytes and the\n"
                "# thresholds; the rest records how they were derived)\n")
        for k, v in list(header.items()) + list(values.items()):
            f.write(f"{k}={v}\n")
        for c in comments:
            f.write(f"# {c}\n")
    os.replace(tmp, path)


def fmt_size(n):
    for unit, s in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= s and n % s == 0:
            return f"{n // s} {unit}"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} B"


def fmt_t(t):
    return f"{t * 1e6:.1f} us" if t < 1e-3 else f"{t * 1e3:.2f} ms"


def parse_size(s):
    s = s.strip().upper().rstrip("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    return int(float(s[:-1] if mult > 1 else s) * mult)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m ringcomm.tune", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="a few seconds: small calibration sizes, 3 repetitions, validation "
                         "at 3 sizes (rough thresholds; for tests)")
    ap.add_argument("-o", "--output", help="tune file to write (default: where the library looks)")
    ap.add_argument("-C", "--collectives", default=",".join(SELECTION),
                    help="collectives to tune (default: all with thresholds)")
    ap.add_argument("-r", "--reps", type=int, help="repetitions per measurement (median)")
    ap.add_argument("--large", help="middle of the large calibration sizes (default 16M)")
    ap.add_argument("--sizes", help="validation sizes, e.g. 8,1K,64M (default 8 B .. 64 MiB x4)")
    ap.add_argument("--no-validate", action="store_true", help="skip the validation sweep")
    ap.add_argument("--validate-only", action="store_true",
                    help="measure nothing, write nothing: validate the thresholds the library "
                         "takes now (the tune file, or with RINGCOMM_TUNE_FILE=none the "
                         "built-in defaults)")
    ap.add_argument("-q", "--quantile", type=float, default=0.25,
                    help="per-call time statistic within a repetition (default 0.25; 0.5 = "
                         "median; the repetitions' median is taken of it)")
    ap.add_argument("--json", help="also write everything measured to this JSON file (rank 0)")
    args = ap.parse_args(argv)

    overridden = [v for v in ENV_OVERRIDES if os.environ.get(v)]
    for v in overridden:        # measure and validate what the file alone gives
        del os.environ[v]
    world = ringcomm.init()
    p, rank = world.size, world.rank
    say = print if rank == 0 else (lambda *a, **k: None)
    if p < 2:
        say("ringcomm.tune: run it under mpirun/torchrun with 2 or more ranks")
        world.close()
        return 2
    colls = [c.strip() for c in args.collectives.split(",") if c.strip()]
    for c in colls:
        if c not in SELECTION:
            raise SystemExit(f"--collectives: {c!r} is not one of {', '.join(SELECTION)}")
    quick = args.quick
    reps = args.reps or (3 if quick else 5)
    timer = Timer(world, reps, 0.0005 if quick else 0.005, args.quantile)
    C = world.chunk_bytes
    large = parse_size(args.large) if args.large else 16 << 20
    # calibration sizes: the smallest calls (alpha), then groups of larger ones (beta)
    if quick:
        groups = [[8, 32, 128], [4 << 10, 16 << 10, 64 << 10]]
    else:
        # a group around 1 MiB too: between the caches and memory an
        # algorithm's cost per byte is not the log-linear blend of 64 KiB and
        # 16 MiB (4 ranks: binomial all-reduce measured 2.2x ring at 512 KiB
        # where that blend had it ahead)
        groups = [[8, 32, 128], [16 << 10, 64 << 10, 256 << 10],
                  [large // 32, large // 16, large // 8], [large // 4, large, large * 4]]
    path = args.output or default_path(p)
    if args.sizes:
        vsizes = [parse_size(s) for s in args.sizes.split(",")]
    else:
        vsizes = [64, 4096, 256 << 10] if quick else [8 << (2 * i) for i in range(12)] + [64 << 20]
    t_start = time.time()
    load0 = os.getloadavg()
    say(f"ringcomm.tune: {p} ranks, chunk {fmt_size(C)}, {os.cpu_count()} CPUs ({cpu_model()}), "
        f"load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; "
        f"{reps} repetitions: median of max-over-ranks of the {args.quantile:g}-quantile "
        f"call")
    if load0[0] > os.cpu_count():
        say(f"  warning: the load average is above the {os.cpu_count()} CPUs: other processes "
            "share the cores, the numbers are noisy; rerun on a quiet machine")
    if overridden:
        say(f"  (ignoring {', '.join(overridden)} from the environment while tuning)")

    models, calib, thresholds, consts, values, header = {c: {} for c in colls}, {}, {}, {}, {}, {}
    if not args.validate_only:
        # ---- constants ----
        # warm-up: the first hundreds of ms of calls on a new communicator ran
        # slower on the shared VM (page faults, the scheduler's view of the ranks)
        t_end = time.perf_counter() + (0.2 if quick else 1.0)
        warm = np.zeros(1024, np.float32)
        while True:
            for a in ringcomm.algorithms("allreduce"):
                world.allreduce(warm, algorithm=a)
            done = np.array([time.perf_counter() > t_end], np.int32)
            world.allreduce(done, op="min")
            if done[0]:
                break
        alpha_hop = timer.run({"barrier": world.barrier})["barrier"] / _lg(p)
        gam = measure_gamma(timer, 64 << 10 if quick else 4 << 20)
        gamma = max(0.0, gam["float32"][0] - gam["float32"][1])
        say(f"\nconstants:\n  alpha_hop (barrier / ceil(log2 p)) {alpha_hop * 1e6:.2f} us")
        for dt, (r, cp) in gam.items():
            say(f"  {dt}: reduce_local {r * 1e9:.3f} ns/B, copy {cp * 1e9:.3f} ns/B "
                f"-> gamma {max(0.0, r - cp) * 1e9:.3f} ns/B")

        models, calib = {}, {}
        for coll in colls:
            maxs, default, mins = SELECTION[coll]
            algos = [a for a in maxs + [default] + mins if a in ringcomm.algorithms(coll)]
            fns, cgroups = {}, {}
            for a in algos:
                cgroups[a] = []
                for grp in groups:
                    ns = []
                    for n in grp:
                        n = call_bytes(coll, n, p)
                        if terms(coll, a, p, n, C) is None:
                            continue      # direct declines calls over a chunk
                        fns[(a, n)] = make_call(world, coll, n, a)
                        ns.append(n)
                    cgroups[a].append(ns)
                if not cgroups[a][-1]:
                    # direct: its large group is the largest calls it runs
                    top = call_bytes(coll, C if coll == "allreduce" else p * C, p)
                    below = max((n for g in cgroups[a][:-1] for n in g), default=0)
                    ns = [n for n in (top // 4, top // 2, top) if n > below]
                    for n in ns:
                        fns[(a, n)] = make_call(world, coll, n, a)
                    cgroups[a][-1] = ns
            t = {}
            for gi in range(len(groups)):     # a run per size group, small first
                t.update(timer.run({k: f for k, f in fns.items()
                                    if k[1] in cgroups[k[0]][gi]}))
            models[coll] = {}
            for a in algos:
                if not cgroups[a][0] or not any(cgroups[a][1:]):
                    continue
                m = AlgoModel(coll, a, p, C, gamma if coll in ("allreduce", "reduce",
                                                                "reduce_scatter") else 0.0)
                m.fit([[(n, t[(a, n)]) for n in grp] for grp in cgroups[a]])
                models[coll][a] = m
            calib[coll] = {f"{a}@{n}": v for (a, n), v in t.items()}
            say(f"  {coll}: " + "; ".join(
                f"{a} alpha {m.alpha * 1e6:.2f} us ({m.alpha / alpha_hop:.1f} hops), beta "
                + "/".join(f"{b * 1e9:.3f}" for _, b in m.points) + " ns/B"
                for a, m in models[coll].items()))

        # ---- thresholds ----
        grid = sorted({int(8 * 2 ** (i / 4)) // (4 * p) * (4 * p) or 4 * p for i in range(4 * 27 + 1)})
        thresholds, predicted = {}, {}
        say("\nthresholds (bytes of the call; the big buffer for block collectives):")
        for coll in colls:
            thr, chosen, winners, worst = derive(coll, models[coll], p, grid)
            thresholds.update(thr)
            predicted[coll] = (chosen, winners)
            runs, prev = [], None
            for n, a in zip(grid, chosen):
                if a != prev:
                    runs.append(f"{a} from {fmt_size(n)}")
                    prev = a
            say(f"  {coll}: " + ", ".join(f"{k}={v}" for k, v in thr.items())
                + f"  [model: {'; '.join(runs)}; predicted worst auto/best {worst:.2f}]")

        header = {
            "format": FORMAT, "ranks": p, "cpus": os.cpu_count(), "cpu_model": cpu_model(),
            "chunk_bytes": C, "host": socket.gethostname(), "kernel": platform.release(),
            "machine": platform.machine(), "date": datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"), "ringcomm_version": ringcomm.__version__,
            "reduce_isa": ringcomm.reduce_isa(),
            "mode": "quick" if quick else "full", "load_average": "%.2f/%.2f/%.2f" % load0,
        }
        consts = {"alpha_hop_us": f"{alpha_hop * 1e6:.3f}", "gamma_ns_per_byte": f"{gamma * 1e9:.4f}"}
        for dt, (r, cp) in gam.items():
            consts[f"reduce_local_{dt}_ns_per_byte"] = f"{r * 1e9:.4f}"
            consts[f"copy_ns_per_byte_{dt}"] = f"{cp * 1e9:.4f}"
        for coll, ms in models.items():
            for a, m in ms.items():
                consts[f"model.{coll}.{a}.alpha_us"] = f"{m.alpha * 1e6:.3f}"
                consts[f"model.{coll}.{a}.beta_ns_per_byte"] = ",".join(
                    f"{n}:{b * 1e9:.4f}" for n, b in m.points)
        values = dict(consts)
        values.update({k: thresholds[k] for k in sorted(thresholds)})
        if rank == 0:
            write_file(path, header, values)
        world.barrier()
        say(f"\nwrote {path}")

    # ---- validation ----
    report = {"header": header, "constants": consts, "thresholds": thresholds,
              "calibration": calib, "validation": {}}
    worst_all = []
    if not args.no_validate:
        if not args.validate_only:
            os.environ["RINGCOMM_TUNE_FILE"] = os.path.abspath(path)
        # one communicator from here on: it runs the fixed algorithms, auto and
        # the timer's barriers (a second, idle one would share the cores)
        auto = world.split(0)
        world.close()
        world = timer.world = auto
        got = auto.thresholds(origins=True)
        bad = {k: v for k, v in thresholds.items() if got.get(k) != (v, "file")}
        if bad and not args.validate_only:
            raise SystemExit(f"ringcomm.tune: the library did not take {path}: "
                             f"{ {k: got.get(k) for k in bad} } ({auto.tune_source})")
        say(f"\nvalidation ({auto.tune_source}): auto vs every fixed algorithm, "
            f"{reps} interleaved repetitions")
        for coll in colls:
            maxs, default, mins = SELECTION[coll]
            algos = [a for a in maxs + [default] + mins if a in ringcomm.algorithms(coll)]
            say(f"\n  {coll} (p={p})")
            say(f"  {'size':>9} {'auto picks':>17} {'measured best':>17} {'best':>10} "
                f"{'pick':>10} {'auto':>10} {'pick/best':>9} {'auto/best':>9}  model error")
            rows = []
            for n0 in vsizes:
                n = call_bytes(coll, n0, p)
                fns = {a: make_call(auto, coll, n, a) for a in algos
                       if terms(coll, a, p, n, C) is not None}
                fns["auto"] = make_call(auto, coll, n, "auto")
                t = timer.run(fns)
                cnt = block_count(coll, n, p)[0]
                pick = auto.select_algorithm(cnt, "float32", coll)
                fixed = {a: v for a, v in t.items() if a != "auto"}
                best = min(fixed, key=fixed.get)
                ratio = t["auto"] / fixed[best]
                # the fixed column of the algorithm auto picks: its ratio to the
                # best is the selection's cost, without auto's own timing noise
                regret = fixed.get(pick, t["auto"]) / fixed[best]
                pred = models[coll][pick].time(n) if pick in models[coll] else math.nan
                if not fixed.get(pick):
                    pred = math.nan
                err = pred / fixed.get(pick, math.nan) - 1
                rows.append({"bytes": n, "auto_picks": pick, "best": best, "times": t,
                             "ratio": ratio, "regret": regret, "model_time_of_pick": pred})
                flag = "  <-- over 10%" if min(ratio, regret) > 1.10 else ""
                say(f"  {fmt_size(n):>9} {pick:>17} {best:>17} {fmt_t(fixed[best]):>10} "
                    f"{fmt_t(fixed.get(pick, math.nan)):>10} {fmt_t(t['auto']):>10} "
                    f"{regret:>9.2f} {ratio:>9.2f}  {err:+.0%}{flag}")
            w = max(rows, key=lambda r: r["ratio"])
            wr = max(rows, key=lambda r: r["regret"])
            worst_all.append((coll, w["ratio"], w["bytes"], wr["regret"], wr["bytes"]))
            report["validation"][coll] = rows
            say(f"  worst auto/best: {w['ratio']:.2f} at {fmt_size(w['bytes'])}; worst "
                f"pick/best: {wr['regret']:.2f} at {fmt_size(wr['bytes'])}")
        load1 = os.getloadavg()
        comments = [f"validation ({'quick' if quick else 'full'}, load average "
                    f"{load0[0]:.2f} -> {load1[0]:.2f}): worst auto/best per collective: "
                    + ", ".join(f"{c} {r:.2f} at {fmt_size(n)} (pick/best {g:.2f} at "
                                f"{fmt_size(m)})" for c, r, n, g, m in worst_all)]
        values.update({f"validated_worst_ratio.{c}": f"{r:.3f}" for c, r, *_ in worst_all})
        values.update({f"validated_worst_pick_ratio.{c}": f"{g:.3f}"
                       for c, _, _, g, _ in worst_all})
        if rank == 0 and not args.validate_only:
            write_file(path, header, values, comments)
        say("\n" + comments[0])
    if rank == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    say(f"ringcomm.tune: done in {time.time() - t_start:.0f} s"
        + ("" if args.validate_only else f"; {path}"))
    world.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
