"""The examples in examples/, run under mpirun with short arguments.

Each example checks its own result (against a single-process reference) and
returns non-zero when a check fails; tests/mpi/run_example.py runs it as an
mpirun worker and prints the RINGCOMM-WORKER-OK line only when it returned 0.
These tests add what the output must show.  Most of each job's time is
``import torch`` on every rank.
"""

import re

import pytest

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(400)]

JOB_TIMEOUT = 300      # seconds per mpirun job (torch import on 4 ranks on a busy 2-core host)


def _check_pipeline_output(out, nprocs, steps):
    assert "# OK" in out, out
    assert f"{nprocs} stage(s) (one per rank), 1F1B schedule" in out, out
    # every stage's parameters were compared, and every step's loss
    for s in range(nprocs):
        assert re.search(rf"# stage {s} blocks \[\d+,\d+\): max relative parameter difference", out), out
    assert re.search(rf"max relative loss difference over {steps} steps", out), out
    # communication time reported for every rank
    assert len(re.findall(r"# rank \d+: .* s in communication", out)) == nprocs, out
    assert re.search(rf"step +{steps}  loss ", out), out


@pytest.mark.parametrize("nprocs,extra", [
    (2, []),
    # M=2 < 3 stages (warm-up clipped) and 7 blocks split unevenly 3/2/2
    (3, ["--micro-batches", "2", "--layers", "7"]),
    (4, []),
], ids=["2ranks", "3ranks-M2-7blocks", "4ranks"])
def test_train_pipeline(run_mpi, nprocs, extra):
    """1F1B pipeline over isend/recv: every step's loss and every stage's parameters match 1-process training."""
    steps = 6
    res = run_mpi(nprocs, "run_example.py", "train_pipeline.py", "--steps", steps, "--print-every", 3,
                  *extra, timeout=JOB_TIMEOUT)
    _check_pipeline_output(res.output, nprocs, steps)


def test_train_pipeline_check_catches_wrong_data(run_mpi):
    """--perturb: one gradient sent 10 % too large must make the example fail (its check is not vacuous)."""
    res = run_mpi(2, "run_example.py", "train_pipeline.py", "--steps", 3, "--perturb", 1,
                  timeout=JOB_TIMEOUT, expect_success=False)
    assert res.returncode != 0, res.output
    assert "# FAILED" in res.output, res.output
    assert "RINGCOMM-WORKER-OK" not in res.output, res.output


def test_train_allreduce(run_mpi):
    """Data-parallel example at 2 ranks: bitwise identical replicas and the 1-process reference loss."""
    res = run_mpi(2, "run_example.py", "train_allreduce.py", "--steps", 30, "--print-every", 10,
                  timeout=JOB_TIMEOUT)
    out = res.output
    assert "# OK" in out, out
    assert "# parameters bitwise identical on all 2 ranks: yes" in out, out
    assert "1-process full-batch reference" in out, out


@pytest.mark.parametrize("hook", ["avg", "bf16"])
def test_train_ddp(run_mpi, hook):
    """DDP over the "ringcomm" backend at 2 ranks: loss halves, bitwise identical replicas, communication time reported."""
    res = run_mpi(2, "run_example.py", "train_ddp.py", "--steps", 60, "--print-every", 20,
                  "--hook", hook, timeout=JOB_TIMEOUT)
    out = res.output
    assert "# OK" in out, out
    assert f"backend ringcomm, 2 rank(s), hook {hook}" in out, out
    assert "# parameters bitwise identical on all 2 ranks: yes" in out, out
    assert re.search(r"s in gradient all-reduce \([\d.]+ %", out), out
    assert re.search(r"step +60  loss ", out), out
