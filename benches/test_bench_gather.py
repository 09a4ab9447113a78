"""Gather benchmarks: ringcomm next to mpi4py's Gather.

    mpirun -n 2 python -m pytest benches/test_bench_gather.py --benchmark-only
    mpirun -n 4 python -m pytest benches/test_bench_gather.py --benchmark-only \\
        --coll-sizes=8,1M --coll-algorithms=all --benchmark-json=gather.json
    mpirun -n 4 python -m pytest benches/test_bench_gather.py --benchmark-only --coll-root=3

Grouped by size: one ringcomm row per algorithm of
``ringcomm.algorithms("gather")`` plus auto, and the ``mpi4py`` row.
float32; the size is the root's receive buffer (p blocks), as nccl-tests
counts it; checked at the root.  Times are per call (rounds of back-to-back
calls between MPI barriers, see conftest.py); algbw/busbw (nccl-tests, busbw
= algbw * (p-1)/p) are in ``extra_info``.  For a table with ratios and gloo:
``python -m ringcomm.bench -C gather --peers mpi,gloo``.
"""

import pytest

MPI = pytest.importorskip("mpi4py.MPI")
ringcomm = pytest.importorskip("ringcomm")

from _collbench import generate, run  # noqa: E402

NAME = "gather"


def pytest_generate_tests(metafunc):
    generate(metafunc, NAME)


def test_ringcomm_gather(benchmark, mpi_comm, rc_comm, size, algorithm, root):
    run(benchmark, NAME, "ringcomm", mpi_comm, rc_comm, size, algorithm=algorithm, root=root)


def test_mpi4py_gather(benchmark, mpi_comm, size, root):
    run(benchmark, NAME, "mpi", mpi_comm, None, size, root=root)
