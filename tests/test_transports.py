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
            "--variants", "np,np-in,np-same", env=TCP)


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_tcp_allreduce(run_mpi, nprocs):
    """All-reduce, every algorithm, counts 0..4099 and 262147 (several
    frames of a full chunk), vs numpy and mpi4py."""
    run_mpi(nprocs, "allreduce_sweep.py", "--counts", "0,1,P-1,4099,262147", "--rotate",
            "--dtypes", "float32,bfloat16,int64,uint8", env=TCP)


def test_tcp_small_chunks_two_slots(run_mpi):
    """256-byte chunks and two slots at 3 ranks: every collective crosses
    tens of frames and the credits wrap many times; then async requests
    waited in shuffled order."""
    env = dict(TCP, RINGCOMM_CHUNK_BYTES="256", RINGCOMM_NSLOTS="2")
    run_mpi(3, "coll_sweep.py", "--mode", "sweep,async", "--counts", "1001", "--dtypes",
            "float32,int8", "--ops", "sum,max", "--variants", "np,np-in",
            "--expect-chunk-bytes", "256", env=env)


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_tcp_p2p(run_mpi, nprocs):
    """Send/recv over TCP: ring shift, ping-pong, tags out of order,
    ANY_SOURCE, large streamed messages, p2p mixed with collectives (the two
    lanes must not block each other); no single-copy path offered."""
    run_mpi(nprocs, "p2p.py", "--large", "300007", env=TCP)


def test_tcp_p2p_small_chunks(run_mpi):
    """Large messages in 256-byte chunks and two slots over TCP."""
    run_mpi(3, "p2p.py", "--large", "20011",
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


# --------------------------------------------------------------------------
# what only the network transport has
# --------------------------------------------------------------------------

@pytest.mark.parametrize("nprocs", [2, 3])
def test_tcp_handshake_rejects_strangers(tmp_path, nprocs):
    """Raw sockets to a listener during setup (wrong token, garbage, short
    header, a rank that may not connect there, silence): each is closed
    without a reply and logged; the real connections succeed."""
    results = launch_standalone(nprocs, "tcp_handshake.py", tmp_path=tmp_path,
                                env=dict(TCP, RINGCOMM_DEBUG="WARN"))
    report = "\n".join(f"--- rank {r} (exit {c}) ---\n{o}" for r, (c, o) in enumerate(results))
    for r, (code, out) in enumerate(results):
        assert code == 0 and f"TCP-HANDSHAKE-OK rank={r}" in out, report
    listener = results[-1][1]
    for why in ("wrong communicator token", "bad magic", "short header (20 of 104 bytes",
                f"rank {nprocs - 1} is not expected to connect", "setup ended before its hello"):
        assert re.search(r"rank %d: tcp: rejected a connection from \S+: .*%s"
                         % (nprocs - 1, re.escape(why)), listener), f"no warning for {why!r}\n{report}"


@pytest.mark.parametrize("nprocs,op", [(2, "allreduce-ring"), (3, "allreduce-ring"),
                                       (3, "broadcast"), (3, "recv"), (3, "send"),
                                       (4, "alltoall")])
def test_tcp_peer_killed(tmp_path, nprocs, op):
    """A rank SIGKILLed over TCP: every survivor raises RC_ERR_PEER_LOST
    naming it (its connection closed without a BYE) within 10 s."""
    results = launch_standalone(nprocs, "peer_lost.py", op, tmp_path=tmp_path, env=TCP)
    report = "\n".join(f"--- rank {r} (exit {c}) ---\n{o}" for r, (c, o) in enumerate(results))
    assert results[-1][0] == -signal.SIGKILL, report
    for r, (code, out) in enumerate(results[:-1]):
        assert code == 0 and f"PEER-LOST-OK rank={r} op={op}" in out, report
    assert "closed its connection" in report, report


def test_tcp_no_fd_leak(run_mpi):
    """200 communicators created and closed over TCP: open descriptors stay flat."""
    run_mpi(2, "tcp_setup.py", "--fds", "200", env=TCP, timeout=200)


@pytest.mark.parametrize("ifname,family,expect", [
    ("lo", "", r"tcp listening on 127\.0\.0\.1:\d+ \(interface lo\)"),
    ("=lo", "6", r"tcp listening on \[::1\]:\d+ \(interface lo\)"),
    ("^lo,docker", "", r"tcp listening on (?!127\.)\S+ \(interface (?!lo)"),
])
def test_tcp_interface_choice(run_mpi, ifname, family, expect):
    """RINGCOMM_SOCKET_IFNAME (prefix, =exact, ^exclude) and
    RINGCOMM_SOCKET_FAMILY pick the listening address."""
    env = dict(TCP, RINGCOMM_SOCKET_IFNAME=ifname, RINGCOMM_DEBUG="INFO")
    if family:
        env["RINGCOMM_SOCKET_FAMILY"] = family
    res = run_mpi(2, "tcp_setup.py", env=env, timeout=120)
    if ifname.startswith("^") and "interface lo)" in res.output and \
            not re.search(expect, res.output):
        pytest.skip("no non-loopback interface with an address on this machine")
    assert re.search(expect, res.output), res.output


def test_tcp_interface_unknown(run_mpi):
    """An interface filter that matches nothing fails setup on every rank,
    naming the variable and the interfaces that exist."""
    res = run_mpi(2, "tcp_setup.py", env=dict(TCP, RINGCOMM_SOCKET_IFNAME="=nosuchif0"),
                  timeout=120, expect_success=False)
    assert res.returncode != 0, res.output
    assert "RINGCOMM_SOCKET_IFNAME==nosuchif0" in res.output and "lo" in res.output, res.output
