"""Reliability: a killed peer, NaN checks, resource hygiene under many calls,
and hostile bytes in the shared-memory protocol.  Every test has a hard
timeout so that a regression fails instead of hanging CI."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

STANDALONE = Path(__file__).parent / "standalone"


def launch_standalone(nprocs, script, *args, env=None, tmp_path, timeout=60):
    """Start nprocs `python tests/standalone/<script>` processes (RANK,
    WORLD_SIZE set; bootstrap through files in tmp_path); returns
    [(returncode, output)] per rank.  Processes still running after
    `timeout` seconds are killed and fail the test."""
    procs = []
    for r in range(nprocs):
        e = dict(os.environ, RANK=str(r), WORLD_SIZE=str(nprocs), RINGCOMM_TEST_DIR=str(tmp_path),
                 PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
        e.pop("RINGCOMM_TIMEOUT", None)
        procs.append(subprocess.Popen([sys.executable, str(STANDALONE / script), *map(str, args)],
                                      env=e, cwd=str(STANDALONE), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, start_new_session=True))
    results, hung = [], []
    for r, p in enumerate(procs):
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
            hung.append(r)
        results.append((p.returncode, out.decode(errors="replace")))
    if hung:
        pytest.fail(f"ranks {hung} still ran after {timeout} s:\n" +
                    "\n".join(f"--- rank {r} (exit {c}) ---\n{o}" for r, (c, o) in enumerate(results)),
                    pytrace=False)
    return results

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(300)]

# Operations during which the last rank is SIGKILLed.
LOSS_OPS = ["allreduce-ring", "allreduce-tree", "allreduce-direct", "allreduce-ll", "async",
            "broadcast",
            "reduce", "allgather", "reduce_scatter", "alltoall", "gather", "scatter",
            "barrier", "recv", "send"]


@pytest.mark.parametrize("op", LOSS_OPS)
@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_peer_killed(tmp_path, nprocs, op):
    """Every survivor raises RC_ERR_PEER_LOST naming the killed rank within 10 s; later calls raise; close() works; no /dev/shm left."""
    results = launch_standalone(nprocs, "peer_lost.py", op, tmp_path=tmp_path)
    report = "\n".join(f"--- rank {r} (exit {c}) ---\n{o}" for r, (c, o) in enumerate(results))
    assert results[-1][0] == -signal.SIGKILL, report
    for r, (code, out) in enumerate(results[:-1]):
        assert code == 0 and f"PEER-LOST-OK rank={r} op={op}" in out, report


@pytest.mark.parametrize("nprocs", [1, 3])
def test_check_nan(run_mpi, nprocs):
    """RINGCOMM_CHECK_NAN=1: NaN/inf input raises on its rank before communicating and on the peers, for every float dtype."""
    run_mpi(nprocs, "check_nan.py", env={"RINGCOMM_CHECK_NAN": "1"}, timeout=120)
