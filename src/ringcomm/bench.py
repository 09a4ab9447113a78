"""nccl-tests style sweep of ringcomm's collectives, with peers side by side.

Run it under the launcher, on every rank::

    mpirun -n 4 python -m ringcomm.bench                 # all-reduce, 8 B .. 64 MiB, x4
    mpirun -n 4 python -m ringcomm.bench -a all          # every algorithm + auto
    mpirun -n 2 python -m ringcomm.bench -b 4 -e 256M -f 16 -d bfloat16 --peers mpi,gloo
    mpirun -n 2 python -m ringcomm.bench --collective broadcast -b 8 -e 16M -f 8 --peers mpi,gloo
    mpirun -n 4 python -m ringcomm.bench -C all -a all --plot busbw.png
    mpirun -n 2 python -m ringcomm.bench -C sendrecv -b 1 -e 4M -f 4  # ping-pong, ranks 0 <-> 1
    mpirun -n 2 python -m ringcomm.bench -s 8,64K,16M -a all --peers mpi,gloo --markdown perf.md
    mpirun -n 4 python -m ringcomm.bench -s 8,64K,16M -a all --peers mpi,gloo --markdown perf.md --markdown-append

Collectives (``-C/--collective``, comma list or ``all``): allreduce,
broadcast, reduce, allgather, reducescatter, alltoall, gather, scatter,
sendrecv.

Definitions (nccl-tests, DESIGN.md section 6):

- ``size`` column: as nccl-tests prints it, the larger of one rank's send
  and receive buffers in bytes: all-reduce, broadcast, reduce, send/recv:
  the buffer; all-gather and gather: the whole receive buffer
  (``p * count``); reduce-scatter, scatter and all-to-all: the whole send
  buffer (``p * count``).  The ``count`` column is nccl-tests' per-rank
  count: the buffer for all-reduce / broadcast / reduce / send/recv, each
  rank's block for the others (all-to-all: the block sent to each peer).
  ``-b``/``-e`` give the size (``-s 8,64K,1M`` an explicit list instead);
  counts round down to a multiple of ``p``;
- ``algbw = size / time`` with GB = 1e9 B;
- ``busbw = algbw * factor(p)``: all-reduce ``2(p-1)/p``; all-gather,
  reduce-scatter, all-to-all, gather, scatter ``(p-1)/p``; broadcast,
  reduce, send/recv ``1``.  It is what each rank's link carries,
  comparable across p;
- ``time`` of one repetition: barrier (MPI), then ``iters`` back-to-back
  calls, each rank's average per call, then the MAX over ranks (the slowest
  rank sets the pace).  Every size runs ``--repeats`` repetitions, interleaved
  over the columns (so noise on a shared machine hits every column alike),
  and the MEDIAN repetition is reported;
- send/recv is an OSU-style ping-pong between ranks 0 and 1 (the other ranks
  idle): rank 0 sends ``size`` bytes, rank 1 receives them and sends its own
  ``size`` bytes back; ``time`` is half the round trip (the one-way latency)
  and ``algbw = busbw = size / time``;
- ``#wrong``: before timing each column runs once on integer-valued inputs
  whose result is exact in the data type, into an output filled with a
  sentinel; the elements that differ from the closed-form result are counted
  and summed over ranks (N/A with ``-c 0``).  Only the ranks that receive
  something are checked (the root of reduce and gather, ranks 0 and 1 of
  send/recv); every element of every block of the other collectives is,
  with a value that depends on the source rank, the destination rank and the
  position, so a block in the wrong place counts as wrong;
- the ``best/<peer>`` column is ringcomm's best busbw at that size (over the
  algorithms that ran) divided by the peer's: > 1 means ringcomm is faster;
- ``x memcpy`` (all-reduce; ``--no-memcpy`` leaves it out): ringcomm's best
  time divided by the time of one memcpy of a buffer of the same size
  (``np.copyto`` between two preallocated arrays), run on every rank at once
  and timed like the columns (interleaved repetitions, max over ranks,
  median), in the same processes: the memory-bandwidth floor (the aim for
  large all-reduces is at most 2x).

Peers run in the same processes on the same buffers (``--peers mpi,gloo``):

============== =============================== ====================================
collective     mpi (mpi4py)                    gloo (torch.distributed)
============== =============================== ====================================
allreduce      Allreduce                       all_reduce (in place)
broadcast      Bcast (in place)                broadcast (in place)
reduce         Reduce                          reduce (in place)
allgather      Allgather                       all_gather_into_tensor (*)
reducescatter  Reduce_scatter_block            reduce_scatter_tensor (*)
alltoall       Alltoall                        all_to_all_single
gather         Gather                          gather (into views of one tensor)
scatter        Scatter                         scatter (from views of one tensor)
sendrecv       Send / Recv                     send / recv
============== =============================== ====================================

(*) ``all_gather_single`` and ``reduce_scatter_single`` where torch has them
(newer torch renamed them; the old names warn).  gloo is initialised with a FileStore in a temporary directory shared through
mpi4py.  A call that works in place gets its input copied into the output
buffer once before timing, then reuses that buffer.  Combinations a peer
lacks (MPI has no bfloat16 reduction nor "avg", gloo no "avg") are reported
as N/A; the copy-only collectives move bfloat16 through MPI as 16-bit words.

``--plot FILE.png`` draws busbw against size for every column (needs
matplotlib).  ``--markdown FILE.md`` writes a compact Markdown table, one
row per collective and size: ranks, collective, size, ringcomm's best
algorithm with its time and busbw, each peer's time and busbw, the
ringcomm/peer busbw ratios and (all-reduce) x memcpy; with
``--markdown-append`` the rows continue the table FILE ends with when it has
the same columns (else a new table starts), so runs at 2 and 4 ranks build
one table (``tools/perf_table.py`` makes the README's this way).

A progress bar on stderr (rank 0) shows where a long sweep is;
it is on when the terminal the launcher writes to is one (mpirun hands the
ranks a pipe, so the launcher's stderr is what decides), ``--progress``
forces it on, ``--no-progress`` off.

Adding a collective is one more row in ``COLLECTIVES``: its size/count rule,
busbw factor, buffers, closed-form check and one runner per column kind.
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

#: collectives timed against one memcpy of their buffer (the "x memcpy" column)
MEMCPY_COLLECTIVES = ("allreduce",)


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


def as_numpy_bytes(buf) -> np.ndarray:
    """A numpy view of buf for collectives that only move data (bfloat16 as 16-bit words)."""
    if isinstance(buf, np.ndarray):
        return buf
    torch = _torch()
    return buf.view(torch.int16).numpy()


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


def copy_pattern(start: int, stop: int, src: int, dst: int = 0) -> np.ndarray:
    """Elements [start, stop) of the block that rank `src` sends to rank `dst`.

    Values 1 .. PATTERN_PERIOD (exact in every dtype, never the sentinel 0);
    two blocks of different sources or destinations differ everywhere while
    p < PATTERN_PERIOD, so a block that lands in the wrong place counts as wrong.
    """
    i = np.arange(start, stop, dtype=np.int64)
    return (i + 31 * src + 17 * dst) % PATTERN_PERIOD + 1


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
#: the redop column of the collectives that only move data (nccl-tests prints "none")
NO_OP = "none"


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
    #: (bufs, rank, p, op, dtype, root): fill send for this rank, return the
    #: expected recv, same type and length as recv (None: not checkable)
    fill: Callable[..., object]
    #: column kind -> (ctx, bufs, op, algorithm, root) -> zero-argument callable
    runners: dict = field(default_factory=dict)
    #: column kinds that work in place in recv (input copied in first)
    in_place: tuple = ()
    ops: tuple = ALL_OPS
    #: name of the collective for ringcomm.algorithms(); None: no algorithm choice
    #: (one ringcomm column, labelled "ringcomm")
    algorithms: Optional[str] = None
    rooted: bool = False
    #: which ranks' recv is checked: (rank, p, root) -> bool
    checked: Callable[[int, int, int], bool] = lambda rank, p, root: True
    #: measured time per call is multiplied by this (0.5: a ping-pong round trip)
    time_scale: float = 1.0
    min_ranks: int = 1
    #: what each peer calls, for the section header
    peer_calls: dict = field(default_factory=dict)

    @property
    def reduces(self) -> bool:
        return self.ops != (NO_OP,)


def _mpi_op(op):
    if op not in MPI_OPS:
        raise NotAvailable(f"MPI has no op {op!r}")
    from mpi4py import MPI
    return getattr(MPI, MPI_OPS[op])


def _gloo_op(dist, op):
    if op not in TORCH_OPS:
        raise NotAvailable(f"gloo has no op {op!r}")
    return getattr(dist.ReduceOp, TORCH_OPS[op])


def _fill_blocks(buf, count, fn) -> None:
    """buf[a:b] = fn(a, b) for blocks of BLOCK_ELEMS elements."""
    for a in range(0, count, BLOCK_ELEMS):
        b = min(count, a + BLOCK_ELEMS)
        store(buf, fn(a, b), a)


# counts: nccl-tests' getCollByteCount, with n = size // itemsize

def _counts_same(size, itemsize, p):            # allreduce, broadcast, reduce, sendrecv
    n = size // itemsize
    return n, n, n


def _counts_gather(size, itemsize, p):          # allgather, gather: count = send block
    n = size // itemsize // p
    return n, n, n * p


def _counts_scatter(size, itemsize, p):         # reduce-scatter, scatter: count = recv block
    n = size // itemsize // p
    return n, n * p, n


def _counts_alltoall(size, itemsize, p):        # count = the block for each peer
    n = size // itemsize // p
    return n, n * p, n * p


def _size_same(count, itemsize, p):
    return count * itemsize


def _size_blocks(count, itemsize, p):
    return count * itemsize * p


# --- all-reduce

def _allreduce_fill(bufs, rank, p, op, dtype, root):
    expected = alloc(bufs.count, dtype)
    _fill_blocks(bufs.send, bufs.count, lambda a, b: make_input(a, b, rank, p, op, dtype))
    _fill_blocks(expected, bufs.count, lambda a, b: closed_form(a, b, p, op, dtype))
    return expected


def _allreduce_ringcomm(ctx, bufs, op, algorithm, root):
    comm, send, recv = ctx.rc, bufs.send, bufs.recv
    return lambda: comm.allreduce(send, out=recv, op=op, algorithm=algorithm)


def _allreduce_mpi(ctx, bufs, op, algorithm, root):
    mop = _mpi_op(op)
    send, recv, comm = as_numpy(bufs.send), as_numpy(bufs.recv), ctx.mpi
    return lambda: comm.Allreduce(send, recv, op=mop)


def _allreduce_gloo(ctx, bufs, op, algorithm, root):
    dist = ctx.gloo()
    t, top = as_torch(bufs.recv), _gloo_op(dist, op)
    return lambda: dist.all_reduce(t, op=top)


# --- broadcast: in place in recv; the root's input is copied in, the others' is the sentinel

def _broadcast_fill(bufs, rank, p, op, dtype, root):
    expected = alloc(bufs.count, dtype)
    _fill_blocks(expected, bufs.count, lambda a, b: copy_pattern(a, b, root))
    if rank == root:
        _fill_blocks(bufs.send, bufs.count, lambda a, b: copy_pattern(a, b, root))
    else:
        _fill_blocks(bufs.send, bufs.count, lambda a, b: np.zeros(b - a, dtype=np.int64))
    return expected


def _broadcast_ringcomm(ctx, bufs, op, algorithm, root):
    comm, buf = ctx.rc, bufs.recv
    return lambda: comm.broadcast(buf, root=root, algorithm=algorithm)


def _broadcast_mpi(ctx, bufs, op, algorithm, root):
    comm, buf = ctx.mpi, as_numpy_bytes(bufs.recv)
    return lambda: comm.Bcast(buf, root=root)


def _broadcast_gloo(ctx, bufs, op, algorithm, root):
    dist = ctx.gloo()
    t = as_torch(bufs.recv)
    return lambda: dist.broadcast(t, src=root)


# --- reduce: the all-reduce's inputs; only the root's output is checked

def _reduce_ringcomm(ctx, bufs, op, algorithm, root):
    comm, send, recv = ctx.rc, bufs.send, bufs.recv
    return lambda: comm.reduce(send, out=recv, op=op, root=root, algorithm=algorithm)


def _reduce_mpi(ctx, bufs, op, algorithm, root):
    mop = _mpi_op(op)
    send, recv, comm = as_numpy(bufs.send), as_numpy(bufs.recv), ctx.mpi
    return lambda: comm.Reduce(send, recv, op=mop, root=root)


def _reduce_gloo(ctx, bufs, op, algorithm, root):
    dist = ctx.gloo()
    t, top = as_torch(bufs.recv), _gloo_op(dist, op)
    return lambda: dist.reduce(t, dst=root, op=top)


# --- all-gather and gather: rank r's block r of recv is copy_pattern(., r)

def _gather_fill(bufs, rank, p, op, dtype, root):
    n = bufs.count
    _fill_blocks(bufs.send, n, lambda a, b: copy_pattern(a, b, rank))
    expected = alloc(n * p, dtype)
    for r in range(p):
        _fill_blocks(expected[r * n:(r + 1) * n], n, lambda a, b: copy_pattern(a, b, r))
    return expected


def _allgather_ringcomm(ctx, bufs, op, algorithm, root):
    comm, send, recv = ctx.rc, bufs.send, bufs.recv
    return lambda: comm.allgather(send, recv, algorithm=algorithm)


def _allgather_mpi(ctx, bufs, op, algorithm, root):
    comm, send, recv = ctx.mpi, as_numpy_bytes(bufs.send), as_numpy_bytes(bufs.recv)
    return lambda: comm.Allgather(send, recv)


def _allgather_gloo(ctx, bufs, op, algorithm, root):
    dist = ctx.gloo()
    send, recv = as_torch(bufs.send), as_torch(bufs.recv)
    # newer torch calls it all_gather_single (all_gather_into_tensor warns)
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return lambda: fn(recv, send)


def _gather_ringcomm(ctx, bufs, op, algorithm, root):
    comm, send = ctx.rc, bufs.send
    recv = bufs.recv if ctx.rank == root else None
    return lambda: comm.gather(send, recv, root=root, algorithm=algorithm)


def _gather_mpi(ctx, bufs, op, algorithm, root):
    comm, send = ctx.mpi, as_numpy_bytes(bufs.send)
    recv = as_numpy_bytes(bufs.recv) if ctx.rank == root else None
    return lambda: comm.Gather(send, recv, root=root)


def _gather_gloo(ctx, bufs, op, algorithm, root):
    dist = ctx.gloo()
    send = as_torch(bufs.send)
    # gloo gathers into a list of tensors: views of recv, so the data lands there
    parts = list(as_torch(bufs.recv).view(ctx.size, bufs.count).unbind()) if ctx.rank == root else None
    return lambda: dist.gather(send, parts, dst=root)


# --- reduce-scatter: rank r gets block r of the all-reduce of the p*n inputs

def _reducescatter_fill(bufs, rank, p, op, dtype, root):
    n = bufs.count
    _fill_blocks(bufs.send, n * p, lambda a, b: make_input(a, b, rank, p, op, dtype))
    expected = alloc(n, dtype)
    _fill_blocks(expected, n, lambda a, b: closed_form(rank * n + a, rank * n + b, p, op, dtype))
    return expected


def _reducescatter_ringcomm(ctx, bufs, op, algorithm, root):
    comm, send, recv = ctx.rc, bufs.send, bufs.recv
    return lambda: comm.reduce_scatter(send, recv, op=op, algorithm=algorithm)


def _reducescatter_mpi(ctx, bufs, op, algorithm, root):
    mop = _mpi_op(op)
    comm, send, recv = ctx.mpi, as_numpy(bufs.send), as_numpy(bufs.recv)
    return lambda: comm.Reduce_scatter_block(send, recv, op=mop)


def _reducescatter_gloo(ctx, bufs, op, algorithm, root):
    dist = ctx.gloo()
    send, recv, top = as_torch(bufs.send), as_torch(bufs.recv), _gloo_op(dist, op)
    # newer torch calls it reduce_scatter_single (reduce_scatter_tensor warns)
    fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return lambda: fn(recv, send, op=top)


# --- all-to-all: block j of rank r's send is copy_pattern(., r, j), lands in block r of rank j

def _alltoall_fill(bufs, rank, p, op, dtype, root):
    n = bufs.count
    expected = alloc(n * p, dtype)
    for j in range(p):
        _fill_blocks(bufs.send[j * n:(j + 1) * n], n, lambda a, b: copy_pattern(a, b, rank, j))
        _fill_blocks(expected[j * n:(j + 1) * n], n, lambda a, b: copy_pattern(a, b, j, rank))
    return expected


def _alltoall_ringcomm(ctx, bufs, op, algorithm, root):
    comm, send, recv = ctx.rc, bufs.send, bufs.recv
    return lambda: comm.alltoall(send, recv, algorithm=algorithm)


def _alltoall_mpi(ctx, bufs, op, algorithm, root):
    comm, send, recv = ctx.mpi, as_numpy_bytes(bufs.send), as_numpy_bytes(bufs.recv)
    return lambda: comm.Alltoall(send, recv)


def _alltoall_gloo(ctx, bufs, op, algorithm, root):
    dist = ctx.gloo()
    send, recv = as_torch(bufs.send), as_torch(bufs.recv)
    return lambda: dist.all_to_all_single(recv, send)


# --- scatter: block j of the root's send (copy_pattern(., root, j)) lands on rank j

def _scatter_fill(bufs, rank, p, op, dtype, root):
    n = bufs.count
    for j in range(p):
        _fill_blocks(bufs.send[j * n:(j + 1) * n], n, lambda a, b: copy_pattern(a, b, root, j))
    expected = alloc(n, dtype)
    _fill_blocks(expected, n, lambda a, b: copy_pattern(a, b, root, rank))
    return expected


def _scatter_ringcomm(ctx, bufs, op, algorithm, root):
    comm, recv = ctx.rc, bufs.recv
    send = bufs.send if ctx.rank == root else None
    return lambda: comm.scatter(send, recv, root=root, algorithm=algorithm)


def _scatter_mpi(ctx, bufs, op, algorithm, root):
    comm, recv = ctx.mpi, as_numpy_bytes(bufs.recv)
    send = as_numpy_bytes(bufs.send) if ctx.rank == root else None
    return lambda: comm.Scatter(send, recv, root=root)


def _scatter_gloo(ctx, bufs, op, algorithm, root):
    dist = ctx.gloo()
    recv = as_torch(bufs.recv)
    parts = list(as_torch(bufs.send).view(ctx.size, bufs.count).unbind()) if ctx.rank == root else None
    return lambda: dist.scatter(recv, parts, src=root)


# --- send/recv: ping-pong between ranks 0 and 1; one call is a round trip

def _sendrecv_fill(bufs, rank, p, op, dtype, root):
    n = bufs.count
    _fill_blocks(bufs.send, n, lambda a, b: copy_pattern(a, b, rank))
    expected = alloc(n, dtype)
    _fill_blocks(expected, n, lambda a, b: copy_pattern(a, b, 1 - rank if rank < 2 else rank))
    return expected


def _pingpong(rank, send, recv):
    """(rank 0: send then receive; rank 1: receive then send; others: nothing)"""
    if rank == 0:
        def call():
            send(0)
            recv(0)
    elif rank == 1:
        def call():
            recv(1)
            send(1)
    else:
        def call():
            pass
    return call


def _sendrecv_ringcomm(ctx, bufs, op, algorithm, root):
    comm, s, r, peer = ctx.rc, bufs.send, bufs.recv, 1 - ctx.rank
    return _pingpong(ctx.rank, lambda _: comm.send(s, peer, tag=0), lambda _: comm.recv(r, peer, tag=0))


def _sendrecv_mpi(ctx, bufs, op, algorithm, root):
    comm, s, r, peer = ctx.mpi, as_numpy_bytes(bufs.send), as_numpy_bytes(bufs.recv), 1 - ctx.rank
    return _pingpong(ctx.rank, lambda _: comm.Send(s, dest=peer, tag=0),
                     lambda _: comm.Recv(r, source=peer, tag=0))


def _sendrecv_gloo(ctx, bufs, op, algorithm, root):
    dist = ctx.gloo()
    s, r, peer = as_torch(bufs.send), as_torch(bufs.recv), 1 - ctx.rank
    return _pingpong(ctx.rank, lambda _: dist.send(s, dst=peer), lambda _: dist.recv(r, src=peer))


COLLECTIVES = {
    "allreduce": Collective(
        name="allreduce",
        busbw_factor=lambda p: 2.0 * (p - 1) / p,
        counts=_counts_same, size_of=_size_same, fill=_allreduce_fill,
        runners={"ringcomm": _allreduce_ringcomm, "mpi": _allreduce_mpi, "gloo": _allreduce_gloo},
        in_place=("gloo",),
        algorithms="allreduce",
        peer_calls={"mpi": "Allreduce", "gloo": "all_reduce (in place)"},
    ),
    "broadcast": Collective(
        name="broadcast",
        busbw_factor=lambda p: 1.0,
        counts=_counts_same, size_of=_size_same, fill=_broadcast_fill,
        runners={"ringcomm": _broadcast_ringcomm, "mpi": _broadcast_mpi, "gloo": _broadcast_gloo},
        in_place=("ringcomm", "mpi", "gloo"),
        ops=(NO_OP,), algorithms="broadcast", rooted=True,
        peer_calls={"mpi": "Bcast", "gloo": "broadcast"},
    ),
    "reduce": Collective(
        name="reduce",
        busbw_factor=lambda p: 1.0,
        counts=_counts_same, size_of=_size_same, fill=_allreduce_fill,
        runners={"ringcomm": _reduce_ringcomm, "mpi": _reduce_mpi, "gloo": _reduce_gloo},
        in_place=("gloo",),
        algorithms="reduce", rooted=True, checked=lambda rank, p, root: rank == root,
        peer_calls={"mpi": "Reduce", "gloo": "reduce (in place)"},
    ),
    "allgather": Collective(
        name="allgather",
        busbw_factor=lambda p: (p - 1) / p,
        counts=_counts_gather, size_of=_size_blocks, fill=_gather_fill,
        runners={"ringcomm": _allgather_ringcomm, "mpi": _allgather_mpi, "gloo": _allgather_gloo},
        ops=(NO_OP,), algorithms="allgather",
        peer_calls={"mpi": "Allgather", "gloo": "all_gather_single (all_gather_into_tensor on older torch)"},
    ),
    "reducescatter": Collective(
        name="reducescatter",
        busbw_factor=lambda p: (p - 1) / p,
        counts=_counts_scatter, size_of=_size_blocks, fill=_reducescatter_fill,
        runners={"ringcomm": _reducescatter_ringcomm, "mpi": _reducescatter_mpi,
                 "gloo": _reducescatter_gloo},
        algorithms="reduce_scatter",
        peer_calls={"mpi": "Reduce_scatter_block",
                    "gloo": "reduce_scatter_single (reduce_scatter_tensor on older torch)"},
    ),
    "alltoall": Collective(
        name="alltoall",
        busbw_factor=lambda p: (p - 1) / p,
        counts=_counts_alltoall, size_of=_size_blocks, fill=_alltoall_fill,
        runners={"ringcomm": _alltoall_ringcomm, "mpi": _alltoall_mpi, "gloo": _alltoall_gloo},
        ops=(NO_OP,), algorithms="alltoall",
        peer_calls={"mpi": "Alltoall", "gloo": "all_to_all_single"},
    ),
    "gather": Collective(
        name="gather",
        busbw_factor=lambda p: (p - 1) / p,
        counts=_counts_gather, size_of=_size_blocks, fill=_gather_fill,
        runners={"ringcomm": _gather_ringcomm, "mpi": _gather_mpi, "gloo": _gather_gloo},
        ops=(NO_OP,), algorithms="gather", rooted=True, checked=lambda rank, p, root: rank == root,
        peer_calls={"mpi": "Gather", "gloo": "gather"},
    ),
    "scatter": Collective(
        name="scatter",
        busbw_factor=lambda p: (p - 1) / p,
        counts=_counts_scatter, size_of=_size_blocks, fill=_scatter_fill,
        runners={"ringcomm": _scatter_ringcomm, "mpi": _scatter_mpi, "gloo": _scatter_gloo},
        ops=(NO_OP,), algorithms="scatter", rooted=True,
        peer_calls={"mpi": "Scatter", "gloo": "scatter"},
    ),
    "sendrecv": Collective(
        name="sendrecv",
        busbw_factor=lambda p: 1.0,
        counts=_counts_same, size_of=_size_same, fill=_sendrecv_fill,
        runners={"ringcomm": _sendrecv_ringcomm, "mpi": _sendrecv_mpi, "gloo": _sendrecv_gloo},
        ops=(NO_OP,), checked=lambda rank, p, root: rank < 2,
        time_scale=0.5, min_ranks=2,
        peer_calls={"mpi": "Send / Recv", "gloo": "send / recv"},
    ),
}

COLLECTIVE_ALIASES = {
    "all_reduce": "allreduce", "bcast": "broadcast", "all_gather": "allgather",
    "reduce_scatter": "reducescatter", "reduce-scatter": "reducescatter",
    "all_to_all": "alltoall", "alltoallv": "alltoall", "sendrecv": "sendrecv",
    "send_recv": "sendrecv", "p2p": "sendrecv", "pingpong": "sendrecv", "ping-pong": "sendrecv",
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


def _size_list(text: str) -> list[int]:
    sizes = [parse_size(t) for t in _list(text)]
    if not sizes:
        raise argparse.ArgumentTypeError("empty size list")
    return sorted(set(sizes))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m ringcomm.bench",
        description="nccl-tests style collective sweep; run under mpirun on every rank.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Definitions", 1)[1].join(("Definitions", "")) if __doc__ else None,
    )
    ap.add_argument("-C", "--collective", default="allreduce",
                    help="collective(s), comma list or 'all' (%s; default allreduce)" % ", ".join(COLLECTIVES))
    ap.add_argument("-b", "--minbytes", type=parse_size, default=8, help="smallest size (default 8)")
    ap.add_argument("-e", "--maxbytes", type=parse_size, default=64 * MIB,
                    help="largest size (default 64M; K/M/G suffixes)")
    ap.add_argument("-f", "--stepfactor", type=int, default=4, help="size multiplier (default 4)")
    ap.add_argument("-s", "--sizes", type=_size_list, default=None, metavar="LIST",
                    help="explicit sizes, comma list (e.g. 8,64K,1M,16M,256M); replaces -b/-e/-f")
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
                    help="ringcomm algorithm(s), comma list; 'all' = every algorithm of the collective plus"
                         " auto (default auto); names a collective lacks are left out of its columns")
    ap.add_argument("--root", type=int, default=0,
                    help="root rank of broadcast, reduce, gather and scatter (default 0)")
    ap.add_argument("--peers", default="mpi",
                    help="peers in the same run, comma list of mpi, gloo, or 'none' (default mpi)")
    ap.add_argument("--json", metavar="FILE", default=None, help="also write the results as JSON (rank 0)")
    ap.add_argument("--plot", metavar="FILE.png", default=None,
                    help="also draw busbw vs size for every column, one panel per table (rank 0; needs matplotlib)")
    ap.add_argument("--markdown", metavar="FILE.md", default=None,
                    help="also write a compact Markdown table (rank 0): one row per collective and size with"
                         " ringcomm's best algorithm, each peer, the ringcomm/peer busbw ratios and, for"
                         " all-reduce, x memcpy")
    ap.add_argument("--markdown-append", action="store_true",
                    help="append the rows to --markdown FILE when it exists (a table with the same columns"
                         " at its end is continued, otherwise a new one starts)")
    ap.add_argument("--no-memcpy", dest="memcpy", action="store_false", default=True,
                    help="do not time the memcpy reference of all-reduce (the 'x memcpy' column)")
    pg = ap.add_mutually_exclusive_group()
    pg.add_argument("--progress", dest="progress", action="store_true", default=None,
                    help="progress bar on stderr (rank 0) even when it is not a terminal")
    pg.add_argument("--no-progress", dest="progress", action="store_false",
                    help="no progress bar (default: on when the launcher's stderr is a terminal)")
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
                 args, root: int = 0) -> tuple[int, list[Column]]:
    from mpi4py import MPI
    p, rank = ctx.size, ctx.rank
    itemsize, is_float = DTYPES[dtype][1], DTYPES[dtype][2]
    count, nsend, nrecv = coll.counts(size, itemsize, p)
    bufs = Bufs(send=alloc(nsend, dtype), recv=alloc(nrecv, dtype), count=count)
    expected = coll.fill(bufs, rank, p, op, dtype, root)
    checked = coll.checked(rank, p, root)
    iters = args.iters if args.iters is not None else default_iters(size)
    warmup = args.warmup if args.warmup is not None else default_warmup(size)

    def warm_up(col):
        """Untimed calls; with default --iters, cap the calls per repetition by the time budget."""
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

    cols = []
    for label, kind, algorithm in columns_spec:
        col = Column(label, kind, algorithm)
        local_ok, note = 1, ""
        try:
            runner = coll.runners.get(kind)
            if runner is None:
                raise NotAvailable(f"no {kind} runner for {coll.name}")
            col.fn = runner(ctx, bufs, op, algorithm, root)
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
            local_wrong = count_wrong(bufs.recv, expected) if checked else 0
            col.wrong = ctx.mpi.allreduce(local_wrong, op=MPI.SUM)
        if kind in coll.in_place:
            col.reset()
        warm_up(col)
        cols.append(col)

    # the memory-bandwidth reference of all-reduce: one memcpy of the buffer
    # (np.copyto between two preallocated arrays of its size) on every rank at
    # once, timed like a column (so 4 ranks on 2 cores share cores here too)
    memcpy = None
    if coll.name in MEMCPY_COLLECTIVES and getattr(args, "memcpy", True):
        nbytes = count * itemsize
        src, dst = np.ones(nbytes, dtype=np.uint8), np.zeros(nbytes, dtype=np.uint8)
        memcpy = Column("memcpy", "memcpy", "", fn=lambda: np.copyto(dst, src))
        memcpy.fn()
        warm_up(memcpy)

    # interleaved repetitions; every rank records its own average per call
    live = [c for c in cols if c.ok] + ([memcpy] if memcpy is not None else [])
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
        col.times = (worst[:, j] * (coll.time_scale if col is not memcpy else 1.0)).tolist()
    return count, cols, memcpy


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


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo ("model name"; other architectures: a few other keys)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine() or "unknown"
    for key in ("model name", "Model", "cpu model", "cpu", "Processor"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", info, re.M)
        if m and m.group(1).strip():
            return re.sub(r"\s+", " ", m.group(1).strip())
    return platform.machine() or "unknown"


def _sizes_text(args) -> str:
    if args.sizes:
        return ",".join(format_size(s) for s in args.sizes)
    return f"{format_size(args.minbytes)} .. {format_size(args.maxbytes)} x{args.stepfactor}"


def header_lines(ctx, args, argv, colls, peers) -> list[str]:
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
        f" load average {_loadavg()})  cpu {cpu_model()}",
        f"# command: python -m ringcomm.bench {shlex.join(argv)}".rstrip(),
        f"# sizes {_sizes_text(args)}"
        f"  iters {it}  warmup {wu}  repeats {args.repeats} (median of max-over-ranks)  check {args.check}",
        f"# ringcomm algorithms: {args.algorithm}   peers: {', '.join(peers) if peers else 'none'}"
        f"   (mpi: {mpi_lib})",
        "# GB/s = 1e9 B/s; busbw = algbw * factor(p); best/<peer> = ringcomm's best busbw / the peer's",
    ]
    if any(c.rooted for c in colls):
        lines.append(f"# root {args.root} (broadcast, reduce, gather, scatter)")
    if any(c.name == "sendrecv" for c in colls):
        lines.append("# sendrecv: ping-pong between ranks 0 and 1 (others idle); time = half the round trip")
    return lines


def _ratio_width(peer: str) -> int:
    return max(9, len(peer) + 6)


def table_header(columns_spec, peers, memcpy: bool = False) -> list[str]:
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
    if memcpy:
        l1 += f" {'memcpy':>8s} {'ratio':>8s}"
        l2 += f" {'time':>8s} {'x memcpy':>8s}"
        l3 += f" {'(us)':>8s} {'(time)':>8s}"
    return [l1.rstrip(), l2, l3.rstrip()]


def row_line(size, count, dtype, op, cols, factor, peers, memcpy=None,
             show_memcpy: bool = False) -> tuple[str, dict]:
    """One table row, and {column label: (time s, algbw, busbw)} of the columns that ran.

    memcpy: the memcpy reference Column (all-reduce), shown when show_memcpy.
    """
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
    if show_memcpy:
        t_mc = statistics.median(memcpy.times) if memcpy is not None and memcpy.times else None
        if t_mc:
            line += f" {_fmt_time(t_mc * 1e6)}"
            line += f" {best / t_mc:>8.2f}" if best else f" {'N/A':>8s}"
        else:
            line += f" {'N/A':>8s} {'N/A':>8s}"
    return line, stats


def section_lines(coll, dtype, op, ctx, root, columns_spec, peers, memcpy: bool = False) -> list[str]:
    factor = coll.busbw_factor(ctx.size)
    where = f"  root {root}" if coll.rooted else ""
    lines = [f"# {coll.name}  {dtype}  {op}{where}  ranks {ctx.size}  busbw factor {factor:.4g}"
             f"  size = {_SIZE_RULE.get(coll.name, 'the buffer')}"]
    calls = [f"{k}: {coll.peer_calls[k]}" for k in peers if k in coll.peer_calls]
    if calls:
        lines.append("# peers call  " + ";  ".join(calls))
    in_place = [k for k in coll.in_place if k == "ringcomm" or k in peers]
    if in_place:
        lines.append(f"# in place (input copied into the output once before timing): {', '.join(in_place)}")
    if memcpy:
        lines.append("# x memcpy = ringcomm's best time / the time of one memcpy of the buffer (np.copyto, every"
                     " rank at once, timed like the columns): the memory-bandwidth floor")
    return lines + table_header(columns_spec, peers, memcpy)


_SIZE_RULE = {
    "allgather": "p * count (the receive buffer)", "gather": "p * count (the root's receive buffer)",
    "reducescatter": "p * count (the send buffer)", "scatter": "p * count (the root's send buffer)",
    "alltoall": "p * count (the send buffer)", "sendrecv": "one message",
}


def ringcomm_columns(ringcomm, coll: Collective, spec: str) -> tuple[list[str], str]:
    """(ringcomm algorithm columns for coll, note) from the -a argument."""
    if coll.algorithms is None:
        return [""], ""          # one column, no algorithm choice
    known = None
    for call in ((lambda: ringcomm.algorithms(coll.algorithms)),
                 (lambda: ringcomm.algorithms(coll.algorithms.replace("_", ""))),
                 (lambda: ringcomm.algorithms() if coll.name == "allreduce" else None)):
        try:
            known = call()
        except Exception:
            continue
        if known is not None:
            known = [str(a) for a in known]
            break
    if spec.strip().lower() == "all":
        if known is None:
            return ["auto"], f"{coll.name}: ringcomm.algorithms({coll.algorithms!r}) failed; auto only"
        return [a for a in known if a != "auto"] + ["auto"], ""
    wanted = _list(spec)
    if known is None:
        return wanted, ""
    keep = [a for a in wanted if a == "auto" or a in known]
    left = [a for a in wanted if a not in keep]
    note = ""
    if left:
        note = (f"{coll.name}: no algorithm {', '.join(left)} (it has {', '.join(known) or 'none'})")
    return keep or ["auto"], note


# --------------------------------------------------------------------------
# Markdown table (--markdown)
# --------------------------------------------------------------------------

def md_size(n: int) -> str:
    """8 -> '8 B', 65536 -> '64 KiB', 1.5 MiB -> '1536 KiB' (exact, binary units)."""
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= mult and n % mult == 0:
            return f"{n // mult} {unit}"
    return f"{n} B"


def md_time(t: float) -> str:
    """seconds -> '1.93 us', '25.8 us', '3.79 ms', '1.20 s'."""
    us = t * 1e6
    if us < 10:
        return f"{us:.2f} us"
    if us < 1000:
        return f"{us:.1f} us"
    if us < 1e6:
        return f"{us / 1e3:.2f} ms"
    return f"{us / 1e6:.2f} s"


def md_bw(v: float) -> str:
    return f"{v:.2f}"       # as nccl-tests prints it: small sizes are 0.00, their time is what counts


def markdown_header(peers, memcpy: bool) -> list[str]:
    cells = ["ranks", "collective", "size", "ringcomm best", "time", "busbw (GB/s)"]
    align = ["---:", "---", "---:", "---", "---:", "---:"]
    for peer in peers:
        cells += [f"{peer} time", f"{peer} busbw"]
        align += ["---:", "---:"]
    for peer in peers:
        cells.append(f"ringcomm/{peer} busbw")
        align.append("---:")
    if memcpy:
        cells.append("x memcpy")
        align.append("---:")
    return ["| " + " | ".join(cells) + " |", "|" + "|".join(align) + "|"]


def markdown_row(ranks, coll, dtype, op, root, size, cols, stats, peers, memcpy,
                 show_memcpy: bool) -> str:
    """One row: ringcomm's best column (least time), every peer, ratios, x memcpy."""
    name = coll.name
    if dtype != "float32":
        name += f" {dtype}"
    if op not in ("sum", NO_OP):
        name += f" {op}"
    if coll.rooted and root != 0:
        name += f" root {root}"

    def wrong(col):
        return f" ({col.wrong} wrong!)" if col.wrong else ""

    rc = [c for c in cols if c.is_ringcomm and c.label in stats]
    best = min(rc, key=lambda c: stats[c.label][0]) if rc else None
    cells = [str(ranks), name, md_size(size)]
    if best is None:
        cells += ["N/A", "N/A", "N/A"]
    else:
        t, _, bw = stats[best.label]
        cells += [best.label if best.algorithm else "-", md_time(t) + wrong(best), md_bw(bw)]
    by_label = {c.label: c for c in cols}
    for peer in peers:
        if peer in stats:
            t, _, bw = stats[peer]
            cells += [md_time(t) + wrong(by_label[peer]), md_bw(bw)]
        else:
            cells += ["N/A", "N/A"]
    for peer in peers:
        if best is not None and peer in stats and stats[peer][0] > 0:
            # busbw ratio == time ratio (same size, same factor)
            cells.append(f"{stats[peer][0] / stats[best.label][0]:.2f}x")
        else:
            cells.append("N/A")
    if show_memcpy:
        t_mc = statistics.median(memcpy.times) if memcpy is not None and memcpy.times else None
        if best is not None and t_mc and coll.name in MEMCPY_COLLECTIVES:
            cells.append(f"{stats[best.label][0] / t_mc:.2f}x")
        else:
            cells.append("-")
    return "| " + " | ".join(cells) + " |"


