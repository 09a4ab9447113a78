"""Helpers shared by the mpirun workers in this directory.

Every worker runs as ``mpirun -n P python -m mpi4py tests/mpi/<worker>.py``:
an uncaught exception on any rank aborts the whole job (fail fast).  Each
worker ends with ``finish(name, cases)``, which prints the
``RINGCOMM-WORKER-OK`` line the pytest side waits for.

Data: every rank generates every rank's input from (seed, case, rank), so each
rank computes the reference result locally, without communication.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import zlib

import numpy as np
from mpi4py import MPI

import ringcomm



def get_torch():
    """torch, imported on first use (it costs seconds per rank on a busy host)."""
    import torch
    return torch


def _is_tensor(x):
    t = sys.modules.get("torch")
    return t is not None and isinstance(x, t.Tensor)

WORLD = MPI.COMM_WORLD
RANK = WORLD.Get_rank()
SIZE = WORLD.Get_size()

# Simulated hosts (tests/test_multihost.py): RINGCOMM_TEST_HOSTS="a,a,b,b"
# gives rank r the host identity hosts[r] (RINGCOMM_HOST_ID, read when a
# communicator is made), so ranks on one machine talk as if on several.
# Namespace hosts (tests/cluster/, RINGCOMM_TEST_CLUSTER=1): the same variable
# only describes where the ranks are (hostnames h0, h1, ...); each rank checks
# it runs there and the host identity stays the real one (no RINGCOMM_HOST_ID).
if os.environ.get("RINGCOMM_TEST_CLUSTER"):
    import socket
    _want = os.environ.get("RINGCOMM_TEST_HOSTS", "").split(",")
    if "RINGCOMM_HOST_ID" in os.environ or len(_want) != SIZE or \
            socket.gethostname() != _want[RANK]:
        raise SystemExit(f"rank {RANK}: runs on host {socket.gethostname()!r}, "
                         f"RINGCOMM_TEST_HOSTS={_want} (size {SIZE}), RINGCOMM_HOST_ID="
                         f"{os.environ.get('RINGCOMM_HOST_ID')!r}: not the cluster layout")
elif os.environ.get("RINGCOMM_TEST_HOSTS"):
    os.environ["RINGCOMM_HOST_ID"] = os.environ["RINGCOMM_TEST_HOSTS"].split(",")[RANK]

# Fake topologies (tests/test_topology.py): with RINGCOMM_SYSFS_ROOT naming
# a fake sysfs tree, RINGCOMM_TEST_TOPO_CPUS="0;1;2;3" gives rank r the CPU
# list field r for its topology (RINGCOMM_TOPO_CPUS: CPUs this 2-CPU machine
# has not), RINGCOMM_TEST_PIN="0;1;0;1" pins rank r to real CPUs (its
# affinity mask then says where it is), both before any communicator.
if os.environ.get("RINGCOMM_TEST_TOPO_CPUS"):
    os.environ["RINGCOMM_TOPO_CPUS"] = os.environ["RINGCOMM_TEST_TOPO_CPUS"].split(";")[RANK]
if os.environ.get("RINGCOMM_TEST_PIN"):
    os.sched_setaffinity(0, {int(c) for c in
                             os.environ["RINGCOMM_TEST_PIN"].split(";")[RANK].split(",")})

FLOATS = ("float32", "float64", "float16", "bfloat16")
INTS = ("int8", "uint8", "int32", "int64")
DTYPES = FLOATS + INTS
FLOAT_OPS = ("sum", "prod", "min", "max", "avg")
INT_OPS = ("sum", "prod", "min", "max", "band", "bor", "bxor")
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps),
       "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}

MPI_DTYPES = ("float32", "float64", "int8", "uint8", "int32", "int64")
MPI_OPS = {"sum": MPI.SUM, "prod": MPI.PROD, "min": MPI.MIN, "max": MPI.MAX,
           "band": MPI.BAND, "bor": MPI.BOR, "bxor": MPI.BXOR, "avg": MPI.SUM}

NP_REDUCE = {"sum": np.add, "avg": np.add, "prod": np.multiply, "min": np.minimum,
             "max": np.maximum, "band": np.bitwise_and, "bor": np.bitwise_or,
             "bxor": np.bitwise_xor}



def torch_dtype(dtype):
    return getattr(get_torch(), dtype)


def log(*a):
    print(f"[rank {RANK}/{SIZE}]", *a, file=sys.stderr, flush=True)


def finish(name, cases):
    """Final barrier (through MPI), then the line the pytest side checks."""
    WORLD.Barrier()
    print(f"RINGCOMM-WORKER-OK {name} rank={RANK} size={SIZE} cases={cases}", flush=True)


def ops_for(dtype):
    return FLOAT_OPS if dtype in FLOATS else INT_OPS


def storage_dtype(dtype):
    """numpy dtype holding the values (bfloat16 values live in float32)."""
    return np.dtype(np.float32) if dtype == "bfloat16" else np.dtype(dtype)


def round_bf16(x):
    torch = get_torch()
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(
        torch.bfloat16).float().numpy()


def case_seed(*parts):
    return zlib.crc32(repr(parts).encode())


def gen_rank_data(dtype, op, count, seed, rank, nranks, nonfinite=True):
    """Input of `rank` (storage dtype), seeded by (seed, rank)."""
    rng = np.random.default_rng([seed, rank])
    if dtype in INTS:
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=count, dtype=dtype, endpoint=True)
    if op == "prod":
        x = rng.uniform(0.5, 2.0, count) * rng.choice([-1.0, 1.0], count)
    else:
        # mixed magnitudes, so that the reduction order shows in the bits
        lo, hi = (-2, 3) if dtype in ("float16", "bfloat16") else (-4, 5)
        x = rng.standard_normal(count) * 10.0 ** rng.integers(lo, hi, count)
    if nonfinite and op in ("sum", "avg", "min", "max") and count >= 8:
        last = nranks - 1
        if rank == 0:
            x[0] = np.nan
            x[2] = np.inf
            x[5] = np.inf
        if rank == last:
            x[1] = np.inf
            x[2] = -np.inf
        if rank == 1 % nranks:
            x[3] = -np.inf
        if rank == nranks // 2:
            x[5] = np.nan
    if dtype == "bfloat16":
        return round_bf16(x)
    return x.astype(dtype)


def reference(dtype, op, datas, nranks):
    """(ref, absum): exact for integers/min/max, float64 for float sums."""
    fn = NP_REDUCE[op]
    if dtype in INTS:
        return functools.reduce(fn, [d.copy() for d in datas]), None
    xs = [d.astype(np.float64) for d in datas]
    with np.errstate(all="ignore"):
        ref = functools.reduce(fn, xs)
        if op == "avg":
            ref = ref / nranks
        absum = functools.reduce(np.add, [np.abs(x) for x in xs])
    return ref, absum


def check_values(dtype, op, got, ref, absum, nranks, what, factor=1.0):
    """Compare a result (as float64 or integer numpy array) with the reference.

    Integers, min and max: exact (NaN where the reference has NaN).  Floating
    sum/avg: |got - ref| <= factor*(P+2)*eps*sum|x_r|; prod: relative bound;
    non-finite reference values must match exactly (NaN <-> NaN, +-inf)."""
    if got.shape != ref.shape:
        raise AssertionError(f"{what}: shape {got.shape} != {ref.shape}")
    if dtype in INTS:
        if not np.array_equal(got, ref):
            bad = np.flatnonzero(got != ref)
            raise AssertionError(f"{what}: {bad.size} wrong elements, first at {bad[:5]}: "
                                 f"got {got[bad[:5]]} expected {ref[bad[:5]]}")
        return
    got = got.astype(np.float64)
    nan_ref, nan_got = np.isnan(ref), np.isnan(got)
    if not np.array_equal(nan_ref, nan_got):
        bad = np.flatnonzero(nan_ref != nan_got)
        raise AssertionError(f"{what}: NaN mismatch at {bad[:5]}: got {got[bad[:5]]} "
                             f"expected {ref[bad[:5]]}")
    if op in ("min", "max"):
        ok = np.equal(got, ref) | nan_ref
    else:
        fin = np.isfinite(ref)
        with np.errstate(all="ignore"):
            err = np.abs(got - ref)
            if op == "prod":
                bound = factor * (nranks + 2) * EPS[dtype] * np.abs(ref)
            else:
                bound = factor * (nranks + 2) * EPS[dtype] * absum
        ok = np.where(fin, err <= bound, (got == ref) | nan_ref)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        raise AssertionError(f"{what}: {bad.size} elements out of tolerance, first at "
                             f"{bad[:5]}: got {got[bad[:5]]} expected {ref[bad[:5]]}")


# ---------------------------------------------------------------------------
# containers
# ---------------------------------------------------------------------------

def make_buf(kind, dtype, arr):
    """A fresh buffer holding arr: kind is numpy, torch or memoryview; "-off"
    kinds start one element into a larger allocation (misaligned for SIMD)."""
    if kind.endswith("-off"):
        whole = make_buf(kind[:-4], dtype, np.concatenate([arr[:1], arr]))
        return whole[1:]
    if dtype == "bfloat16" or kind == "torch":
        torch = get_torch()
        t = torch.from_numpy(np.array(arr, copy=True))
        return t.to(torch.bfloat16) if dtype == "bfloat16" else t
    if kind == "numpy":
        return np.array(arr, copy=True)
    if kind == "memoryview":
        return memoryview(np.array(arr, copy=True))
    raise ValueError(kind)


def make_out(kind, dtype, count):
    if kind.endswith("-off"):
        return make_out(kind[:-4], dtype, count + 1)[1:]
    if dtype == "bfloat16" or kind == "torch":
        return get_torch().full((count,), 7, dtype=torch_dtype(dtype))
    arr = np.full(count, 7, dtype=dtype)
    return memoryview(arr) if kind == "memoryview" else arr


def as_numpy(buf, dtype):
    """Values of a buffer as numpy (bfloat16 -> float32, exact)."""
    if _is_tensor(buf):
        return (buf.float() if dtype == "bfloat16" else buf).numpy().copy()
    return np.frombuffer(bytes(memoryview(buf)), dtype=dtype) if isinstance(buf, memoryview) \
        else np.array(buf, copy=True)


def raw_bytes(buf):
    if _is_tensor(buf):
        return buf.contiguous().view(get_torch().uint8).numpy().tobytes() if buf.numel() else b""
    return memoryview(buf).tobytes()


def digest(b):
    return hashlib.sha1(b).hexdigest()[:16]


def check_same_on_all_ranks(records, what="results"):
    """records: list of (key, digest).  Every rank must hold the same list."""
    allrec = WORLD.allgather(records)
    for r, rec in enumerate(allrec):
        if len(rec) != len(records):
            raise AssertionError(f"rank {r} recorded {len(rec)} {what}, rank {RANK} {len(records)}")
        for (k0, d0), (k1, d1) in zip(records, rec):
            if k0 != k1:
                raise AssertionError(f"case order differs: rank {RANK} {k0} vs rank {r} {k1}")
            if d0 != d1:
                raise AssertionError(f"{what} not bitwise identical across ranks: case {k0}: "
                                     f"rank {RANK} {d0} vs rank {r} {d1}")


def world_comm(timeout=None):
    return ringcomm.Communicator.from_mpi(WORLD, timeout=timeout)
