"""nccl-tests style sweep of ringcomm's collectives, with peers side by side.

Run it under the launcher, on every rank::

    mpirun -n 4 python -m ringcomm.bench                 # all-reduce, 8 B .. 64 MiB, x4
    mpirun -n 4 python -m ringcomm.bench -a all          # every algorithm + auto
    mpirun -n 2 python -m ringcomm.bench -b 4 -e 256M -f 16 -d bfloat16 --peers mpi,gloo

Definitions (nccl-tests, DESIGN.md section 6):

- ``algbw = size / time`` with GB = 1e9 B, where ``size`` is the size column
  (for all-reduce: the bytes of one rank's buffer);
- ``busbw = algbw * factor(p)``, the factor being the collective's (all-reduce:
  ``2(p-1)/p``); it is what each rank's link carries, comparable across p;
- ``time`` of one repetition: barrier (MPI), then ``iters`` back-to-back
  calls, each rank's average per call, then the MAX over ranks (the slowest
  rank sets the pace).  Every size runs ``--repeats`` repetitions, interleaved
  over the columns (so noise on a shared machine hits every column alike),
  and the MEDIAN repetition is reported;
- ``#wrong``: before timing each column runs once on integer-valued inputs
  whose result is exact in the data type, into an output filled with a
  sentinel; the elements that differ from the closed-form result are counted
  and summed over ranks (N/A with ``-c 0``);
- the ``best/<peer>`` column is ringcomm's best busbw at that size (over the
  algorithms that ran) divided by the peer's: > 1 means ringcomm is faster.

Peers run in the same processes on the same buffers:

- ``mpi``: mpi4py's ``comm.Allreduce(send, recv, op)`` (out of place, like
  ringcomm's columns here);
- ``gloo``: ``torch.distributed.all_reduce`` on the gloo backend, initialised
  with a FileStore in a temporary directory shared through mpi4py.  gloo's
  all-reduce is in place only, so its input is copied into the output buffer
  once before timing and the timed calls reduce that buffer in place.

Combinations a peer lacks (MPI has no bfloat16 nor "avg", gloo no "avg") are
reported as N/A.  Adding a collective is one more row in ``COLLECTIVES``: its
size/count rule, busbw factor, buffers, closed-form check and one runner per
column kind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

# --------------------------------------------------------------------------
# data types and ops
# --------------------------------------------------------------------------

#: name -> (numpy dtype or None for torch-only, itemsize, is_float, largest
#: integer that is exactly representable (and, for ints, does not overflow))
DTYPES = {
    "float32": (np.float32, 4, True, 2 ** 24),
    "float64": (np.float64, 8, True, 2 ** 53),
    "float16": (np.float16, 2, True, 2 ** 11),
    "bfloat16": (None, 2, True, 2 ** 8),
    "int8": (np.int8, 1, False, 2 ** 7 - 1),
    "uint8": (np.uint8, 1, False, 2 ** 8 - 1),
    "int32": (np.int32, 4, False, 2 ** 31 - 1),
    "int64": (np.int64, 8, False, 2 ** 53),  # compared through float64-safe range
}
DTYPE_ALIASES = {
    "float": "float32", "f32": "float32", "fp32": "float32",
    "double": "float64", "f64": "float64", "fp64": "float64",
    "half": "float16", "f16": "float16", "fp16": "float16",
    "bf16": "bfloat16",
    "int": "int32", "i32": "int32", "i64": "int64", "long": "int64",
    "char": "int8", "i8": "int8", "u8": "uint8", "uchar": "uint8",
}
FLOAT_OPS = ("sum", "prod", "min", "max", "avg")
INT_OPS = ("sum", "prod", "min", "max", "band", "bor", "bxor")
ALL_OPS = ("sum", "prod", "min", "max", "avg", "band", "bor", "bxor")

# Odd modulus of the input pattern: keeps values small (exact sums) and not
# aligned with power-of-two chunk boundaries.
PATTERN_PERIOD = 97

MIB = 1 << 20
#: with default --iters, one repetition of one column aims at most at this long
REP_BUDGET_S = 0.05


class NotAvailable(Exception):
    """This column cannot run this combination (printed as N/A)."""


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the venv
        raise NotAvailable("torch is not installed") from e
    return torch


# --------------------------------------------------------------------------
# buffers: numpy arrays, or torch tensors for bfloat16
# --------------------------------------------------------------------------

def alloc(count: int, dtype: str):
    npdt = DTYPES[dtype][0]
    if npdt is None:
        torch = _torch()
        return torch.empty(count, dtype=getattr(torch, dtype))
    return np.empty(count, dtype=npdt)


def store(buf, values: np.ndarray, start: int = 0) -> None:
    """buf[start:start+len(values)] = values (int64/float64, exactly representable)."""
    stop = start + len(values)
    if isinstance(buf, np.ndarray):
        np.copyto(buf[start:stop], values, casting="unsafe")
    else:
        buf[start:stop].copy_(_torch().from_numpy(values.astype(np.float32)))


def count_wrong(got, expected) -> int:
    """Elements where got != expected (same type and length; NaN counts as wrong)."""
    if isinstance(got, np.ndarray):
        return int(np.count_nonzero(got != expected))
    return int((got != expected).sum())


#: inputs and expected results are generated this many elements at a time
BLOCK_ELEMS = 1 << 20


def as_numpy(buf) -> np.ndarray:
    if isinstance(buf, np.ndarray):
        return buf
    raise NotAvailable("MPI has no bfloat16")


def as_torch(buf):
    torch = _torch()
    if isinstance(buf, np.ndarray):
        return torch.from_numpy(buf)
    return buf


def copy_into(dst, src) -> None:
    if isinstance(dst, np.ndarray):
        np.copyto(dst, src)
    else:
        dst.copy_(src)


# --------------------------------------------------------------------------
# integer-valued inputs with a closed-form result
# --------------------------------------------------------------------------

def pattern_period(op: str, p: int, dtype: str) -> tuple[int, bool]:
    """Period m of the input pattern and whether every result is exact.

    sum:  x_r[i] = i%m + (i+r)%p + 1  ->  p*(i%m) + p(p+1)/2  <= limit
    min/max use the same inputs and stay below it.
    """
    limit = DTYPES[dtype][3]
    if op in ("sum", "avg"):
        m = (limit - p * (p + 1) // 2) // p + 1
    elif op in ("min", "max"):
        m = limit - p + 1
    else:
        m = PATTERN_PERIOD
    exact = m >= 1
    if op == "prod":
        exact = 2 <= limit
    if op in ("band", "bor", "bxor"):
        exact = p + 1 <= DTYPES[dtype][1] * 8 - (dtype in ("int8", "int32", "int64"))
    return max(1, min(PATTERN_PERIOD, m)), exact


def make_input(start: int, stop: int, rank: int, p: int, op: str, dtype: str) -> np.ndarray:
    """Elements [start, stop) of rank `rank`'s input as int64 (all exact in `dtype`)."""
    i = np.arange(start, stop, dtype=np.int64)
    m, _ = pattern_period(op, p, dtype)
    signed = dtype not in ("uint8",)
    if op == "prod":
        # exactly one rank contributes (1 + i%2), exactly one the sign
        x = np.where((i + rank) % p == 0, 1 + i % 2, 1)
        if signed:
            x = np.where(((i + 1) % p == rank) & (i % 3 == 0), -x, x)
        return x
    if op in ("band", "bor", "bxor"):
        # a bit that every rank sets on odd i, plus one bit per rank
        return (i % 2) * (1 << p) | (1 << ((i + rank) % p))
    return i % m + (i + rank) % p + 1


