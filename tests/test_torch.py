"""The torch.distributed backend "ringcomm" (src/ringcomm/torch.py).

The worker tests/mpi/torch_ops.py runs every operation on the ringcomm
default group and on a gloo group over the same processes and compares them
(the worker's docstring lists what); these tests launch it under mpirun at
1-4 ranks and under torchrun.  Most of each job's time is importing torch.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MPI_WORKERS, OK_LINE, REPO_ROOT

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(400)]

JOB_TIMEOUT = 300


@pytest.mark.parametrize("nprocs", [1, 2, 3, 4])
def test_torch_ops_vs_gloo(run_mpi, nprocs):
    """Every collective x dtype x op, non-contiguous, unequal all-to-all, p2p, async futures, sub-groups, errors, DDP and hooks: same results as gloo."""
    res = run_mpi(nprocs, "torch_ops.py", timeout=JOB_TIMEOUT)
    # every check group ran on every rank
    for name in ("check_allreduce", "check_broadcast_reduce", "check_gather_family",
                 "check_reduce_scatter", "check_alltoall", "check_p2p", "check_async",
                 "check_groups", "check_errors", "check_ddp"):
        assert res.output.count(f"{name}: ok") == nprocs, (name, res.output)


def test_torchrun_rendezvous():
    """torchrun --standalone --nproc-per-node 2: the backend bootstraps through the Store torch hands it."""
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = [str(torchrun)] if torchrun.is_file() else [sys.executable, "-m",
                                                           "torch.distributed.run"]
    cmd = launcher + ["--standalone", "--nproc-per-node", "2",
                      str(MPI_WORKERS / "torch_ops.py"), "--torchrun"]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update({"OMP_NUM_THREADS": "1", "RINGCOMM_TIMEOUT": "60", "PYTHONUNBUFFERED": "1"})
    proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun timed out after {JOB_TIMEOUT} s:\n{out.decode(errors='replace')}")
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    lines = OK_LINE.findall(text)
    assert sorted(int(r) for _, r, _, _ in lines) == [0, 1], text
    assert all(n == "torch_torchrun" and s == "2" and int(c) > 0 for n, _, s, c in lines), text
