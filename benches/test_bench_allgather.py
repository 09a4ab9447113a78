"""All-gather benchmarks: ringcomm next to mpi4py's Allgather.

    mpirun -n 2 python -m pytest benches/test_bench_allgather.py --benchmark-only
    mpirun -n 4 python -m pytest benches/test_bench_allgather.py --benchmark-only \\
        --coll-sizes=8,1M --coll-algorithms=all --benchmark-json=allgather.json

Grouped by size: one ringcomm row per algorithm of
``ringcomm.algorithms("allgather")`` plus auto, and the ``mpi4py`` row.
float32; the size is the whole receive buffer (p blocks), as nccl-tests
counts it.  Times are per call (rounds of back-to-back calls between MPI
barriers, see conftest.py); algbw/busbw (nccl-tests, busbw = algbw *
(p-1)/p) are in ``extra_info``.  For a table with ratios and gloo: ``python
-m ringcomm.bench -C allgather --peers mpi,gloo``.
"""

import pytest

MPI = pytest.importorskip("mpi4py.MPI")
ringcomm = pytest.importorskip("ringcomm")

from _collbench import generate, run  # noqa: E402

NAME = "allgather"


def pytest_generate_tests(metafunc):
    generate(metafunc, NAME)


def test_ringcomm_allgather(benchmark, mpi_comm, rc_comm, size, algorithm):
    run(benchmark, NAME, "ringcomm", mpi_comm, rc_comm, size, algorithm=algorithm)


def test_mpi4py_allgather(benchmark, mpi_comm, size):
    run(benchmark, NAME, "mpi", mpi_comm, None, size)
