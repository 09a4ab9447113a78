"""comm.shrink() and failed_ranks() after a rank is SIGKILLed (worker: tests/mpi/shrink.py)."""

import re

import pytest

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(300)]


def test_shrink_after_kill_shm(run_mpi):
    """3 ranks over shared memory: rank 2 dies after 4 checked all-reduces; ranks 0 and 1
    see the loss, shrink to 2 ranks, name rank 2 as failed and all-reduce (checked against
    numpy) on the new communicator.  conftest's autouse no_shm_leak fails the test if a
    /dev/shm/ringcomm-* segment is left (launch_mpi removes MPICH's orphans of the dead
    rank)."""
    # hydra SIGKILLs the others when a rank dies by a signal, even with
    # -disable-auto-cleanup: a shell per rank turns the death into exit status
    # 137; the shell ignores the SIGUSR1 hydra then sends (else it dies of it)
    res = run_mpi(3, "shrink.py", "kill", 2, 4, env={"RINGCOMM_TRANSPORT": "shm"},
                  mpirun_args=("-disable-auto-cleanup",),
                  rank_prefix=("sh", "-c", 'trap "" USR1; "$0" "$@"'), timeout=200, expect_success=False)
    ok = sorted(int(r) for _, r, _, _ in res.ok_lines())
    assert ok == [0, 1], res.output
    assert all(int(c) == 3 for *_, c in res.ok_lines()), res.output
    assert len(re.findall(r"SHRINK-WORKER-BEFORE rank=\d calls=4", res.output)) == 3, res.output
    raised = re.findall(r"SHRINK-WORKER-RAISED rank=(\d) (RC_ERR_PEER_LOST|RC_ERR_TIMEOUT)", res.output)
    assert sorted(int(r) for r, _ in raised) == [0, 1], res.output
    assert res.returncode != 0, "mpirun reported success although rank 2 was SIGKILLed"