def closed_form(start: int, stop: int, p: int, op: str, dtype: str) -> np.ndarray:
    """Elements [start, stop) of the all-reduce of make_input over ranks 0..p-1."""
    is_float = DTYPES[dtype][2]
    i = np.arange(start, stop, dtype=np.int64)
    m, _ = pattern_period(op, p, dtype)
    if op == "sum":
        out = p * (i % m) + p * (p + 1) // 2
    elif op == "avg":
        return (i % m).astype(np.float64) + (p + 1) / 2.0
    elif op == "max":
        out = i % m + p
    elif op == "min":
        out = i % m + 1
    elif op == "prod":
        out = 1 + i % 2
        if dtype != "uint8":
            out = np.where(i % 3 == 0, -out, out)
    elif op == "bor":
        out = (i % 2) * (1 << p) | ((1 << p) - 1)
    elif op == "band":
        out = (i % 2) * (1 << p) | (((1 << p) - 1) if p == 1 else 0)
    elif op == "bxor":
        out = (i % 2) * (1 << p) * (p % 2) | ((1 << p) - 1)
    else:  # pragma: no cover
        raise ValueError(op)
    return out.astype(np.float64) if is_float else out


# --------------------------------------------------------------------------
# the table of collectives
# --------------------------------------------------------------------------

