"""Reduce benchmarks: ringcomm next to mpi4py's Reduce.

    mpirun -n 2 python -m pytest benches/test_bench_reduce.py --benchmark-only
    mpirun -n 4 python -m pytest benches/test_bench_reduce.py --benchmark-only \\
        --coll-sizes=8,1M --coll-algorithms=all --benchmark-json=reduce.json
    mpirun -n 4 python -m pytest benches/test_bench_reduce.py --benchmark-only --coll-root=3

Grouped by size: one ringcomm row per algorithm of
``ringcomm.algorithms("reduce")`` plus auto, and the ``mpi4py`` row.
float32; sum, out of place, checked at the root.  Times are per call (rounds
of back-to-back calls between MPI barriers, see conftest.py); algbw/busbw
(nccl-tests, busbw = algbw * 1) are in ``extra_info``.  For a table with
ratios and gloo: ``python -m ringcomm.bench -C reduce --peers mpi,gloo``.
"""

import pytest

MPI = pytest.importorskip("mpi4py.MPI")
ringcomm = pytest.importorskip("ringcomm")

from _collbench import generate, run  # noqa: E402

NAME = "reduce"


def pytest_generate_tests(metafunc):
    generate(metafunc, NAME)


def test_ringcomm_reduce(benchmark, mpi_comm, rc_comm, size, algorithm, root):
    run(benchmark, NAME, "ringcomm", mpi_comm, rc_comm, size, algorithm=algorithm, root=root)


def test_mpi4py_reduce(benchmark, mpi_comm, size, root):
    run(benchmark, NAME, "mpi", mpi_comm, None, size, root=root)
