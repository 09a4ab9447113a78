"""Multi-process tests: each launches an mpirun job of a worker in tests/mpi/.

The workers do the checking (and abort the whole job on the first failure via
`python -m mpi4py`); these functions choose rank counts and environments,
enforce timeouts and show every rank's output when a job fails.  The autouse
fixture in conftest.py checks that no /dev/shm/ringcomm-* segment is left.
"""

import pytest

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(600)]

ALL_P = [1, 2, 3, 4]


@pytest.mark.parametrize("nprocs", ALL_P)
def test_allreduce_sweep_small_counts(run_mpi, nprocs):
    """Every algorithm x dtype x op at counts 0,1,3,P-1,17,1000, nine buffer variants, vs numpy and MPI."""
    run_mpi(nprocs, "allreduce_sweep.py", "--init")


@pytest.mark.parametrize("nprocs", ALL_P)
def test_allreduce_large_count(run_mpi, nprocs):
    """Count 1000003: every dtype with two ops (all ops covered), algorithms and variants round robin."""
    run_mpi(nprocs, "allreduce_sweep.py", "--counts", "1000003", "--rotate",
            "--ops-per-dtype", "2", "--variants", "np-in,torch-out,npoff-in,np-out,torch-in")


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_allreduce_many_chunks(run_mpi, nprocs):
    """RINGCOMM_CHUNK_BYTES=256: counts of thousands cross many pipeline chunks, all algorithms/dtypes/ops."""
    run_mpi(nprocs, "allreduce_sweep.py", "--counts", "4099,P-1,1000",
            "--variants", "np-in,torch-out", env={"RINGCOMM_CHUNK_BYTES": "256"})


@pytest.mark.parametrize("nprocs", [2, 4])
def test_allreduce_two_slots(run_mpi, nprocs):
    """RINGCOMM_NSLOTS=2 with 1 KiB slots: the slot ring wraps many times, all algorithms."""
    run_mpi(nprocs, "allreduce_sweep.py", "--counts", "3001",
            "--dtypes", "float32,bfloat16,int8", "--variants", "np-in",
            env={"RINGCOMM_CHUNK_BYTES": "1024", "RINGCOMM_NSLOTS": "2"})


@pytest.mark.parametrize("nprocs", [2, 4])
def test_allreduce_large_count_small_chunks(run_mpi, nprocs):
    """Count 1000003 with 1 KiB chunks: thousands of pipeline steps stay correct."""
    run_mpi(nprocs, "allreduce_sweep.py", "--counts", "1000003", "--rotate",
            "--dtypes", "float32,int64", "--ops", "sum,max", "--algos", "ring,tree",
            "--variants", "np-in", env={"RINGCOMM_CHUNK_BYTES": "1024"})


@pytest.mark.parametrize("nprocs", [3, 4])
def test_determinism(run_mpi, nprocs):
    """Same inputs and algorithm give bitwise identical results on every run, communicator and rank."""
    run_mpi(nprocs, "determinism.py", env={"RINGCOMM_CHUNK_BYTES": "1024"})


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_mismatch_raises_on_every_rank(run_mpi, nprocs):
    """A count, dtype or op mismatch on one rank raises RC_ERR_MISMATCH on every rank, no hang."""
    run_mpi(nprocs, "mismatch.py", env={"RINGCOMM_TIMEOUT": "30"}, timeout=400)


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_allreduce_ll_stress(run_mpi, nprocs):
    """2400 seeded all-reduces of 0..48 bytes (the one-line shared-memory path; float32,
    float64, int32, bfloat16; sum/max/min/prod/avg; in and out of place), interleaved with
    broadcasts from 0 and reduces to 1 so ranks drift and outbox lines wrap; vs numpy,
    bitwise equal on every rank."""
    run_mpi(nprocs, "allreduce_ll.py", "stress", timeout=300)


@pytest.mark.parametrize("nprocs", [2, 4])
def test_allreduce_ll_taken(run_mpi, nprocs):
    """RINGCOMM_DEBUG=INFO: 48 bytes take the one-line path on every rank, 52 bytes do not."""
    res = run_mpi(nprocs, "allreduce_ll.py", "paths", env={"RINGCOMM_DEBUG": "INFO"})
    lines = [line for line in res.output.splitlines() if " INFO rank " in line
             and " allreduce #" in line]
    ll = [line for line in lines if "count=12 " in line]
    slot = [line for line in lines if "count=13 " in line]
    assert len(ll) == nprocs and all("(one cache line per rank)" in line for line in ll), lines
    assert len(slot) == nprocs and not any("one cache line" in line for line in slot), lines


def test_allreduce_ll_not_across_transports(run_mpi):
    """RINGCOMM_TRANSPORT=tcp: tiny all-reduces keep the slot path (and stay correct)."""
    res = run_mpi(2, "allreduce_ll.py", "paths",
                  env={"RINGCOMM_DEBUG": "INFO", "RINGCOMM_TRANSPORT": "tcp"})
    assert "one cache line" not in res.output, res.output


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_allreduce_ll_mismatch(run_mpi, nprocs):
    """One-line all-reduce count 2 vs 3, float32 vs float64, sum vs max, vs a 64-byte
    slot-path all-reduce, vs a broadcast from rank 0 or from the odd rank (send-only):
    every rank raises RC_ERR_MISMATCH naming both calls, not a timeout."""
    run_mpi(nprocs, "allreduce_ll.py", "mismatch", env={"RINGCOMM_TIMEOUT": "30"}, timeout=300)


