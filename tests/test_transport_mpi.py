"""The MPI transport (csrc/transport/mpi.c), forced with RINGCOMM_TRANSPORT=mpi.

The existing workers (tests/mpi/) run over MPI point-to-point instead of
shared memory: every collective (all algorithms, a rotating subset of
dtypes x ops x buffer variants, 256-byte chunks and two slots so that small
buffers cross many pipeline steps and the slot rings wrap) and send/recv at
2, 3 and 4 ranks, mismatch detection and the timeout naming the absent
rank.  tests/mpi/mpi_transport.py adds the MPI-only cases: the user's own
MPI traffic on the same MPI.COMM_WORLD interleaved with ringcomm calls (the
transport works on a duplicate), a communicator closed after MPI_Finalize,
and a thread level below MPI_THREAD_MULTIPLE refused.

The dev venv and CI have the mpich wheel, so the build must have the MPI
transport: a build that lost it fails here, it is not skipped.
"""

import os
import re
import subprocess
import sys

import pytest

import ringcomm

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(300)]

MPI_ENV = {"RINGCOMM_TRANSPORT": "mpi"}
SMALL = {"RINGCOMM_TRANSPORT": "mpi", "RINGCOMM_CHUNK_BYTES": "256", "RINGCOMM_NSLOTS": "2"}
SMALL_P2P = {"RINGCOMM_TRANSPORT": "mpi", "RINGCOMM_CHUNK_BYTES": "1024", "RINGCOMM_NSLOTS": "2"}


def test_have_mpi():
    """setup.py found the MPI wrapper of this environment (mpicc beside python)."""
    assert ringcomm.HAVE_MPI, (
        "ringcomm was built without the MPI transport although this environment has an MPI "
        "(the mpich wheel): setup.py did not find mpicc (MPICC, PATH, beside %s); rebuild "
        "with `pip install --no-build-isolation -e .` and read its 'ringcomm:' line"
        % sys.executable)


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_forced_allreduce(run_mpi, nprocs):
    """All-reduce, every algorithm, over MPI: many chunks, two slots."""
    run_mpi(nprocs, "allreduce_sweep.py", "--counts", "0,1,P-1,4099", "--rotate",
            "--ops-per-dtype", "2", "--variants", "np-in,torch-out", env=SMALL)


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_forced_collectives(run_mpi, nprocs):
    """Every other collective, every algorithm and root, over MPI."""
    run_mpi(nprocs, "coll_sweep.py", "--rotate", "--counts", "0,1,P-1,1000",
            "--ops-per-dtype", "1", env=SMALL)


@pytest.mark.parametrize("nprocs,env", [(2, SMALL_P2P), (4, MPI_ENV)], ids=["2-small", "4"])
def test_forced_p2p(run_mpi, nprocs, env):
    """send/recv over MPI: sizes around the chunk, tags out of order,
    ANY_SOURCE, to itself, mixed with collectives, many outstanding."""
    run_mpi(nprocs, "p2p.py", "--large", "100003", env=env)


def test_forced_mismatch(run_mpi):
    """Mismatches raise RC_ERR_MISMATCH on every rank over MPI too, incl. the
    ones no message shows (two roots both waiting: the state exchange)."""
    run_mpi(3, "mismatch.py", "count", "dtype_same_bytes", "op", "algorithm",
            "barrier_vs_allreduce", "broadcast_root", "gather_root", "allgather_vs_alltoall",
            env={**MPI_ENV, "RINGCOMM_TIMEOUT": "30"}, timeout=200)


@pytest.mark.parametrize("nprocs,mode,env_timeout", [(2, "--arg", "100"), (3, "--env", "2")])
def test_forced_timeout(run_mpi, nprocs, mode, env_timeout):
    """A rank that never joins: the others raise RC_ERR_TIMEOUT naming it."""
    res = run_mpi(nprocs, "timeout.py", mode,
                  env={**MPI_ENV, "RINGCOMM_TIMEOUT": env_timeout}, timeout=90)
    assert "RC_ERR_TIMEOUT" in res.output


@pytest.mark.parametrize("nprocs", [2, 4])
def test_user_mpi_traffic_interleaved(run_mpi, nprocs):
    """The user's receives on COMM_WORLD (ringcomm's tags, ANY_SOURCE/ANY_TAG)
    see none of ringcomm's messages; mpi4py calls during async ringcomm calls."""
    run_mpi(nprocs, "mpi_transport.py", "--interleave", env=MPI_ENV)


def test_close_after_finalize(run_mpi):
    """MPI_Finalize with communicators open: later calls raise naming
    MPI_Finalize, close() and the interpreter's exit do not crash."""
    res = run_mpi(2, "mpi_transport.py", "--finalize", env=MPI_ENV, timeout=120)
    found = re.findall(r"FINALIZE rank=\d+ after=(.*?) closed", res.output)
    assert found == ["raised", "raised"], res.output


def test_exit_with_communicators_open(run_mpi):
    """Open communicators (one with a pending receive) at exit: a clean exit."""
    run_mpi(2, "mpi_transport.py", "--exit-open", env=MPI_ENV, timeout=120)


def test_thread_level_refused(run_mpi):
    """Below MPI_THREAD_MULTIPLE the MPI transport refuses to connect, saying why."""
    run_mpi(2, "mpi_transport.py", "--thread-level", "serialized", env=MPI_ENV)


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_forced_split(run_mpi, nprocs):
    """split of a communicator made from MPI keeps MPI: with the MPI transport
    forced, every sub-communicator (halves, reversed, some ranks out, nested)
    connects and computes (it used to be refused: "needs the MPI
    communicator"); at 2 ranks 2100 split/close rounds, more than MPICH's
    context ids, so a sub-communicator's MPI communicator is freed by close()."""
    run_mpi(nprocs, "split.py", "--churn", "2100" if nprocs == 2 else "20", env=MPI_ENV,
            timeout=600)


def test_forced_mpi_needs_an_mpi_communicator():
    """A communicator not made from an MPI communicator (here: one rank, no
    launcher) cannot use the MPI transport: a clear error, not a crash."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_", "OMPI_"))}
    env["RINGCOMM_TRANSPORT"] = "mpi"
    code = ("import ringcomm\n"
            "try:\n"
            "    ringcomm.init()\n"
            "except ringcomm.RingcommError as e:\n"
            "    print('REFUSED', e.status_name, e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=60).stdout.decode()
    assert "REFUSED RC_ERR_NOT_SUPPORTED" in out and "from_mpi" in out, out
