"""Ranks on several (simulated) hosts: shared memory inside a host, the
network transport between hosts, the hierarchical all-reduce.

RINGCOMM_TEST_HOSTS=a,a,b,b gives rank r the host identity hosts[r]
(RINGCOMM_HOST_ID, set by the workers' _common.py / _files.py before the
communicator is made), so one machine stands for several hosts.  The
existing workers then run unchanged over the mixed transports:

* every collective (coll_sweep.py), every all-reduce algorithm
  (allreduce_sweep.py) and send/recv (p2p.py) at layouts 2x2, 2+1, 3x1 and
  interleaved (a,b,a,b: hosts not contiguous in rank order);
* the hierarchical all-reduce forced and by "auto" against numpy at many
  counts, dtypes and ops, over many pipeline blocks (256-byte chunks), with
  two hosts (one-step exchange across) and three (ring across);
* multihost.py: "auto" picks "hier" exactly on uniform layouts with several
  ranks per host, split communicators inside a host / across hosts;
* RINGCOMM_DEBUG=INFO names shm for same-host and the network transport for
  other-host peers;
* a mismatched call, a crashed rank and a killed rank on a mixed layout
  (the no_shm_leak fixture checks /dev/shm after every test);
* a torchrun launch of two simulated hosts bootstrapping through the torch
  Store (TCP between them).

The network transport between the simulated hosts is TCP
(RINGCOMM_TRANSPORT=shm,tcp: chosen per peer among those two), and MPI on
the main layouts when the build has it (RINGCOMM_TRANSPORT unset: under
mpirun the per-peer choice takes MPI).  Killed peers and torchrun:
TCP only (no MPI communicator there).
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import ringcomm
from test_reliability import launch_standalone

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(600)]

STANDALONE = Path(__file__).parent / "standalone"
LAYOUTS = {"2x2": "a,a,b,b", "2+1": "a,a,b", "3x1": "a,b,c", "interleaved": "a,b,a,b"}
MPI_LAYOUTS = ("2x2", "2+1")    # shm + MPI: the main layouts only (time budget)


def nets(layouts):
    """(layout, net) cases: every layout over TCP, MPI_LAYOUTS over MPI."""
    out = [pytest.param(lay, "tcp", id=f"{lay}-tcp") for lay in layouts]
    out += [pytest.param(lay, "mpi", id=f"{lay}-mpi", marks=pytest.mark.skipif(
        not ringcomm.HAVE_MPI, reason="built without the MPI transport (no mpicc found)"))
        for lay in layouts if lay in MPI_LAYOUTS]
    return out


def hosts_env(layout, net="tcp", **extra):
    """TCP: RINGCOMM_TRANSPORT=shm,tcp.  MPI: the default choice (empty), which
    under mpirun is MPI for the world communicator (split ones, made without
    an MPI communicator, use TCP)."""
    return {"RINGCOMM_TEST_HOSTS": LAYOUTS.get(layout, layout),
            "RINGCOMM_TRANSPORT": "shm,tcp" if net == "tcp" else "", **extra}


def nranks(layout):
    return len(LAYOUTS.get(layout, layout).split(","))


@pytest.mark.parametrize("layout,net", nets(LAYOUTS))
def test_collectives(run_mpi, layout, net):
    """Every collective x dtype x op at counts 0..1000 and 100003, algorithm/root/variant round robin, vs numpy and mpi4py."""
    run_mpi(nranks(layout), "coll_sweep.py", "--rotate", "--counts", "0,1,P-1,17,1000,100003",
            env=hosts_env(layout, net))


@pytest.mark.parametrize("layout,net", nets(LAYOUTS))
def test_allreduce(run_mpi, layout, net):
    """Every all-reduce algorithm (hier where the layout allows, else its fallback) x dtype x op, round robin, vs numpy and mpi4py, bitwise identical on every rank."""
    run_mpi(nranks(layout), "allreduce_sweep.py", "--rotate",
            "--counts", "0,1,3,P-1,17,1000,100003", env=hosts_env(layout, net))


@pytest.mark.parametrize("layout,net", nets(LAYOUTS))
def test_p2p(run_mpi, layout, net):
    """Send/recv: ring shift, ping-pong, tags, ANY_SOURCE, self-sends, large messages, p2p among collectives."""
    run_mpi(nranks(layout), "p2p.py", env=hosts_env(layout, net))


@pytest.mark.parametrize("layout,net", nets(["2x2", "a,b,c,a,b,c"]))
def test_hier_many_blocks(run_mpi, layout, net):
    """hier and auto, every dtype x op, counts 0, 1, P-1, 1000, 4099 with 256-byte chunks (tens of blocks): two hosts (one-step exchange across) and three interleaved (ring across)."""
    run_mpi(nranks(layout), "allreduce_sweep.py", "--algos", "hier,auto",
            "--counts", "0,1,P-1,1000,4099",
            env=hosts_env(layout, net, RINGCOMM_CHUNK_BYTES="256"))


@pytest.mark.parametrize("layout,net", nets(["2x2"]))
def test_hier_large(run_mpi, layout, net):
    """hier on 2x2 at 1000003 elements (default chunks: many blocks), every dtype, two ops each."""
    run_mpi(4, "allreduce_sweep.py", "--algos", "hier", "--counts", "1000003", "--rotate",
            "--ops-per-dtype", "2", env=hosts_env(layout, net))


@pytest.mark.parametrize("layout,net", nets(list(LAYOUTS) + ["a,a,a"]))
def test_layout_decisions(run_mpi, layout, net):
    """auto = hier exactly on uniform multi-host layouts; hier/auto/ring/tree vs numpy; split inside a host and across hosts; send/recv ring."""
    run_mpi(nranks(layout), "multihost.py", env=hosts_env(layout, net))


LOG_LINE = re.compile(r"INFO rank (\d+) -> rank (\d+): transport (\w+)")


@pytest.mark.parametrize("layout,net", nets(["2x2", "interleaved", "a,a,a"]))
def test_info_names_transports(run_mpi, layout, net):
    """RINGCOMM_DEBUG=INFO: one line per (rank, peer), shm for a peer with the same host identity, the network transport for the others."""
    hosts = LAYOUTS.get(layout, layout).split(",")
    res = run_mpi(len(hosts), "multihost.py", "--mode", "log",
                  env=hosts_env(layout, net, RINGCOMM_DEBUG="INFO"))
    seen = {}
    for me, peer, tp in LOG_LINE.findall(res.output):
        seen[int(me), int(peer)] = tp
    want = {(r, q): "shm" if hosts[r] == hosts[q] else net
            for r in range(len(hosts)) for q in range(len(hosts)) if r != q}
    assert seen == want, res.output


@pytest.mark.parametrize("layout,net", nets(["2x2"]))
def test_mismatch_mixed(run_mpi, layout, net):
    """Mismatched calls (count, dtype, op, algorithm, root, collective) on 2x2: every rank raises RC_ERR_MISMATCH, across hosts too."""
    run_mpi(4, "mismatch.py", env=hosts_env(layout, net, RINGCOMM_TIMEOUT="30"), timeout=400)


def test_crash_mixed(run_mpi):
    """A rank killed mid-allreduce on 2x2 fails the job; no /dev/shm/ringcomm-* is left."""
    res = run_mpi(4, "crash.py", env=hosts_env("2x2", RINGCOMM_TIMEOUT="20"), timeout=120,
                  expect_success=False)
    assert res.output.count("CRASH-WORKER-CONNECTED") == 4, res.output
    assert res.returncode != 0, res.output


@pytest.mark.parametrize("op", ["allreduce-hier", "allreduce-ring", "barrier", "recv"])
def test_peer_killed_mixed(tmp_path, op):
    """2x2, the last rank (host b) SIGKILLed: every survivor, on either host, raises RC_ERR_PEER_LOST naming it within 10 s."""
    results = launch_standalone(4, "peer_lost.py", op, tmp_path=tmp_path,
                                env={"RINGCOMM_TEST_HOSTS": LAYOUTS["2x2"],
                                     "RINGCOMM_TRANSPORT": "shm,tcp"})
    report = "\n".join(f"--- rank {r} (exit {c}) ---\n{o}" for r, (c, o) in enumerate(results))
    assert results[-1][0] == -signal.SIGKILL, report
    for r, (code, out) in enumerate(results[:-1]):
        assert code == 0 and f"PEER-LOST-OK rank={r} op={op}" in out, report


def test_torchrun_two_hosts(tmp_path):
    """torchrun --standalone --nproc-per-node 4, two simulated hosts of two ranks: ringcomm.init() through the torch Store, shm inside each host, TCP across, hier by auto; every check vs numpy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCOMM_")}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", RINGCOMM_DEBUG="INFO")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4",
           str(STANDALONE / "torchrun_hosts.py")]
    proc = subprocess.Popen(cmd, env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail("torchrun job timed out:\n" + out.decode(errors="replace"), pytrace=False)
    out = out.decode(errors="replace")
    assert proc.returncode == 0, out
    assert sorted(re.findall(r"TORCHRUN-HOSTS-OK rank=(\d)", out)) == ["0", "1", "2", "3"], out
    links = {(int(a), int(b)): t for a, b, t in LOG_LINE.findall(out)}
    assert links == {(r, q): "shm" if r // 2 == q // 2 else "tcp"
                     for r in range(4) for q in range(4) if r != q}, out