MPI_OPS = {"sum": "SUM", "prod": "PROD", "min": "MIN", "max": "MAX",
           "band": "BAND", "bor": "BOR", "bxor": "BXOR"}
TORCH_OPS = {"sum": "SUM", "prod": "PRODUCT", "min": "MIN", "max": "MAX",
             "band": "BAND", "bor": "BOR", "bxor": "BXOR"}


@dataclass
class Bufs:
    send: object
    recv: object
    count: int          # elements, as the count column shows it


@dataclass
class Collective:
    name: str
    busbw_factor: Callable[[int], float]
    #: (size in bytes, itemsize, p) -> (count column, send count, recv count)
    counts: Callable[[int, int, int], tuple[int, int, int]]
    #: (count column, itemsize, p) -> bytes shown in the size column
    size_of: Callable[[int, int, int], int]
    #: fill send for this rank, return the expected recv, same type as recv
    #: (None: not checkable)
    fill: Callable[[Bufs, int, int, str, str], object]
    #: column kind -> (ctx, bufs, op, algorithm) -> zero-argument callable
    runners: dict = field(default_factory=dict)
    #: column kinds that reduce in place in recv (input copied in first)
    in_place: tuple = ()
    ops: tuple = ALL_OPS


def _allreduce_counts(size, itemsize, p):
    n = size // itemsize
    return n, n, n


def _allreduce_fill(bufs, rank, p, op, dtype):
    expected = alloc(bufs.count, dtype)
    for a in range(0, bufs.count, BLOCK_ELEMS):
        b = min(bufs.count, a + BLOCK_ELEMS)
        store(bufs.send, make_input(a, b, rank, p, op, dtype), a)
        store(expected, closed_form(a, b, p, op, dtype), a)
    return expected


def _allreduce_ringcomm(ctx, bufs, op, algorithm):
    comm, send, recv = ctx.rc, bufs.send, bufs.recv
    return lambda: comm.allreduce(send, out=recv, op=op, algorithm=algorithm)


def _allreduce_mpi(ctx, bufs, op, algorithm):
    if op not in MPI_OPS:
        raise NotAvailable(f"MPI has no op {op!r}")
    from mpi4py import MPI
    send, recv, mop = as_numpy(bufs.send), as_numpy(bufs.recv), getattr(MPI, MPI_OPS[op])
    comm = ctx.mpi
    return lambda: comm.Allreduce(send, recv, op=mop)


def _allreduce_gloo(ctx, bufs, op, algorithm):
    dist = ctx.gloo()
    if op not in TORCH_OPS:
        raise NotAvailable(f"gloo has no op {op!r}")
    t, top = as_torch(bufs.recv), getattr(dist.ReduceOp, TORCH_OPS[op])
    return lambda: dist.all_reduce(t, op=top)


COLLECTIVES = {
    "allreduce": Collective(
        name="allreduce",
        busbw_factor=lambda p: 2.0 * (p - 1) / p,
        counts=_allreduce_counts,
        size_of=lambda count, itemsize, p: count * itemsize,
        fill=_allreduce_fill,
        runners={"ringcomm": _allreduce_ringcomm, "mpi": _allreduce_mpi,
                 "gloo": _allreduce_gloo},
        in_place=("gloo",),
    ),
}

PEERS = ("mpi", "gloo")


# --------------------------------------------------------------------------
# runtime context
# --------------------------------------------------------------------------

