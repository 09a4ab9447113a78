"""Multi-process tests of point-to-point, asynchronous operations and split
(workers in tests/mpi/, launched by the run_mpi fixture of conftest.py)."""

import pytest

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(600)]


@pytest.mark.parametrize("nprocs", [1, 2, 3, 4])
def test_p2p(run_mpi, nprocs):
    """Ring shift (every dtype, counts 0..many chunks), ping-pong, 40 tags received in reverse, ANY_SOURCE, self-send, p2p beside an all-reduce."""
    run_mpi(nprocs, "p2p.py")


@pytest.mark.parametrize("nprocs", [2, 4])
def test_p2p_small_chunks(run_mpi, nprocs):
    """The same with 256-byte chunks, 2 slots and no single copy: every message streams through many chunks."""
    run_mpi(nprocs, "p2p.py", "--large", "100003",
            env={"RINGCOMM_CHUNK_BYTES": "256", "RINGCOMM_NSLOTS": "2", "RINGCOMM_CMA_MIN": "0"})


@pytest.mark.parametrize("nprocs", [3, 5])
def test_p2p_two_cells(run_mpi, nprocs):
    """Two shared-memory cells per rank and lane, no single copy: messages to
    several peers at once starve the sender's pool, and the receivers drain it."""
    run_mpi(nprocs, "p2p.py", "--large", "20011",
            env={"RINGCOMM_CHUNK_BYTES": "256", "RINGCOMM_NSLOTS": "2", "RINGCOMM_CMA_MIN": "0",
                 "RINGCOMM_SHM_CELLS": "2", "RINGCOMM_SHM_P2P_CELLS": "2"})


@pytest.mark.parametrize("nprocs", [2, 3])
def test_p2p_all_by_address(run_mpi, nprocs):
    """RINGCOMM_CMA_MIN=1: every non-empty message is read straight from the sender's buffer (process_vm_readv), incl. unexpected ones."""
    run_mpi(nprocs, "p2p.py", env={"RINGCOMM_CMA_MIN": "1"})


@pytest.mark.parametrize("mode", ["--bad-args", "--mismatch", "--timeout"])
def test_p2p_errors(run_mpi, mode):
    """Bad arguments raise before communicating; count mismatch and a missing sender raise on time, naming ranks and tag."""
    run_mpi(3, "p2p_errors.py", mode, timeout=120)


@pytest.mark.parametrize("nprocs", [1, 2, 3, 4])
def test_async(run_mpi, nprocs):
    """Requests waited out of order, test(), wait(timeout), GIL free during wait, dropped requests, a second thread gets an error, close() with pending requests, two communicators in flight."""
    run_mpi(nprocs, "async_ops.py")


@pytest.mark.parametrize("nprocs", [1, 2, 3, 4])
def test_split(run_mpi, nprocs):
    """split() matches MPI Comm_split: odd/even, reversed keys, color None, nested, interleaved use."""
    run_mpi(nprocs, "split.py")
