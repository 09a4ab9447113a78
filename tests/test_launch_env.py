"""ringcomm.init() under a launcher that sets RANK, WORLD_SIZE, MASTER_ADDR
and MASTER_PORT itself (srun, a shell script): no torchrun agent store, so
rank 0 hosts the TCPStore server inside init() (issue 14 item 6).

Before the fix, rank 0 returned from init() and released the server while
the others still read the last round: about half of the 3-rank runs died in
bootstrap.from_store with "Failed to recv, got 0 bytes".  Each test starts
plain processes (no mpirun, no torchrun) several times in a row; each
process makes and closes the world communicator and its splits several
times on the same port, checking collectives against numpy."""

import socket

import pytest

from test_reliability import launch_standalone

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(600)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nprocs, tmp_path, *args):
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    results = launch_standalone(nprocs, "env_launch.py", *args, env=env, tmp_path=tmp_path,
                                timeout=240)
    for r, (code, out) in enumerate(results):
        assert code == 0 and f"ENV-LAUNCH-OK rank={r} size={nprocs}" in out, \
            f"rank {r} exit {code}:\n" + "\n".join(
                f"--- rank {q} (exit {c}) ---\n{o}" for q, (c, o) in enumerate(results))
    return results


@pytest.mark.parametrize("nprocs,launches", [(2, 2), (3, 4), (4, 2)])
def test_env_launch_many_times(tmp_path, nprocs, launches):
    """2-4 ranks, several launches of 3 init()/close() rounds each: every rank
    of every launch completes (the failure was ~1 in 2 launches at 3 ranks)."""
    for _ in range(launches):
        launch(nprocs, tmp_path, 3)


def test_env_launch_slow_readers(tmp_path):
    """The others read the last round 0.3 s late: rank 0 must wait for them
    before its init() returns (and its store server can go)."""
    launch(3, tmp_path, 2, "--slow")
