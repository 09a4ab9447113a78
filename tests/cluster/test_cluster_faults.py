"""Link faults mid all-reduce over namespace hosts (tools/cluster.py).

Layout 2+1+1: ranks 0, 1 on h0 (shared memory between them), rank 2 on h1,
rank 3 on h2; TCP between hosts (no MPI: the ranks bootstrap through files,
tests/standalone/link_fault.py); RINGCOMM_TIMEOUT=10.  About a second into a
loop of 1 MiB all-reduces, the test breaks h2's link:

(a) h2's eth0 down: every rank raises within RINGCOMM_TIMEOUT (+ slack for
    a loaded 2-core machine), the message naming rank 3 or, on h2, the
    ranks it cannot reach, with their host (IP of the listener);
(d) h2's ranks SIGKILLed: every survivor raises RC_ERR_PEER_LOST naming
    rank 3 and its host, within seconds (the kernel resets the sockets);
(b) 2% loss on every host's egress: the loop completes, every result exact;
(c) h2's link at 1/10 of the others' rate (100 vs 1000 mbit): the loop
    completes, every result exact; the warning or debug log should name
    the slow host (see test_straggler_link).

Every host's /dev/shm must be empty afterwards (the cluster fixture).  The
fault table (fault, rank, host, time to error, message) is printed (-s or
on failure) and written to $RINGCOMM_FAULT_TABLE when set.
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import STANDALONE, base_env

pytestmark = pytest.mark.timeout(300)

LAYOUT = (2, 1, 1)
VICTIM_HOST = 2
VICTIM_RANKS = [3]
TIMEOUT = 10.0
SLACK = 10.0          # a loaded 2-core machine: detection may trail the deadline
ERR = re.compile(r"FAULT-ERROR rank=(\d+) host=(\S+) elapsed=(\S+) status=(\S+) iter=(\d+) msg=(.*)")
DONE = re.compile(r"FAULT-DONE rank=(\d+) host=(\S+) iters=(\d+) seconds=(\S+)")


def start_ranks(c, tmp_path, hold, **env):
    """Every rank of LAYOUT on its host; hold: see link_fault.py."""
    hosts = [h for h, n in enumerate(LAYOUT) for _ in range(n)]
    procs = []
    for r, h in enumerate(hosts):
        e = base_env(RANK=r, WORLD_SIZE=len(hosts), RINGCOMM_TEST_DIR=tmp_path,
                     RINGCOMM_TIMEOUT=TIMEOUT, **env)
        e["PYTHONPATH"] = str(STANDALONE)
        e.pop("RINGCOMM_TEST_CLUSTER")
        procs.append(c.popen(h, [sys.executable, str(STANDALONE / "link_fault.py"), str(hold)],
                             cwd=str(STANDALONE), env=e, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    return procs


def wait_ready(tmp_path, n, procs, limit=90):
    deadline = time.monotonic() + limit
    while not all((tmp_path / f"ready-{r}").exists() for r in range(n)):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            outs = collect(procs, 5)
            pytest.fail("ranks did not all connect:\n" + report(outs), pytrace=False)
        time.sleep(0.05)
    time.sleep(1.0)                     # the loop is running
    (tmp_path / "fault").write_text(repr(time.time()))


def collect(procs, timeout):
    outs, deadline = [], time.monotonic() + timeout
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
            out += b"\n[killed: still running at the test's limit]"
        outs.append((p.returncode, out.decode(errors="replace")))
    return outs


def report(outs):
    return "\n".join(f"--- rank {r} (exit {code}) ---\n{out}" for r, (code, out) in enumerate(outs))


def table(fault, outs):
    rows = []
    for r, (code, out) in enumerate(outs):
        m = ERR.search(out)
        d = DONE.search(out)
        if m:
            rows.append(f"{fault} | rank {r} ({m.group(2)}) | {m.group(3)} s | {m.group(4)}: {m.group(6)[:300]}")
        elif d:
            rows.append(f"{fault} | rank {r} ({d.group(2)}) | completed {d.group(3)} iterations in {d.group(4)} s | -")
        else:
            rows.append(f"{fault} | rank {r} | exit {code} | (no result line)")
    text = "\n".join(rows)
    print(text)
    path = os.environ.get("RINGCOMM_FAULT_TABLE")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")
    return text


def check_errors(c, outs, survivors, want_status=None, limit=TIMEOUT + SLACK):
    victim_ip = c.hosts[VICTIM_HOST].ip
    for r in survivors:
        code, out = outs[r]
        m = ERR.search(out)
        assert code == 0 and m, f"rank {r} did not raise:\n{report(outs)}"
        elapsed, status, msg = float(m.group(3)), m.group(4), m.group(6)
        assert 0 <= elapsed <= limit, f"rank {r}: error {elapsed} s after the fault\n{report(outs)}"
        if want_status:
            assert status in want_status, f"rank {r}: {status}\n{report(outs)}"
        if r not in VICTIM_RANKS:
            # names the unreachable rank and its host (the listener's IP)
            assert any(f"rank {v}" in msg for v in VICTIM_RANKS) and victim_ip in msg, \
                f"rank {r}: the message does not name rank {VICTIM_RANKS} at {victim_ip}: {msg}"


def test_link_down(cluster, tmp_path):
    """(a) h2's link down mid all-reduce loop: every rank raises within RINGCOMM_TIMEOUT naming the unreachable rank and host."""
    c = cluster(len(LAYOUT))
    procs = start_ranks(c, tmp_path, 0)
    wait_ready(tmp_path, 4, procs)
    c.link(VICTIM_HOST, up=False)
    outs = collect(procs, TIMEOUT + SLACK + 20)
    table("link down (h2)", outs)
    check_errors(c, outs, range(4))