@pytest.mark.parametrize("nprocs", [3, 4])
def test_algo_env_overrides_auto(run_mpi, nprocs):
    """RINGCOMM_ALGO=X (set before creation) makes auto run X; algorithm= still wins."""
    run_mpi(nprocs, "algo_select.py")


def test_algo_env_rank0_rules(run_mpi):
    """RINGCOMM_ALGO set on rank 0 only applies to every rank."""
    run_mpi(4, "algo_select.py", "--rank0-only")


@pytest.mark.parametrize("algo", ["ring", "tree"])
def test_algo_env_from_launcher(run_mpi, algo):
    """RINGCOMM_ALGO in the job environment makes auto run that algorithm."""
    run_mpi(3, "algo_select.py", "--expect", algo, env={"RINGCOMM_ALGO": algo})


@pytest.mark.parametrize("nprocs", [2, 4])
def test_env_rank0_values_rule(run_mpi, nprocs):
    """Different RINGCOMM_CHUNK_BYTES/NSLOTS per rank: rank 0's apply, results stay correct."""
    run_mpi(nprocs, "env_rank0.py")


@pytest.mark.parametrize("nprocs", [2, 3])
def test_bad_input_raises_before_communicating(run_mpi, nprocs):
    """Bad calls on one rank raise locally and leave the communicator usable for all."""
    run_mpi(nprocs, "bad_input.py")


@pytest.mark.parametrize("nprocs", ALL_P)
def test_barrier(run_mpi, nprocs, tmp_path):
    """No rank leaves barrier() before the last rank has entered it."""
    run_mpi(nprocs, "barrier.py", tmp_path)


@pytest.mark.parametrize("nprocs", [3, 4])
def test_multiple_communicators(run_mpi, nprocs):
    """World, duplicate and split communicators used interleaved each reduce over their own ranks."""
    run_mpi(nprocs, "multi_comm.py")


@pytest.mark.parametrize("nprocs", [2, 4])
def test_crash_leaves_no_shm(run_mpi, nprocs):
    """A rank killed mid-allreduce fails the job and leaves no /dev/shm/ringcomm-* segment."""
    res = run_mpi(nprocs, "crash.py", env={"RINGCOMM_TIMEOUT": "20"}, timeout=120,
                     expect_success=False)
    connected = res.output.count("CRASH-WORKER-CONNECTED")
    assert connected == nprocs, f"only {connected} ranks connected:\n{res.output}"
    assert res.returncode != 0, f"job with a killed rank exited 0:\n{res.output}"


@pytest.mark.parametrize("nprocs,mode,env_timeout", [(2, "--arg", "100"), (3, "--env", "2")])
def test_absent_peer_times_out(run_mpi, nprocs, mode, env_timeout):
    """A rank that never joins an allreduce makes the others raise RC_ERR_TIMEOUT (from_mpi timeout or RINGCOMM_TIMEOUT) naming it; a warning comes at half the timeout."""
    res = run_mpi(nprocs, "timeout.py", mode, env={"RINGCOMM_TIMEOUT": env_timeout}, timeout=90)
    warnings = [line for line in res.output.splitlines() if " WARN rank " in line]
    assert len(warnings) == nprocs - 1, res.output
    assert all(f"ranks not arrived: {nprocs - 1} (no collective yet)" in w for w in warnings), \
        warnings


@pytest.mark.parametrize("nprocs", [2, 3])
def test_gil_released_while_waiting(run_mpi, nprocs, tmp_path):
    """A Python thread runs while allreduce/barrier wait for a late peer (the GIL is released)."""
    run_mpi(nprocs, "gil.py", tmp_path, env={"RINGCOMM_TIMEOUT": "20"}, timeout=120)


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_call_sequences(run_mpi, nprocs):
    """Each algorithm as the first call with a many-chunk buffer, and alternating 1-/8-byte dtypes, stay correct."""
    run_mpi(nprocs, "call_sequences.py")


@pytest.mark.parametrize("nprocs", [2, 3])
def test_allreduce_streaming_stores(run_mpi, nprocs):
    """RINGCOMM_STREAM_MIN=0: results written with streaming stores (the large-call path) stay exact."""
    run_mpi(nprocs, "allreduce_sweep.py", "--counts", "0,1,P-1,4099,100003",
            "--dtypes", "float32,float16,int8,int64", "--variants", "np-in,np-out,npoff-in,torchoff-out",
            env={"RINGCOMM_STREAM_MIN": "0", "RINGCOMM_CHUNK_BYTES": "1024"})


@pytest.mark.parametrize("nprocs", [3, 5])
def test_allreduce_two_cells(run_mpi, nprocs):
    """Two shared-memory cells per rank and lane with FIFOs of 2: every
    all-reduce algorithm (direct sends to every peer at once, so its senders
    starve and the receivers drain) at 1 KiB chunks."""
    run_mpi(nprocs, "allreduce_sweep.py", "--counts", "3001,P-1",
            "--dtypes", "float32,bfloat16,int64", "--variants", "np-in",
            env={"RINGCOMM_CHUNK_BYTES": "1024", "RINGCOMM_NSLOTS": "2",
                 "RINGCOMM_SHM_CELLS": "2", "RINGCOMM_SHM_P2P_CELLS": "2"})