def write_markdown(path: str, header: list[str], rows: list[str], append: bool) -> None:
    """Write header + rows, or with append continue the table at the end of an existing file.

    The rows join the file's last table when it has the same header and is the
    last thing in the file; otherwise a new table (blank line, header) starts.
    """
    text = ""
    if append and os.path.exists(path):
        with open(path) as f:
            text = f.read().rstrip("\n")
    old = text.split("\n") if text else []
    continues = False
    if old and old[-1].startswith("|"):
        # the header of the table the file ends with: the line above its |---| row
        for i in range(len(old) - 1, 0, -1):
            if not old[i].startswith("|"):
                break
            if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", old[i].strip()):
                continues = old[i - 1].strip() == header[0]
                break
    new = rows if continues else ([""] if old else []) + header + rows
    with open(path, "w") as f:
        f.write("\n".join(old + new) + "\n")


# --------------------------------------------------------------------------
# progress bar (stderr, rank 0)
# --------------------------------------------------------------------------

def _launcher_stderr_is_tty() -> bool:
    """Is the stderr that the user sees a terminal?

    Under mpirun a rank's stderr is a pipe to the launcher (MPICH's hydra,
    Open MPI's orted), which copies it to its own stderr: walk up the
    process tree past the pipes (Linux /proc) and look at the first stderr
    that is not one.
    """
    try:
        if os.isatty(2):
            return True
    except OSError:  # pragma: no cover
        return False
    pid = os.getpid()
    for _ in range(6):
        try:
            target = os.readlink(f"/proc/{pid}/fd/2")
        except OSError:
            return False
        if not target.startswith(("pipe:", "socket:")):
            return target.startswith(("/dev/pts/", "/dev/tty", "/dev/console"))
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid <= 1:
            return False
    return False


