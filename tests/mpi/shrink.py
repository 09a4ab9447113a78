"""shrink: a rank dies (SIGKILL) between all-reduces; the others shrink.

Cases (argv[1]):
  kill V N    over shared memory only (RINGCOMM_TRANSPORT=shm, set by the
              test): N checked all-reduces on every rank, then rank V
              SIGKILLs itself; the others' next all-reduce raises
              RC_ERR_PEER_LOST (or RC_ERR_TIMEOUT), they call shrink(), check
              failed_ranks() == [V] and the new communicator's rank/size, and
              run checked all-reduces on it.

MPI only launches and bootstraps (mpirun -disable-auto-cleanup, so hydra
lets the others live on): after the death nothing calls MPI again, and the
survivors leave with os._exit (MPI_Finalize would wait for the dead rank).
Hydra's proxy SIGKILLs the other ranks' process groups when a rank dies
*by a signal*, -disable-auto-cleanup or not (strace: kill(-pgid, SIGKILL)
from hydra_pmi_proxy); an exit status, even 137, leaves them alone.  So the
test starts every rank under a shell that waits for python and exits with
its status and ignores the SIGUSR1 hydra then sends (tests/test_shrink.py).
"""

import os
import signal
import sys

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD

COUNT = 1000


def data(seed, case, rank):
    return np.random.default_rng([seed, case, rank]).standard_normal(COUNT)


def case_kill(victim, ncalls):
    comm = ringcomm.Communicator.from_mpi(WORLD, timeout=30)
    for i in range(ncalls):
        x = data(1, i, RANK)
        comm.allreduce(x)
        ref = sum(data(1, i, r) for r in range(SIZE))
        np.testing.assert_allclose(x, ref, rtol=1e-12, atol=1e-12)
    print(f"SHRINK-WORKER-BEFORE rank={RANK} calls={ncalls}", flush=True)
    if RANK == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    x = data(1, ncalls, RANK)
    try:
        comm.allreduce(x)
    except ringcomm.RingcommError as e:
        assert e.status_name in ("RC_ERR_PEER_LOST", "RC_ERR_TIMEOUT"), e
        print(f"SHRINK-WORKER-RAISED rank={RANK} {e.status_name}", flush=True)
    else:
        raise AssertionError(f"rank {RANK}: the all-reduce after rank {victim} died returned")
    new = comm.shrink()
    lost = comm.failed_ranks()
    assert lost == [victim], lost
    survivors = [r for r in range(SIZE) if r != victim]
    assert new.size == SIZE - 1 and new.rank == survivors.index(RANK), (new.rank, new.size)
    comm.close()
    n = 0
    for i in range(3):
        y = data(2, i, RANK)
        new.allreduce(y)
        ref = sum(data(2, i, r) for r in survivors)
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
        n += 1
    new.close()
    print(f"RINGCOMM-WORKER-OK shrink-kill rank={RANK} size={SIZE} cases={n}", flush=True)
    sys.stdout.flush()
    os._exit(0)                  # a dead peer: do not enter MPI_Finalize


if __name__ == "__main__":
    assert sys.argv[1] == "kill", sys.argv
    case_kill(int(sys.argv[2]), int(sys.argv[3]))