class Context:
    def __init__(self, mpi_comm, rc_comm):
        self.mpi = mpi_comm
        self.rc = rc_comm
        self.rank = mpi_comm.Get_rank()
        self.size = mpi_comm.Get_size()
        self._gloo = None
        self._gloo_dir = None
        self._gloo_error = None

    def gloo(self):
        """torch.distributed, initialised once with gloo + a shared FileStore."""
        if self._gloo_error is not None:
            raise NotAvailable(self._gloo_error)
        if self._gloo is not None:
            return self._gloo
        try:
            torch = _torch()
            import torch.distributed as dist
            if not dist.is_available() or not dist.is_gloo_available():
                raise NotAvailable("torch.distributed has no gloo")
        except NotAvailable as e:
            self._gloo_error = str(e)
            raise
        path = tempfile.mkdtemp(prefix="ringcomm-bench-") if self.rank == 0 else None
        path = self.mpi.bcast(path, root=0)
        self._gloo_dir = path
        store = dist.FileStore(os.path.join(path, "store"), self.size)
        dist.init_process_group("gloo", store=store, rank=self.rank, world_size=self.size)
        torch.set_num_threads(1)
        self._gloo = dist
        return dist

    def close(self):
        if self._gloo is not None:
            self.mpi.Barrier()
            self._gloo.destroy_process_group()
            self._gloo = None
        self.mpi.Barrier()
        if self.rank == 0 and self._gloo_dir:
            shutil.rmtree(self._gloo_dir, ignore_errors=True)


# --------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """'8', '64K', '64M', '1G', '256MiB', '4KB' -> bytes (binary multiples, as nccl-tests)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMG]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: expected e.g. 8, 64K, 64M, 1G")
    return int(float(m.group(1)) * _SUFFIX[m.group(2)])


def format_size(n: int) -> str:
    for unit, mult in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= mult and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m ringcomm.bench",
        description="nccl-tests style collective sweep; run under mpirun on every rank.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Definitions", 1)[1].join(("Definitions", "")) if __doc__ else None,
    )
    ap.add_argument("-C", "--collective", default="allreduce",
                    help="collective(s), comma list or 'all' (%s)" % ", ".join(COLLECTIVES))
    ap.add_argument("-b", "--minbytes", type=parse_size, default=8, help="smallest size (default 8)")
    ap.add_argument("-e", "--maxbytes", type=parse_size, default=64 * MIB,
                    help="largest size (default 64M; K/M/G suffixes)")
    ap.add_argument("-f", "--stepfactor", type=int, default=4, help="size multiplier (default 4)")
    ap.add_argument("-o", "--op", default="sum", help="sum, prod, min, max, avg, band, bor, bxor; comma list or 'all'")
    ap.add_argument("-d", "--dtype", default="float32",
                    help="float32, float64, float16, bfloat16 (torch), int8, uint8, int32, int64; comma list or 'all'")
    ap.add_argument("-n", "--iters", type=int, default=None,
                    help="timed calls per repetition (default: scaled by size, 1000 at 8 B .. 2 at >= 8 MiB,"
                         " fewer if a column's calls would take more than %g ms)" % (REP_BUDGET_S * 1e3))
    ap.add_argument("-w", "--warmup", type=int, default=None,
                    help="untimed calls per column and size (default: scaled by size, 50 .. 1)")
    ap.add_argument("-r", "--repeats", type=int, default=5,
                    help="repetitions per size; the median is reported (default 5)")
    ap.add_argument("-c", "--check", type=int, choices=(0, 1), default=1,
                    help="1: count wrong elements against the closed-form result (default 1)")
    ap.add_argument("-a", "--algorithm", default="auto",
                    help="ringcomm algorithm(s), comma list; 'all' = every algorithm plus auto (default auto)")
    ap.add_argument("--peers", default="mpi",
                    help="peers in the same run, comma list of mpi, gloo, or 'none' (default mpi)")
    ap.add_argument("--json", metavar="FILE", default=None, help="also write the results as JSON (rank 0)")
    return ap


