"""Broadcast, reduce, allgather, reduce_scatter, alltoall, gather, scatter and
barrier: multi-process tests launching tests/mpi/coll_sweep.py under mpirun.

The worker does the checking (numpy reference on seeded per-rank data, mpi4py's
own collectives as a second oracle, bitwise determinism of float reductions,
inputs left alone, in-place and out-of-place forms, numpy/torch/memoryview
buffers; see its docstring) and aborts the whole job on the first failure.
What each job covers is in its docstring; together, at 1, 2, 3 and 4 ranks:

* every collective x dtype (bool for the copy collectives) x op x count
  (0, 1, 3, P-1, 17, 1000) x every root, each case running every algorithm
  in ringcomm.algorithms(coll) plus "auto" (at one root, the others with a
  rotating algorithm, so every algorithm x root pair recurs across cases);
* count 100003 (not divisible by 2, 3 or 4) with each collective, dtype and
  op, algorithms/roots/variants round robin;
* RINGCOMM_CHUNK_BYTES=256 so small buffers cross many pipeline chunks, and
  RINGCOMM_NSLOTS=2 so the slot ring wraps many times;
* the worker asserts that its plan ran every algorithm, root and buffer
  variant it was given, so a change to the rotation cannot silently drop one;
* bad arguments on every rank raise before communicating, naming the argument;
* async_op=True requests waited in shuffled orders or polled with test().

Runtime budget: the whole file under ~4 minutes on 2 cores (4 ranks
oversubscribe); about 2m45s measured with a load average of 6 from other jobs.
Most of a job's time is importing torch in every rank, hence few, broad jobs.
"""

import pytest

import ringcomm

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(600)]

ALL_P = [1, 2, 3, 4]
COLLS = ("broadcast", "reduce", "allgather", "reduce_scatter", "alltoall", "gather", "scatter")

# The algorithms each collective documents (its table may hold more).
DOCUMENTED = {
    "broadcast": {"chain", "binomial", "scatter_allgather"},
    "reduce": {"rs_gather", "binomial"},
    "allgather": {"ring", "direct"},
    "reduce_scatter": {"ring", "direct"},
    "alltoall": {"pairwise"},
    "gather": set(),
    "scatter": set(),
}


@pytest.mark.parametrize("coll", COLLS)
def test_algorithm_tables(coll):
    """ringcomm.algorithms(coll): a non-empty list of distinct names holding the
    documented algorithms and not "auto" (the sweeps run every name listed)."""
    names = ringcomm.algorithms(coll)
    assert isinstance(names, (list, tuple)) and len(names) > 0, names
    assert all(isinstance(n, str) and n for n in names), names
    assert len(set(names)) == len(names), f"duplicates in {names}"
    assert "auto" not in names, names
    assert DOCUMENTED[coll] <= set(names), f"{coll}: {names} lacks {DOCUMENTED[coll]}"


def test_algorithm_tables_unknown_collective():
    """An unknown collective name is a ValueError naming it."""
    with pytest.raises(ValueError, match="allgatherv"):
        ringcomm.algorithms("allgatherv")


@pytest.mark.parametrize("nprocs", ALL_P)
def test_coll_sweep_small_counts(run_mpi, nprocs):
    """Every collective x dtype x op x count (0,1,3,P-1,17,1000): every
    algorithm (+auto) at one root and every other root once (--plan cover, all
    algorithm x root pairs across cases); variants rotate (numpy/torch/
    memoryview, in/out of place, misaligned, op as string/ReduceOp); vs numpy
    and mpi4py; float reductions called twice for determinism."""
    run_mpi(nprocs, "coll_sweep.py")


@pytest.mark.parametrize("nprocs", ALL_P)
def test_coll_large_count(run_mpi, nprocs):
    """Count 100003 per block: every collective x dtype, two ops per dtype
    (every op covered), algorithm/root/variant round robin; vs numpy and mpi4py."""
    run_mpi(nprocs, "coll_sweep.py", "--counts", "100003", "--rotate", "--ops-per-dtype", "2")


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_coll_many_chunks(run_mpi, nprocs):
    """RINGCOMM_CHUNK_BYTES=256: counts 1000 and 4099 per block cross tens to
    hundreds of pipeline chunks; every collective x dtype x op,
    algorithm/root/variant round robin."""
    run_mpi(nprocs, "coll_sweep.py", "--counts", "1000,4099", "--rotate",
            "--expect-chunk-bytes", "256",
            env={"RINGCOMM_CHUNK_BYTES": "256"})


@pytest.mark.parametrize("nprocs", [3, 4])
def test_coll_two_slots(run_mpi, nprocs):
    """RINGCOMM_NSLOTS=2 with 256-byte chunks: the two-slot ring wraps hundreds
    of times (chains, trees and rings with a non-power-of-two and an
    oversubscribed rank count); every collective, algorithm and root, three
    dtypes, sum and max."""
    run_mpi(nprocs, "coll_sweep.py", "--counts", "3001", "--dtypes", "float32,bfloat16,int8",
            "--ops", "sum,max", "--variants", "np,torch-in,np-in", "--expect-chunk-bytes", "256",
            env={"RINGCOMM_CHUNK_BYTES": "256", "RINGCOMM_NSLOTS": "2"})


@pytest.mark.parametrize("nprocs", ALL_P)
def test_coll_errors_and_async(run_mpi, nprocs):
    """Bad arguments (sizes, roots, dtypes, ops, bool reductions, algorithm
    names, overlaps, missing root buffers) raise ValueError/TypeError naming the
    argument on whichever rank makes them, before communicating; then several
    async_op=True collectives waited in a shuffled order or polled with test()."""
    run_mpi(nprocs, "coll_sweep.py", "--mode", "errors,async")


TWO_CELLS = {"RINGCOMM_CHUNK_BYTES": "256", "RINGCOMM_NSLOTS": "2",
             "RINGCOMM_SHM_CELLS": "2", "RINGCOMM_SHM_P2P_CELLS": "2"}


@pytest.mark.parametrize("nprocs", [4, 5])
def test_coll_two_cells(run_mpi, nprocs):
    """Two shared-memory cells per rank and lane, FIFOs of 2, 256-byte chunks:
    fewer cells than a direct algorithm or all-to-all has peers, so senders
    starve for cells and the receivers copy their messages out and give the
    cells back (csrc/transport/shm.h); every collective, algorithm and root,
    three dtypes, vs numpy and mpi4py."""
    run_mpi(nprocs, "coll_sweep.py", "--counts", "1,777", "--dtypes", "float32,bfloat16,int8",
            "--ops", "sum,max", "--variants", "np,torch-in,np-in", "--expect-chunk-bytes", "256",
            env=TWO_CELLS)