class Progress:
    """One status line on stderr, redrawn in place; cleared around table output.

    On a terminal it is redrawn at most every 0.2 s and only once the sweep
    has run 1 s; when forced on for a file or pipe it writes one line per
    finished table instead (log friendly).
    """

    def __init__(self, total: int, enabled: bool, tty: bool):
        self.total, self.enabled, self.tty = max(total, 1), enabled, tty
        self.done, self.t0, self.last, self.shown = 0, time.perf_counter(), 0.0, False
        self.text = ""

    def _line(self) -> str:
        el = time.perf_counter() - self.t0
        frac = self.done / self.total
        eta = el / frac - el if frac > 0 else 0.0
        width = 24
        fill = int(round(width * frac))
        return (f"[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} "
                f"{100 * frac:3.0f}%  {self.text}  elapsed {el:.0f}s  eta {eta:.0f}s")

    def clear(self) -> None:
        if self.enabled and self.tty and self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.shown = False

    def draw(self, force: bool = False) -> None:
        if not (self.enabled and self.tty):
            return
        now = time.perf_counter()
        if not force and (now - self.t0 < 1.0 or now - self.last < 0.2):
            return
        self.last = now
        sys.stderr.write("\r\033[K" + self._line())
        sys.stderr.flush()
        self.shown = True

    def step(self, n: int = 1) -> None:
        self.done += n
        self.draw(force=self.shown)

    def section_done(self) -> None:
        if self.enabled and not self.tty:
            sys.stderr.write(self._line() + "\n")
            sys.stderr.flush()

    def finish(self) -> None:
        self.clear()
        self.enabled = False