def default_iters(size: int) -> int:
    # ~16 MiB per rank per repetition, 2 .. 1000 calls
    return max(2, min(1000, (16 * MIB) // max(size, 1)))


def default_warmup(size: int) -> int:
    return max(1, min(50, default_iters(size) // 10))


def _expand(arg: str, known, aliases=None, what="value") -> list[str]:
    names = list(known) if arg.strip().lower() == "all" else _list(arg.lower())
    out = []
    for n in names:
        n = (aliases or {}).get(n, n)
        if n not in known:
            raise SystemExit(f"ringcomm.bench: unknown {what} {n!r} (expected one of {', '.join(known)})")
        if n not in out:
            out.append(n)
    return out


# --------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------

@dataclass
class Column:
    label: str          # "ring", "auto", "mpi", ...
    kind: str           # "ringcomm" or a peer name
    algorithm: str      # ringcomm algorithm ("" for peers)
    fn: Optional[Callable] = None
    reset: Optional[Callable] = None
    note: str = ""
    wrong: Optional[int] = None
    iters: int = 0
    times: list = field(default_factory=list)   # per repetition, max over ranks, seconds

    @property
    def ok(self):
        return self.fn is not None

    @property
    def is_ringcomm(self):
        return self.kind == "ringcomm"


def _sentinel(bufs: Bufs, expected, op: str, is_float: bool):
    """Fill recv with values the correct result never has."""
    if expected is not None and op in ("band", "bor", "bxor"):
        np.bitwise_xor(expected, 1, out=bufs.recv)     # integer types: numpy buffers
    elif isinstance(bufs.recv, np.ndarray):
        bufs.recv.fill(0)     # every arithmetic result here is >= 1 or != 0
    else:
        bufs.recv.zero_()


def measure_size(ctx: Context, coll: Collective, columns_spec, size: int, dtype: str, op: str,
                 args) -> tuple[int, list[Column]]:
    from mpi4py import MPI
    p, rank = ctx.size, ctx.rank
    itemsize, is_float = DTYPES[dtype][1], DTYPES[dtype][2]
    count, nsend, nrecv = coll.counts(size, itemsize, p)
    bufs = Bufs(send=alloc(nsend, dtype), recv=alloc(nrecv, dtype), count=count)
    expected = coll.fill(bufs, rank, p, op, dtype)
    iters = args.iters if args.iters is not None else default_iters(size)
    warmup = args.warmup if args.warmup is not None else default_warmup(size)

    cols = []
    for label, kind, algorithm in columns_spec:
        col = Column(label, kind, algorithm)
        local_ok, note = 1, ""
        try:
            runner = coll.runners.get(kind)
            if runner is None:
                raise NotAvailable(f"no {kind} runner for {coll.name}")
            col.fn = runner(ctx, bufs, op, algorithm)
            if kind in coll.in_place:
                col.reset = lambda: copy_into(bufs.recv, bufs.send)
            else:
                col.reset = lambda: _sentinel(bufs, expected, op, is_float)
            # probe call = check call: all ranks must agree that it worked
            col.reset()
            col.fn()
        except NotAvailable as e:
            local_ok, note = 0, str(e)
        except Exception as e:  # library refused the combination, e.g. avg on ints
            local_ok, note = 0, f"{type(e).__name__}: {e}"
        all_ok = ctx.mpi.allreduce(local_ok, op=MPI.MIN)
        if not all_ok:
            notes = [n for n in ctx.mpi.allgather(note) if n]
            col.fn, col.note = None, (notes[0] if notes else "failed on another rank")
            cols.append(col)
            continue
        if args.check and expected is not None:
            local_wrong = count_wrong(bufs.recv, expected)
            col.wrong = ctx.mpi.allreduce(local_wrong, op=MPI.SUM)
        if kind in coll.in_place:
            col.reset()
        t0 = time.perf_counter()
        for _ in range(warmup):
            col.fn()
        t_call = (time.perf_counter() - t0) / max(warmup, 1)
        col.iters = iters
        if args.iters is None and warmup > 0:
            # default iteration counts also respect a time budget per repetition,
            # so slow columns (gloo: ~1 ms per small call) keep the sweep short;
            # every rank must make the same number of calls: agree on the max
            t_call = ctx.mpi.allreduce(t_call, op=MPI.MAX)
            col.iters = max(1, min(iters, int(REP_BUDGET_S / max(t_call, 1e-9))))
        cols.append(col)

    # interleaved repetitions; every rank records its own average per call
    live = [c for c in cols if c.ok]
    local = np.zeros((args.repeats, len(live)), dtype=np.float64)
    barrier, clock = ctx.mpi.Barrier, time.perf_counter
    for r in range(args.repeats):
        for j, col in enumerate(live):
            fn, n = col.fn, col.iters
            barrier()
            t0 = clock()
            for _ in range(n):
                fn()
            local[r, j] = (clock() - t0) / n
    worst = np.empty_like(local)
    ctx.mpi.Allreduce(local, worst, op=MPI.MAX)
    for j, col in enumerate(live):
        col.times = worst[:, j].tolist()
    return count, cols


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------

BLOCK = 32   # " %8s %7s %7s %6s"


def _fmt_time(t_us: float) -> str:
    return f"{t_us:8.2f}" if t_us < 1e5 else f"{t_us:8.0f}"


def _loadavg() -> str:
    try:
        return "%.2f" % os.getloadavg()[0]     # a busy machine explains noisy numbers
    except OSError:  # pragma: no cover
        return "?"


def header_lines(ctx, args, argv, colls, columns_spec, peers) -> list[str]:
    import ringcomm
    from mpi4py import MPI
    version = getattr(ringcomm, "__version__", "unknown")
    isa = "unknown"
    core = getattr(ringcomm, "_core", None)
    if core is not None and hasattr(core, "reduce_isa"):
        try:
            isa = core.reduce_isa()
        except Exception as e:  # pragma: no cover
            isa = f"? ({e})"
    mpi_lib = MPI.Get_library_version().strip().splitlines()[0]
    it = str(args.iters) if args.iters is not None else \
        f"scaled by size (1000 .. 2, <= {REP_BUDGET_S * 1e3:g} ms per repetition)"
    wu = str(args.warmup) if args.warmup is not None else "scaled by size (50 .. 1)"
    lines = [
        f"# ringcomm.bench: {', '.join(c.name for c in colls)}",
        f"# ringcomm {version}  ISA {isa}  ranks {ctx.size}  host {platform.node()} ({os.cpu_count()} cpus,"
        f" load average {_loadavg()})",
        f"# command: python -m ringcomm.bench {shlex.join(argv)}".rstrip(),
        f"# sizes {format_size(args.minbytes)} .. {format_size(args.maxbytes)} x{args.stepfactor}"
        f"  iters {it}  warmup {wu}  repeats {args.repeats} (median of max-over-ranks)  check {args.check}",
        f"# ringcomm columns: {', '.join(l for l, k, _ in columns_spec if k == 'ringcomm')}"
        f"   peers: {', '.join(peers) if peers else 'none'}   (mpi: {mpi_lib})",
        "# GB/s = 1e9 B/s; busbw = algbw * factor(p); best/<peer> = ringcomm's best busbw / the peer's",
    ]
    if "gloo" in peers:
        lines.append("# gloo all_reduce runs in place (its input copied into the output once before timing)")
    return lines


def _ratio_width(peer: str) -> int:
    return max(9, len(peer) + 6)


def table_header(columns_spec, peers) -> list[str]:
    fixed = f"{'':>12s} {'':>12s} {'':>8s} {'':>6s}"
    l1 = "#" + fixed[1:]
    l2 = f"#{'size':>11s} {'count':>12s} {'type':>8s} {'redop':>6s}"
    l3 = f"#{'(B)':>11s} {'(elements)':>12s} {'':>8s} {'':>6s}"
    for label, _, _ in columns_spec:
        l1 += " " + f"{label:^{BLOCK - 1}}"
        l2 += f" {'time':>8s} {'algbw':>7s} {'busbw':>7s} {'#wrong':>6s}"
        l3 += f" {'(us)':>8s} {'(GB/s)':>7s} {'(GB/s)':>7s} {'':>6s}"
    for peer in peers:
        w = _ratio_width(peer)
        l1 += f" {'ratio':>{w}s}"
        l2 += f" {'best/' + peer:>{w}s}"
        l3 += f" {'(busbw)':>{w}s}"
    return [l1.rstrip(), l2, l3.rstrip()]


def row_line(size, count, dtype, op, cols, factor, peers) -> tuple[str, dict]:
    line = f"{size:>12d} {count:>12d} {dtype:>8s} {op:>6s}"
    stats = {}
    for col in cols:
        if not col.ok:
            line += f" {'N/A':>8s} {'N/A':>7s} {'N/A':>7s} {'N/A':>6s}"
            continue
        t = statistics.median(col.times)
        algbw = size / t / 1e9 if t > 0 else 0.0
        busbw = algbw * factor
        stats[col.label] = (t, algbw, busbw)
        wrong = "N/A" if col.wrong is None else str(col.wrong)
        line += f" {_fmt_time(t * 1e6)} {algbw:7.2f} {busbw:7.2f} {wrong:>6s}"
    rc_times = [stats[c.label][0] for c in cols if c.is_ringcomm and c.label in stats]
    best = min(rc_times) if rc_times else None
    for peer in peers:
        w = _ratio_width(peer)
        if best and peer in stats and stats[peer][0] > 0:
            # busbw ratio == time ratio (same size, same factor); also fine at p == 1
            line += f" {stats[peer][0] / best:>{w}.2f}"
        else:
            line += f" {'N/A':>{w}s}"
    return line, stats


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.stepfactor < 2:
        raise SystemExit("ringcomm.bench: -f/--stepfactor must be >= 2")
    if args.repeats < 1 or (args.iters is not None and args.iters < 1) or (args.warmup is not None and args.warmup < 0):
        raise SystemExit("ringcomm.bench: --repeats and --iters must be >= 1, --warmup >= 0")
    if args.maxbytes < args.minbytes:
        raise SystemExit("ringcomm.bench: -e/--maxbytes is smaller than -b/--minbytes")

    try:
        from mpi4py import MPI
    except ImportError:
        raise SystemExit("ringcomm.bench needs mpi4py (it times and reduces timings through MPI)")
    import ringcomm

    colls = [COLLECTIVES[n] for n in _expand(args.collective, COLLECTIVES, what="collective")]
    dtypes = _expand(args.dtype, DTYPES, DTYPE_ALIASES, what="dtype")
    ops = _expand(args.op, ALL_OPS, what="op")
    peers = [] if args.peers.strip().lower() in ("none", "") else _expand(args.peers, PEERS, what="peer")
    if args.algorithm.strip().lower() == "all":
        try:
            algos = list(ringcomm.algorithms())
        except AttributeError:
            algos = ["ring", "tree"]
        algos = [a for a in algos if a != "auto"] + ["auto"]
    else:
        algos = _list(args.algorithm)
    columns_spec = [(a, "ringcomm", a) for a in algos] + [(p, p, "") for p in peers]

    world = MPI.COMM_WORLD
    if hasattr(ringcomm, "Communicator") and hasattr(ringcomm.Communicator, "from_mpi"):
        rc = ringcomm.Communicator.from_mpi(world)
    else:
        rc = ringcomm.init()
    ctx = Context(world, rc)
    if rc.size != ctx.size or rc.rank != ctx.rank:
        raise SystemExit(f"ringcomm.bench: ringcomm says rank {rc.rank}/{rc.size}, MPI {ctx.rank}/{ctx.size}")
    root = ctx.rank == 0

    def out(line=""):
        if root:
            print(line, flush=True)

    sizes = []
    s = args.minbytes
    while s <= args.maxbytes:
        sizes.append(s)
        s = s * args.stepfactor if s > 0 else 1

    for line in header_lines(ctx, args, argv, colls, columns_spec, peers):
        out(line)
    if "gloo" in peers:
        try:
            ctx.gloo()
        except NotAvailable as e:
            out(f"# note: gloo skipped: {e}")
            peers = [p for p in peers if p != "gloo"]
            columns_spec = [c for c in columns_spec if c[1] != "gloo"]
    t_start = time.perf_counter()

    results, notes = [], {}
    total_wrong, inexact = 0, set()
    busbw_sum = {c[0]: [] for c in columns_spec}
    best_sum, ratio_logs = [], {p: [] for p in peers}
    try:
        for coll in colls:
            factor = coll.busbw_factor(ctx.size)
            for dtype in dtypes:
                is_float = DTYPES[dtype][2]
                for op in ops:
                    if op == "avg" and not is_float or op in ("band", "bor", "bxor") and is_float:
                        if len(dtypes) == 1 or len(ops) == 1:
                            out(f"\n# skipped: op {op} is not defined for {dtype}")
                        continue
                    if op not in coll.ops:
                        continue
                    if not pattern_period(op, ctx.size, dtype)[1]:
                        inexact.add(f"{dtype}/{op}")
                    out()
                    out(f"# {coll.name}  {dtype}  {op}  ranks {ctx.size}  busbw factor {factor:.4g}")
                    for line in table_header(columns_spec, peers):
                        out(line)
                    for size in sizes:
                        try:
                            count, cols = measure_size(ctx, coll, columns_spec, size, dtype, op, args)
                        except NotAvailable as e:
                            out(f"# {dtype}: {e}")
                            break
                        # like nccl-tests: the size column is what the counts move
                        size = coll.size_of(count, DTYPES[dtype][1], ctx.size)
                        line, stats = row_line(size, count, dtype, op, cols, factor, peers)
                        out(line)
                        rc_best = None
                        for col in cols:
                            if col.note:
                                notes.setdefault(f"{col.label}: {col.note}", None)
                            if col.wrong:
                                total_wrong += col.wrong
                            if col.label in stats:
                                t, algbw, busbw = stats[col.label]
                                busbw_sum[col.label].append(busbw)
                                if col.is_ringcomm:
                                    rc_best = max(rc_best or 0.0, busbw)
                            results.append({
                                "collective": coll.name, "size": size, "count": count, "dtype": dtype,
                                "op": op, "column": col.label, "kind": col.kind,
                                "algorithm": col.algorithm or None, "ok": col.ok,
                                "note": col.note or None,
                                "time_us": stats[col.label][0] * 1e6 if col.label in stats else None,
                                "algbw_GBps": stats[col.label][1] if col.label in stats else None,
                                "busbw_GBps": stats[col.label][2] if col.label in stats else None,
                                "wrong": col.wrong, "rep_times_us": [t * 1e6 for t in col.times],
                                "iters": col.iters,
                            })
                        if rc_best is not None:
                            best_sum.append(rc_best)
                        rc_times = [stats[c.label][0] for c in cols if c.is_ringcomm and c.label in stats]
                        for peer in peers:
                            if rc_times and peer in stats and stats[peer][0] > 0:
                                ratio_logs[peer].append(math.log(stats[peer][0] / min(rc_times)))
    finally:
        ctx.close()

    elapsed = time.perf_counter() - t_start
    out()
    for n in notes:
        out(f"# N/A  {n}")
    if inexact:
        out(f"# note: results not exactly representable at {ctx.size} ranks for "
            f"{', '.join(sorted(inexact))}; #wrong may count rounding")
    out(f"# Out of bounds values : {total_wrong} {'OK' if total_wrong == 0 else 'FAILED'}")
    avg_best = sum(best_sum) / len(best_sum) if best_sum else 0.0
    out(f"# Avg bus bandwidth    : {avg_best:.4f}   (ringcomm, best algorithm per size)")
    per = "  ".join(f"{k} {sum(v) / len(v):.4f}" for k, v in busbw_sum.items() if v)
    if per:
        out(f"#   by column (GB/s)   : {per}")
    for peer, logs in ratio_logs.items():
        if logs:
            out(f"#   best/{peer} busbw  : geomean {math.exp(sum(logs) / len(logs)):.2f}x"
                f"  (min {math.exp(min(logs)):.2f}x, max {math.exp(max(logs)):.2f}x)")
    out(f"# sweep time {elapsed:.1f} s")
    out()

    if root and args.json:
        meta = {
            "ringcomm_version": getattr(ringcomm, "__version__", None),
            "isa": getattr(getattr(ringcomm, "_core", None), "reduce_isa", lambda: None)(),
            "ranks": ctx.size, "host": platform.node(), "cpus": os.cpu_count(),
            "argv": argv, "repeats": args.repeats, "check": args.check,
            "columns": [c[0] for c in columns_spec], "peers": peers,
            "timing": "median over repeats of (max over ranks of per-rank average per call)",
            "avg_busbw_GBps": avg_best, "wrong": total_wrong,
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
    try:
        rc.close()
    except Exception:
        pass
    return 1 if total_wrong else 0


if __name__ == "__main__":
    sys.exit(main())