def test_host_killed(cluster, tmp_path):
    """(d) h2's ranks SIGKILLed mid all-reduce loop: every survivor raises RC_ERR_PEER_LOST naming rank 3 and its host within seconds."""
    c = cluster(len(LAYOUT))
    procs = start_ranks(c, tmp_path, 0)
    wait_ready(tmp_path, 4, procs)
    c.kill_host(VICTIM_HOST, match="link_fault.py")
    outs = collect(procs, TIMEOUT + SLACK + 20)
    table("h2's ranks killed", outs)
    assert outs[3][0] == -signal.SIGKILL, report(outs)
    check_errors(c, outs, [0, 1, 2], want_status=("RC_ERR_PEER_LOST",), limit=SLACK)


def test_packet_loss(cluster, tmp_path):
    """(b) 2% loss on every host's egress mid loop: the loop completes, every result exact."""
    c = cluster(len(LAYOUT))
    procs = start_ranks(c, tmp_path, 4)
    wait_ready(tmp_path, 4, procs)
    for h in range(len(LAYOUT)):
        c.set_shape(h, loss=0.02)
    outs = collect(procs, 200)
    table("2% loss", outs)
    for r, (code, out) in enumerate(outs):
        assert code == 0 and DONE.search(out), report(outs)
    drops = [c.dropped(h) for h in range(len(LAYOUT))]
    print(f"2% loss: packets dropped per host {drops}")
    assert all(d > 0 for d in drops), f"the loss dropped nothing: {drops}"


def test_straggler_link(cluster, tmp_path):
    """(c) h2's link at 1/10 of the others' rate: the loop completes with exact results; the slow host should be named in the warning or debug log."""
    c = cluster(len(LAYOUT), rate="1000mbit")
    procs = start_ranks(c, tmp_path, 4, RINGCOMM_DEBUG="INFO")
    wait_ready(tmp_path, 4, procs)
    c.set_shape(VICTIM_HOST, rate="100mbit")
    outs = collect(procs, 200)
    table("h2 at 1/10 rate", outs)
    for r, (code, out) in enumerate(outs):
        assert code == 0 and DONE.search(out), report(outs)
    victim = c.hosts[VICTIM_HOST]
    named = [r for r, (_, out) in enumerate(outs)
             if re.search(rf"(slow|straggl|waited).*({victim.ip}|host {victim.name})", out)]
    if not named:
        pytest.xfail("no warning or debug line names the slow host h2: a slow but moving "
                     "link never makes one wait exceed RINGCOMM_TIMEOUT/2 (the only report)")
