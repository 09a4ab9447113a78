"""All-reduce benchmarks: ringcomm's algorithms next to mpi4py's Allreduce.

Run on every rank under the launcher (not part of ``make test``: pytest's
test run collects only tests/)::

    mpirun -n 2 python -m pytest benches/ --benchmark-only
    mpirun -n 4 python -m pytest benches/ --benchmark-only \\
        --benchmark-columns=min,median,mean,stddev,rounds,iterations
    mpirun -n 2 python -m pytest benches/ --benchmark-only \\
        --allreduce-sizes=8,1M --allreduce-algorithms=ring,tree \\
        --benchmark-json=allreduce.json

The table is grouped by size ("allreduce 64KiB ..."): in each group the
ringcomm rows (one per algorithm: ring, tree, direct, ..., auto) and the
``mpi4py`` row sit side by side.  Times are per call (a round of
``iterations`` back-to-back float32 all-reduces, out of place, divided by
``iterations``), measured between two MPI barriers so a round ends when the
slowest rank is done (see conftest.py).  algbw/busbw in GB/s (nccl-tests
definitions, busbw = algbw * 2(p-1)/p) are in each benchmark's
``extra_info`` (``--benchmark-json``).  For a quick table with ratios use
``python -m ringcomm.bench`` instead.
"""

import numpy as np
import pytest

MPI = pytest.importorskip("mpi4py.MPI")
ringcomm = pytest.importorskip("ringcomm")

from ringcomm.bench import format_size, parse_size  # noqa: E402


def _sizes(config):
    return [parse_size(s) for s in config.getoption("--allreduce-sizes").split(",") if s.strip()]


def _algorithms(config):
    arg = config.getoption("--allreduce-algorithms")
    if arg.strip().lower() == "all":
        names = list(ringcomm.algorithms())
        return [a for a in names if a != "auto"] + ["auto"]
    return [a.strip() for a in arg.split(",") if a.strip()]


def _label(size):
    text = format_size(size)
    return text + ("iB" if text[-1] in "KMG" else "B")


def pytest_generate_tests(metafunc):
    if "size" in metafunc.fixturenames:
        sizes = _sizes(metafunc.config)
        metafunc.parametrize("size", sizes, ids=[_label(s) for s in sizes])
    if "algorithm" in metafunc.fixturenames:
        metafunc.parametrize("algorithm", _algorithms(metafunc.config))


def _plan(size):
    """(rounds, iterations per round): the same on every rank; ~<= 1 s per benchmark."""
    iterations = max(1, min(100, (1 << 20) // max(size, 1)))
    rounds = 10 if size < (4 << 20) else 5
    return rounds, iterations


def _buffers(comm_rank, size):
    count = max(1, size // 4)
    send = np.full(count, comm_rank + 1, dtype=np.float32)
    send[::7] += 2.0                       # not all equal, still integer-valued
    recv = np.empty_like(send)
    return send, recv


def _expected(count, p):
    exp = np.full(count, p * (p + 1) / 2, dtype=np.float32)
    exp[::7] += 2.0 * p
    return exp


def _run(benchmark, fn, size, p, recv):
    rounds, iterations = _plan(size)
    benchmark.group = f"allreduce {_label(size)} float32, {p} ranks"
    recv.fill(0)
    benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=1)
    np.testing.assert_array_equal(recv, _expected(recv.size, p))
    t = benchmark.stats.stats.median if benchmark.stats is not None else None
    if t:
        algbw = recv.size * 4 / t / 1e9
        benchmark.extra_info.update(
            size_bytes=recv.size * 4, ranks=p, time_us=t * 1e6,
            algbw_GBps=algbw, busbw_GBps=algbw * 2 * (p - 1) / p)


def test_ringcomm_allreduce(benchmark, rc_comm, size, algorithm):
    send, recv = _buffers(rc_comm.rank, size)
    benchmark.extra_info["algorithm"] = algorithm
    _run(benchmark, lambda: rc_comm.allreduce(send, out=recv, op="sum", algorithm=algorithm),
         size, rc_comm.size, recv)


def test_mpi4py_allreduce(benchmark, mpi_comm, size):
    send, recv = _buffers(mpi_comm.Get_rank(), size)
    benchmark.extra_info["algorithm"] = "mpi4py Allreduce"
    _run(benchmark, lambda: mpi_comm.Allreduce(send, recv, op=MPI.SUM), size, mpi_comm.Get_size(), recv)
