"""Point-to-point benchmarks: ringcomm send/recv next to mpi4py's Send/Recv.

    mpirun -n 2 python -m pytest benches/test_bench_sendrecv.py --benchmark-only

An OSU-style ping-pong between ranks 0 and 1 (any other rank only takes part
in the barriers around each round): rank 0 sends, rank 1 receives and sends
its own message back, rank 0 receives.  Two groups: latency (8 B messages)
and bandwidth (16 MiB messages), each with a ringcomm and an ``mpi4py`` row.
pytest-benchmark's time columns are per ROUND TRIP; ``extra_info`` holds the
one-way numbers (``time_us`` = latency = half the round trip,
``algbw_GBps`` = ``busbw_GBps`` = size / that) and ``round_trip_us``.  The
received message is checked after the timed calls.  For a sweep over sizes
with ratios and gloo: ``python -m ringcomm.bench -C sendrecv --peers mpi,gloo``.
"""

import pytest

MPI = pytest.importorskip("mpi4py.MPI")
ringcomm = pytest.importorskip("ringcomm")

from _collbench import label, run  # noqa: E402

NAME = "sendrecv"
CASES = {"latency": 8, "bandwidth": 16 << 20}


def _group(case, p):
    return f"sendrecv {case} {label(CASES[case])} float32, ranks 0 <-> 1 of {p} (time = round trip)"


@pytest.mark.parametrize("case", list(CASES))
def test_ringcomm_sendrecv(benchmark, mpi_comm, rc_comm, case):
    run(benchmark, NAME, "ringcomm", mpi_comm, rc_comm, CASES[case], group=_group(case, mpi_comm.Get_size()))


@pytest.mark.parametrize("case", list(CASES))
def test_mpi4py_sendrecv(benchmark, mpi_comm, case):
    run(benchmark, NAME, "mpi", mpi_comm, None, CASES[case], group=_group(case, mpi_comm.Get_size()))
