"""Soak under mpirun: tens of thousands of small all-reduces (a quarter of
them async, through the progress thread), 16 MiB all-reduces and 100
communicator create/close cycles must not leak.  After warm-up, at every
sample, per rank: fds, threads and mapped ringcomm segments stay at their
counts (and drop back when everything is closed), RSS grows by at most
benches/soak.py's DEFAULT_RSS_BOUND_MIB (8 MiB) and the malloc heap by at
most DEFAULT_HEAP_BOUND_KIB (64 KiB); no /dev/shm/ringcomm-* entry is left.
Also: close() twice is harmless, a call after close() raises RingcommError.
The full-length soak is `mpirun -n 2 python benches/soak.py` (README)."""

import pytest

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(400)]


@pytest.mark.parametrize("nprocs", [2, 4])
def test_soak_no_leaks(run_mpi, nprocs):
    """20000 x 8 B (async every 4th), 100 x 16 MiB, 100 create/close cycles: no fd/thread/shm leak, RSS and heap within bounds."""
    res = run_mpi(nprocs, "soak.py", "--small", "20000", "--large", "100", "--comms", "100",
                  timeout=300)
    assert "growth warm-up->max" in res.output, res.output
