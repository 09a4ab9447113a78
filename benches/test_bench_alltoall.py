"""All-to-all benchmarks: ringcomm next to mpi4py's Alltoall.

    mpirun -n 2 python -m pytest benches/test_bench_alltoall.py --benchmark-only
    mpirun -n 4 python -m pytest benches/test_bench_alltoall.py --benchmark-only \\
        --coll-sizes=8,1M --coll-algorithms=all --benchmark-json=alltoall.json

Grouped by size: one ringcomm row per algorithm of
``ringcomm.algorithms("alltoall")`` plus auto, and the ``mpi4py`` row.
float32; the size is the whole send buffer (p blocks), as nccl-tests counts
it.  Times are per call (rounds of back-to-back calls between MPI barriers,
see conftest.py); algbw/busbw (nccl-tests, busbw = algbw * (p-1)/p) are in
``extra_info``.  For a table with ratios and gloo: ``python -m
ringcomm.bench -C alltoall --peers mpi,gloo``.
"""

import pytest

MPI = pytest.importorskip("mpi4py.MPI")
ringcomm = pytest.importorskip("ringcomm")

from _collbench import generate, run  # noqa: E402

NAME = "alltoall"


def pytest_generate_tests(metafunc):
    generate(metafunc, NAME)


def test_ringcomm_alltoall(benchmark, mpi_comm, rc_comm, size, algorithm):
    run(benchmark, NAME, "ringcomm", mpi_comm, rc_comm, size, algorithm=algorithm)


def test_mpi4py_alltoall(benchmark, mpi_comm, size):
    run(benchmark, NAME, "mpi", mpi_comm, None, size)
