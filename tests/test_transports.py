"""Network transports forced for every peer (RINGCOMM_TRANSPORT=tcp): the
existing collective, all-reduce and point-to-point workers run over TCP
sockets at 2, 3 and 4 ranks (a subset of counts and dtypes, small chunks and
two slots so the credit flow control wraps many times), then what only a
network transport has: the handshake rejecting strangers, a killed peer seen
as a closed connection, a timeout naming the absent rank, no file
descriptors left behind, interface selection."""

import os
import re
import signal
import subprocess
import sys

import pytest

from test_reliability import launch_standalone

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(600)]

TCP = {"RINGCOMM_TRANSPORT": "tcp"}


# --------------------------------------------------------------------------
# correctness over forced TCP
# --------------------------------------------------------------------------

@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_tcp_collectives(run_mpi, nprocs):
    """Every collective x algorithm (+auto) x root over TCP: counts 0, 1, P-1,
    1000; four dtypes; vs numpy and mpi4py."""
    run_mpi(nprocs, "coll_sweep.py", "--counts", "0,1,P-1,1000",
            "--dtypes", "float32,bfloat16,int64,bool", "--ops-per-dtype", "2",
            "--variants", "np,torch-in,np-in,np-same", env=TCP)


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_tcp_allreduce(run_mpi, nprocs):
    """All-reduce, every algorithm, counts 0..4099 and 1000003 (many
    frames of a full chunk), vs numpy and mpi4py."""
    run_mpi(nprocs, "allreduce_sweep.py", "--counts", "0,1,P-1,4099,1000003", "--rotate",
            env=TCP)


@pytest.mark.parametrize("nprocs", [3, 4])
def test_tcp_small_chunks_two_slots(run_mpi, nprocs):
    """256-byte chunks and two slots: every collective crosses hundreds of
    frames and the credits wrap many times; async requests in shuffled order."""
    env = dict(TCP, RINGCOMM_CHUNK_BYTES="256", RINGCOMM_NSLOTS="2")
    run_mpi(nprocs, "coll_sweep.py", "--counts", "3001", "--dtypes", "float32,int8",
            "--ops", "sum,max", "--variants", "np,np-in",
            "--expect-chunk-bytes", "256", env=env)
    run_mpi(nprocs, "coll_sweep.py", "--mode", "async", env=env)


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_tcp_p2p(run_mpi, nprocs):
    """Send/recv over TCP: ring shift, ping-pong, tags out of order,
    ANY_SOURCE, large streamed messages, p2p mixed with collectives (the two
    lanes must not block each other); no single-copy path offered."""
    run_mpi(nprocs, "p2p.py", env=TCP)


def test_tcp_p2p_small_chunks(run_mpi):
    """Large messages in 256-byte chunks and two slots over TCP."""
    run_mpi(3, "p2p.py", "--large", "100003",
            env=dict(TCP, RINGCOMM_CHUNK_BYTES="256", RINGCOMM_NSLOTS="2"))


def test_tcp_rank0_rules(run_mpi):
    """Rank 0's chunk size, slots and RINGCOMM_ALGO reach the others through
    its hello (as shm.c's header carries them)."""
    run_mpi(3, "env_rank0.py", env=TCP)


def test_tcp_mismatch(run_mpi):
    """A collective mismatch over TCP raises RC_ERR_MISMATCH on every rank
    (descriptors in the frames, and in DESC frames while waiting)."""
    run_mpi(3, "mismatch.py", env=dict(TCP, RINGCOMM_TIMEOUT="30"), timeout=400)


@pytest.mark.parametrize("nprocs,mode,env_timeout", [(2, "--arg", "100"), (3, "--env", "2")])
def test_tcp_timeout_names_rank(run_mpi, nprocs, mode, env_timeout):
    """A rank that never joins: the others raise RC_ERR_TIMEOUT naming it."""
    run_mpi(nprocs, "timeout.py", mode, env=dict(TCP, RINGCOMM_TIMEOUT=env_timeout), timeout=90)