# --------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------

MATPLOTLIB_MISSING = ("ringcomm.bench: --plot needs matplotlib, which is not installed here; "
                      "install it with:  pip install matplotlib")


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_plot(path: str, sections: list[dict], ranks: int) -> None:
    """busbw vs size (log2 x), one panel per table, one line per column."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    sections = [s for s in sections if any(s["series"].values())]
    if not sections:
        return
    ncols = 1 if len(sections) == 1 else 2
    nrows = (len(sections) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(7.5 * ncols, 4.6 * nrows), squeeze=False)

    def fmt_bytes(x, _pos):
        x = int(round(x))
        for unit, mult in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
            if x >= mult:
                return f"{x / mult:g}{unit}"
        return str(x)

    for ax, sec in zip(axes.flat, sections):
        for label, pts in sec["series"].items():
            pts = [(s, b) for s, b in pts if s > 0]
            if not pts:
                continue
            xs, ys = zip(*pts)
            peer = label in PEERS
            ax.plot(xs, ys, marker="o", markersize=3, linestyle="--" if peer else "-",
                    label=label if peer or label == "ringcomm" else f"ringcomm {label}")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(fmt_bytes))
        ax.set_xlabel("size (B)")
        ax.set_ylabel("busbw (GB/s)")
        ax.set_title(sec["title"], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(sections):]:
        ax.set_visible(False)
    fig.suptitle(f"ringcomm.bench, {ranks} ranks (busbw = algbw x factor(p), GB = 1e9 B)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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

    colls = [COLLECTIVES[n] for n in _expand(args.collective, COLLECTIVES, COLLECTIVE_ALIASES,
                                             what="collective")]
    dtypes = _expand(args.dtype, DTYPES, DTYPE_ALIASES, what="dtype")
    ops = _expand(args.op, ALL_OPS, what="op")
    peers = [] if args.peers.strip().lower() in ("none", "") else _expand(args.peers, PEERS, what="peer")

    world = MPI.COMM_WORLD
    if not 0 <= args.root < world.Get_size():
        raise SystemExit(f"ringcomm.bench: --root {args.root} is not a rank (0 .. {world.Get_size() - 1})")
    if hasattr(ringcomm, "Communicator") and hasattr(ringcomm.Communicator, "from_mpi"):
        rc = ringcomm.Communicator.from_mpi(world)
    else:
        rc = ringcomm.init()
    ctx = Context(world, rc)
    if rc.size != ctx.size or rc.rank != ctx.rank:
        raise SystemExit(f"ringcomm.bench: ringcomm says rank {rc.rank}/{rc.size}, MPI {ctx.rank}/{ctx.size}")
    root = ctx.rank == 0

    sizes = []
    s = args.minbytes
    while s <= args.maxbytes:
        sizes.append(s)
        s = s * args.stepfactor if s > 0 else 1
    if args.sizes:
        sizes = list(args.sizes)

    # the tables to run: (collective, dtype, op, ringcomm algorithm columns)
    skipped, plan = [], []
    for coll in colls:
        if ctx.size < coll.min_ranks:
            skipped.append(f"{coll.name} needs at least {coll.min_ranks} ranks")
            continue
        algos, note = ringcomm_columns(ringcomm, coll, args.algorithm)
        if note:
            skipped.append(note)
        for dtype in dtypes:
            is_float = DTYPES[dtype][2]
            for op in (ops if coll.reduces else [NO_OP]):
                if op == "avg" and not is_float or op in ("band", "bor", "bxor") and is_float:
                    if len(dtypes) == 1 or len(ops) == 1:
                        skipped.append(f"op {op} is not defined for {dtype}")
                    continue
                if op not in coll.ops:
                    continue
                plan.append((coll, dtype, op, algos))

    progress_on = args.progress if args.progress is not None else _launcher_stderr_is_tty()
    progress = Progress(len(plan) * len(sizes), enabled=root and progress_on,
                        tty=sys.stderr.isatty() or _launcher_stderr_is_tty())

    def out(line=""):
        if root:
            shown = progress.shown
            progress.clear()
            print(line, flush=True)
            if shown:
                progress.draw(force=True)

    loadavg_start = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    for line in header_lines(ctx, args, argv, colls, peers):
        out(line)
    want_plot = bool(args.plot)
    if want_plot and not _have_matplotlib():
        want_plot = False
        if root:
            print(MATPLOTLIB_MISSING, file=sys.stderr, flush=True)
        out(f"# note: no plot: matplotlib is not installed (pip install matplotlib)")
    if "gloo" in peers:
        try:
            ctx.gloo()
        except NotAvailable as e:
            out(f"# note: gloo skipped: {e}")
            peers = [p for p in peers if p != "gloo"]
    for note in dict.fromkeys(skipped):
        out(f"# skipped: {note}")
    t_start = time.perf_counter()

    show_memcpy_md = args.memcpy and any(c.name in MEMCPY_COLLECTIVES for c, _, _, _ in plan)
    md_rows, memcpy_ratios = [], []
    results, notes, plot_sections = [], {}, []
    total_wrong, inexact = 0, set()
    busbw_sum = {}
    best_sum, ratio_logs = [], {p: [] for p in peers}
    skews, stragglers_seen = [], {}  # arrival skew of ringcomm's calls per size (comm.stragglers)
    has_report = hasattr(rc, "stragglers")
    if has_report:
        rc.stragglers(reset=True)
    try:
        for coll, dtype, op, algos in plan:
            factor = coll.busbw_factor(ctx.size)
            columns_spec = [(a or "ringcomm", "ringcomm", a) for a in algos] + [(p, p, "") for p in peers]
            if coll.reduces and not pattern_period(op, ctx.size, dtype)[1]:
                inexact.add(f"{coll.name}/{dtype}/{op}")
            show_memcpy = args.memcpy and coll.name in MEMCPY_COLLECTIVES
            out()
            for line in section_lines(coll, dtype, op, ctx, args.root, columns_spec, peers, show_memcpy):
                out(line)
            where = f" root {args.root}" if coll.rooted else ""
            section = {"title": f"{coll.name} {dtype}{'' if op == NO_OP else ' ' + op}{where}",
                       "series": {c[0]: [] for c in columns_spec}}
            plot_sections.append(section)
            for k, size in enumerate(sizes):
                progress.text = f"{coll.name} {dtype} {op} {format_size(size)}"
                progress.draw()
                try:
                    count, cols, memcpy = measure_size(ctx, coll, columns_spec, size, dtype, op, args,
                                                       args.root)
                except NotAvailable as e:
                    out(f"# {dtype}: {e}")
                    progress.step(len(sizes) - k)
                    break
                # like nccl-tests: the size column is what the counts move
                size = coll.size_of(count, DTYPES[dtype][1], ctx.size)
                if has_report:
                    rep = rc.stragglers(reset=True)
                    if rep.ncalls:
                        skews.append((size, rep.median_skew))
                    if rep.straggler is not None:
                        stragglers_seen[rep.straggler] = stragglers_seen.get(rep.straggler, 0) + 1
                line, stats = row_line(size, count, dtype, op, cols, factor, peers, memcpy, show_memcpy)
                out(line)
                md_rows.append(markdown_row(ctx.size, coll, dtype, op, args.root, size, cols, stats, peers,
                                            memcpy, show_memcpy_md))
                t_memcpy = statistics.median(memcpy.times) if memcpy is not None and memcpy.times else None
                progress.step()
                rc_best = None
                for col in cols:
                    if col.note:
                        notes.setdefault(f"{coll.name} {col.label}: {col.note}", None)
                    if col.wrong:
                        total_wrong += col.wrong
                    if col.label in stats:
                        t, algbw, busbw = stats[col.label]
                        busbw_sum.setdefault(col.label, []).append(busbw)
                        section["series"][col.label].append((size, busbw))
                        if col.is_ringcomm:
                            rc_best = max(rc_best or 0.0, busbw)
                    results.append({
                        "collective": coll.name, "size": size, "count": count, "dtype": dtype,
                        "op": op, "root": args.root if coll.rooted else None,
                        "column": col.label, "kind": col.kind,
                        "algorithm": col.algorithm or None, "ok": col.ok,
                        "note": col.note or None,
                        "time_us": stats[col.label][0] * 1e6 if col.label in stats else None,
                        "algbw_GBps": stats[col.label][1] if col.label in stats else None,
                        "busbw_GBps": stats[col.label][2] if col.label in stats else None,
                        "busbw_factor": factor,
                        "wrong": col.wrong, "rep_times_us": [t * 1e6 for t in col.times],
                        "iters": col.iters,
                    })
                    if memcpy is not None:
                        results[-1]["memcpy_time_us"] = t_memcpy * 1e6 if t_memcpy else None
                if rc_best is not None:
                    best_sum.append(rc_best)
                rc_times = [stats[c.label][0] for c in cols if c.is_ringcomm and c.label in stats]
                if rc_times and t_memcpy:
                    memcpy_ratios.append((size, dtype, min(rc_times) / t_memcpy))
                for peer in peers:
                    if rc_times and peer in stats and stats[peer][0] > 0:
                        ratio_logs[peer].append(math.log(stats[peer][0] / min(rc_times)))
            progress.section_done()
    finally:
        progress.finish()
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
    if memcpy_ratios:
        big = max(s for s, _, _ in memcpy_ratios)
        at_big = ", ".join(f"{r:.2f}x" + (f" ({d})" if len(dtypes) > 1 else "")
                           for s, d, r in memcpy_ratios if s == big)
        large = [r for s, _, r in memcpy_ratios if s >= MIB]
        span = f"; sizes >= 1M: {min(large):.2f}x .. {max(large):.2f}x" if len(large) > 1 else ""
        out(f"# x memcpy (allreduce) : ringcomm best time / one memcpy of the buffer: {at_big} at "
            f"{format_size(big)}{span}  (floor target: <= 2x for large sizes)")
    if skews:
        by_size = {}
        for sz, sk in skews:
            by_size.setdefault(sz, []).append(sk)
        shown = ", ".join(f"{format_size(sz)} {statistics.median(v) * 1e6:.1f}"
                          for sz, v in by_size.items())
        named = ", ".join(f"rank {r} in {k} of {len(skews)} rows"
                          for r, k in sorted(stragglers_seen.items())) or "none"
        out(f"# arrival skew (us)    : median over ringcomm's calls of latest minus earliest "
            f"arrival: {shown}")
        out(f"#   straggler named    : {named}  (comm.stragglers(), docs/stragglers.md)")
    out(f"# sweep time {elapsed:.1f} s")

    if root and want_plot:
        try:
            write_plot(args.plot, plot_sections, ctx.size)
            out(f"# plot: {args.plot}")
        except Exception as e:  # a plot must not lose the table
            out(f"# plot failed: {type(e).__name__}: {e}")
    out()

    if root and args.markdown:
        write_markdown(args.markdown, markdown_header(peers, show_memcpy_md), md_rows, args.markdown_append)
        out(f"# markdown: {args.markdown}{' (appended)' if args.markdown_append else ''}")
        out()

    if root and args.json:
        meta = {
            "ringcomm_version": getattr(ringcomm, "__version__", None),
            "isa": getattr(getattr(ringcomm, "_core", None), "reduce_isa", lambda: None)(),
            "ranks": ctx.size, "host": platform.node(), "cpus": os.cpu_count(),
            "argv": argv, "repeats": args.repeats, "check": args.check,
            "collectives": [c.name for c in colls], "root": args.root,
            "columns": list(dict.fromkeys(r["column"] for r in results)), "peers": peers,
            "timing": "median over repeats of (max over ranks of per-rank average per call);"
                      " sendrecv: half the round trip",
            "avg_busbw_GBps": avg_best, "wrong": total_wrong,
            "arrival_skew_us": [[sz, sk * 1e6] for sz, sk in skews],
            "sizes": sizes, "cpu_model": cpu_model(), "loadavg_start": loadavg_start,
            "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
            "torch_version": getattr(sys.modules.get("torch"), "__version__", None) if "gloo" in peers else None,
            "memcpy": "memcpy_time_us: median over repeats of (max over ranks of the per-rank average time"
                      " of np.copyto between two preallocated uint8 arrays of the buffer's size, every rank"
                      " at once, interleaved with the columns)" if args.memcpy else None,
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
