#!/usr/bin/env python3
"""A cluster of N namespace "hosts" on one Linux machine (root needed).

Each host is a set of namespaces held open by one long-lived holder process:

* its own network namespace ``rcc<pid>-h<i>`` with one interface ``eth0``
  (10.213.0.<i+1>/24), the end of a veth pair whose other end is a port of
  the bridge ``br0`` in the switch namespace ``rcc<pid>-sw`` (the root
  namespace is not touched: no address, no interface, no rule there);
* its own mount namespace with a private tmpfs on ``/dev/shm`` and an
  ``/etc/hosts`` that names every host (h0, h1, ...);
* its own UTS namespace with the hostname ``h<i>``.

The link of every host is shaped in both directions (``tbf`` on the host's
``eth0`` and on its bridge port) from ``rate``; ``delay`` and ``loss`` use
``netem`` when the kernel has it.  Without netem (this CI kernel has only
tbf/htb/pfifo), ``loss`` falls back to an ``iptables -m statistic`` DROP
rule on the host's OUTPUT chain (iptables-legacy, Debian's ``iptables``
package) and ``delay`` is refused with a message saying why.

Ranks are launched with MPICH's hydra: ``mpirun -launcher ssh
-launcher-exec <wrapper> -hosts h0,h1 ...`` where the wrapper (a shell
script written per cluster) maps the host name to its holder's pid and runs
the hydra proxy there with ``nsenter -t PID -m -u -n``.  mpirun itself runs
inside host 0 (so the proxies reach its control port at h0's address).
``torchrun`` is launched as one agent per host (``--nnodes N``, rendezvous
on h0's address).

Teardown (``close()``: the context manager's exit, atexit, SIGINT/SIGTERM)
kills every process in every host's network namespace (ranks, proxies,
holders), deletes the namespaces (and with them the veths, the bridge and
the qdiscs); each holder also exits on its own when the process that made
the cluster dies, and ``python tools/cluster.py cleanup`` removes the
namespaces of clusters whose creator is gone.

Use (see docs/cluster.md)::

    with Cluster(hosts=2, rate="1gbit") as c:
        res = c.mpirun(["python", "-m", "mpi4py", "x.py"], ranks_per_host=2)

    python tools/cluster.py run --hosts 2 --ranks-per-host 2 [--rate 1gbit]
        [--delay 50us] [--loss 0] -- python -m mpi4py script.py
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.213.0"          # private test range, inside our namespaces only
PREFIX = "rcc"


def _run(*argv, check=True, quiet=False):
    res = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    if check and res.returncode != 0:
        raise ClusterError(f"`{' '.join(argv)}` failed ({res.returncode}): {res.stdout.strip()}")
    return res


class ClusterError(RuntimeError):
    pass


def _have_netem() -> bool:
    """Probe once in a scratch namespace whether the kernel knows netem."""
    ns = f"{PREFIX}{os.getpid()}-probe"
    _run("ip", "netns", "add", ns)
    try:
        _run("ip", "-n", ns, "link", "add", "d0", "type", "dummy", check=False)
        return _run("tc", "-n", ns, "qdisc", "add", "dev", "d0", "root", "netem",
                    "delay", "1ms", check=False).returncode == 0
    finally:
        _run("ip", "netns", "del", ns, check=False)


def _rate_bits(rate: str) -> float:
    """'1gbit', '100mbit', '500kbit', '1000000' (bit/s) -> bit/s."""
    s = rate.strip().lower()
    for suf, mul in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)):
        if s.endswith(suf):
            return float(s[: -len(suf)]) * mul
    return float(s)


@dataclass
class Host:
    index: int
    name: str            # hostname inside, and the name mpirun's -hosts uses
    netns: str
    ip: str
    port: str            # its bridge port in the switch namespace
    holder: subprocess.Popen | None = None
    shape: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.holder.pid


class Cluster:
    """N namespace hosts joined by a bridge; a context manager."""

    def __init__(self, hosts=2, rate=None, delay=None, loss=0.0, shm_size="1g"):
        if os.geteuid() != 0:
            raise ClusterError("the cluster harness needs root (network and mount namespaces)")
        if not 1 <= int(hosts) <= 200:
            raise ValueError(f"hosts: expected 1..200, got {hosts!r}")
        for tool in ("ip", "tc", "nsenter", "unshare"):
            if shutil.which(tool) is None:
                raise ClusterError(f"{tool} not found on PATH (iproute2 / util-linux)")
        self.nhosts = int(hosts)
        self.shm_size = shm_size
        self.tag = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.hosts = [Host(i, f"h{i}", f"{self.tag}-h{i}", f"{SUBNET}.{i + 1}", f"p{i}")
                      for i in range(self.nhosts)]
        self.dir = None
        self.wrapper = None
        self._closed = True
        self._netem = None
        self._procs: list[subprocess.Popen] = []
        self._default_shape = dict(rate=rate, delay=delay, loss=float(loss or 0))

    # ------------------------------------------------------------ lifecycle
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def start(self):
        cleanup_stale()
        self._closed = False
        atexit.register(self.close)
        self._old_handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:          # not the main thread: atexit/finally only
                pass
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _on_signal(self, signum, frame):
        self.close()
        old = self._old_handlers.get(signum)
        if callable(old):
            old(signum, frame)
        else:
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)

    def _build(self):
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        hosts_file = self.dir / "hosts"
        hosts_file.write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n" +
                              "".join(f"{h.ip} {h.name}\n" for h in self.hosts))
        _run("ip", "netns", "add", self.switch)
        _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for h in self.hosts:
            _run("ip", "netns", "add", h.netns)
            _run("ip", "link", "add", "name", h.port, "netns", self.switch, "type", "veth",
                 "peer", "name", "eth0", "netns", h.netns)
            _run("ip", "-n", self.switch, "link", "set", h.port, "master", "br0", "up")
            _run("ip", "-n", h.netns, "addr", "add", f"{h.ip}/24", "dev", "eth0")
            _run("ip", "-n", h.netns, "link", "set", "eth0", "up")
            _run("ip", "-n", h.netns, "link", "set", "lo", "up")
            # the holder: private /dev/shm, /etc/hosts, hostname; it lives
            # until killed or until the process that made the cluster dies
            script = (f"mount -t tmpfs -o size={self.shm_size},mode=1777 tmpfs /dev/shm && "
                      f"mount --bind {shlex.quote(str(hosts_file))} /etc/hosts && "
                      f"hostname {h.name} && echo ready && "
                      f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done")
            h.holder = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{h.netns}", "unshare", "-m", "-u",
                 "--propagation", "private", "sh", "-c", script],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                start_new_session=True)
            line = h.holder.stdout.readline()
            if line.strip() != "ready":
                raise ClusterError(f"holder of {h.name} did not start: {line!r}")
        for h in self.hosts:
            self.set_shape(h.index, **self._default_shape)
        self._write_wrapper()
        # every host reaches every other before anyone uses the cluster
        for h in self.hosts[1:]:
            self.wait_reachable(0, h.index)

    def _write_wrapper(self):
        cases = "".join(f"  {h.name}|{h.ip}) pid={h.pid} ;;\n" for h in self.hosts)
        self.wrapper = self.dir / "ssh"
        self.wrapper.write_text(
            "#!/bin/sh\n"
            "# hydra's ssh launcher calls: ssh [-x] HOST COMMAND...: enter HOST's namespaces\n"
            "while [ $# -gt 0 ] && [ \"${1#-}\" != \"$1\" ]; do shift; done\n"
            "host=$1; shift\n"
            "case $host in\n" + cases +
            "  *) echo \"cluster wrapper: unknown host $host\" >&2; exit 255 ;;\n"
            "esac\n"
            "exec nsenter -t $pid -m -u -n --wd=\"$PWD\" -- /bin/sh -c \"$*\"\n")
        self.wrapper.chmod(0o755)

    def close(self):
        if self._closed:
            return
        self._closed = True
        for p in self._procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for ns in [h.netns for h in self.hosts] + [self.switch]:
            _kill_netns(ns)
        for h in self.hosts:
            if h.holder is not None:
                try:
                    h.holder.kill()
                except ProcessLookupError:
                    pass
                h.holder.wait()
        for p in self._procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for ns in [h.netns for h in self.hosts] + [self.switch]:
            _run("ip", "netns", "del", ns, check=False)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        for sig, old in getattr(self, "_old_handlers", {}).items():
            try:
                signal.signal(sig, old)
            except (ValueError, TypeError):
                pass
        try:
            atexit.unregister(self.close)
        except Exception:
            pass

    # ------------------------------------------------------------ links
    def set_shape(self, host, rate=None, delay=None, loss=0.0):
        """Shape host's link, both directions: rate (tbf), delay/loss (netem,
        else loss by an iptables DROP rule on the host's OUTPUT)."""
        h = self.hosts[host]
        if self._netem is None and (delay or loss):
            self._netem = _have_netem()
        if delay and not self._netem:
            raise ClusterError("--delay needs the netem qdisc (sch_netem), which this kernel "
                               "does not have (tc: 'Specified qdisc kind is unknown')")
        for ns, dev in ((h.netns, "eth0"), (self.switch, h.port)):
            _run("tc", "-n", ns, "qdisc", "del", "dev", dev, "root", check=False)
            parent = ["root"]
            if self._netem and (delay or loss):
                args = ["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem"]
                if delay:
                    args += ["delay", delay]
                if loss and ns == h.netns:            # loss once per path: egress of the sender
                    args += ["loss", f"{100 * loss}%"]
                _run(*args)
                parent = ["parent", "1:"]
            if rate:
                bits = _rate_bits(rate)
                burst = max(int(bits / 8 * 0.001), 64 * 1024)     # ~1 ms of traffic
                _run("tc", "-n", ns, "qdisc", "add", "dev", dev, *parent, "handle", "2:", "tbf",
                     "rate", rate, "burst", str(burst), "latency", "20ms")
        if not self._netem:
            ipt = shutil.which("iptables-legacy") or shutil.which("iptables")
            rule = ["OUTPUT", "-o", "eth0", "-m", "statistic", "--mode", "random",
                    "--probability", "{p}", "-j", "DROP"]
            old = h.shape.get("loss") or 0
            if old and ipt:
                _run("ip", "netns", "exec", h.netns, ipt, "-D",
                     *[a.format(p=old) for a in rule], check=False)
            if loss:
                if ipt is None:
                    raise ClusterError("loss without netem needs iptables "
                                       "(apt-get install iptables)")
                _run("ip", "netns", "exec", h.netns, ipt, "-A", *[a.format(p=loss) for a in rule])
        h.shape = dict(rate=rate, delay=delay, loss=loss)

    def dropped(self, host) -> int:
        """Packets the loss shaping of host's link has dropped so far."""
        h = self.hosts[host]
        if self._netem:
            out = _run("tc", "-s", "-n", h.netns, "qdisc", "show", "dev", "eth0").stdout
            return sum(int(m) for m in re.findall(r"dropped (\d+)", out))
        ipt = shutil.which("iptables-legacy") or shutil.which("iptables")
        if ipt is None:
            return 0
        out = _run("ip", "netns", "exec", h.netns, ipt, "-L", "OUTPUT", "-v", "-x", "-n").stdout
        return sum(int(line.split()[0]) for line in out.splitlines()
                   if "DROP" in line and "statistic" in line)

    def link(self, host, up: bool):
        """Take host's link down (or up): its eth0 inside the host."""
        _run("ip", "-n", self.hosts[host].netns, "link", "set", "eth0", "up" if up else "down")

    def wait_reachable(self, src, dst, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            res = _run("ip", "netns", "exec", self.hosts[src].netns, "ping", "-c", "1", "-W", "1",
                       self.hosts[dst].ip, check=False) if shutil.which("ping") else None
            if res is None or res.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.hosts[dst].name} not reachable from "
                                   f"{self.hosts[src].name}: {res.stdout}")
            time.sleep(0.2)

    # ------------------------------------------------------------ processes
    def host_argv(self, host, argv, cwd=None):
        """argv run inside host's namespaces."""
        h = self.hosts[host]
        return ["nsenter", "-t", str(h.pid), "-m", "-u", "-n", f"--wd={cwd or os.getcwd()}",
                "--", *argv]

    def popen(self, host, argv, cwd=None, **kw):
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(self.host_argv(host, argv, cwd), cwd=cwd, **kw)
        self._procs.append(p)
        return p

    def host_pids(self, host):
        """Processes in host's network namespace, its holder excepted."""
        res = _run("ip", "netns", "pids", self.hosts[host].netns, check=False)
        return [int(x) for x in res.stdout.split() if x.isdigit() and int(x) != self.hosts[host].pid]

    def kill_host(self, host, sig=signal.SIGKILL, match=None):
        """Signal host's processes (those whose command line contains match)."""
        killed = []
        for pid in self.host_pids(host):
            if match is not None:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if match not in cmd:
                    continue
            try:
                os.kill(pid, sig)
                killed.append(pid)
            except ProcessLookupError:
                pass
        return killed

    def shm_files(self, host):
        """What is in host's /dev/shm."""
        res = _run(*self.host_argv(host, ["ls", "-A", "/dev/shm"], cwd="/"), check=False)
        return res.stdout.split()

    def mpirun_argv(self, argv, ranks_per_host=1, layout=None, mpirun=None, env=None):
        """The mpirun command (to run inside h0: see mpirun()) placing ranks by
        layout = ranks per host, e.g. [2, 1] (2+1), else ranks_per_host on
        every host: ``-hosts h0:2,h1:1 -n 3``.  env: -genv pairs."""
        layout = list(layout) if layout else [ranks_per_host] * self.nhosts
        if len(layout) > self.nhosts or any(n < 0 for n in layout) or sum(layout) < 1:
            raise ValueError(f"layout: expected at most {self.nhosts} non-negative rank "
                             f"counts, at least one rank, got {layout}")
        hosts = ",".join(f"{self.hosts[i].name}:{n}" for i, n in enumerate(layout) if n)
        cmd = [mpirun or find_mpirun(), "-launcher", "ssh", "-launcher-exec", str(self.wrapper),
               "-hosts", hosts]
        for k, v in (env or {}).items():
            cmd += ["-genv", k, str(v)]
        return cmd + ["-n", str(sum(layout)), *argv]

    def mpirun(self, argv, ranks_per_host=1, layout=None, env=None, timeout=300, cwd=None,
               popen_env=None):
        """Run an mpirun job (mpirun inside h0) to its end: (returncode, output);
        returncode None when it outlived timeout (then every rank is killed)."""
        p = self.popen(0, self.mpirun_argv(argv, ranks_per_host, layout, env=env), cwd=cwd,
                       env=popen_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            for h in self.hosts:
                self.kill_host(h.index)
            out, _ = p.communicate()
            return None, out
        return p.returncode, out

    def torchrun_argv(self, host, argv, nproc_per_node=1, port=29511):
        """torchrun agent of `host` (--nnodes N, c10d rendezvous on h0:port)."""
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(self.nhosts),
                "--nproc-per-node", str(nproc_per_node), "--node-rank", str(host),
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{self.hosts[0].ip}:{port}",
                "--rdzv-id", self.tag, *argv]


def find_mpirun() -> str:
    beside = Path(sys.executable).parent / "mpirun"
    if beside.is_file():
        return str(beside)
    found = shutil.which("mpirun")
    if not found:
        raise ClusterError(f"mpirun not found (looked at {beside} and on PATH)")
    return found


def _kill_netns(ns):
    res = _run("ip", "netns", "pids", ns, check=False)
    for pid in (int(x) for x in res.stdout.split() if x.isdigit()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cleanup_stale(verbose=False):
    """Delete the namespaces of clusters whose creating process is gone."""
    res = _run("ip", "netns", "list", check=False)
    for line in res.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX):].split("-")[0]
        if pid.isdigit() and Path(f"/proc/{pid}").exists() and int(pid) != -1:
            continue
        _kill_netns(name)
        _run("ip", "netns", "del", name, check=False)
        if verbose:
            print(f"removed stale namespace {name}")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="tools/cluster.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="make the cluster, run a command under mpirun, tear down")
    r.add_argument("--hosts", type=int, default=2)
    r.add_argument("--ranks-per-host", type=int, default=1)
    r.add_argument("--layout", help="ranks per host, e.g. 2,1 (overrides --ranks-per-host)")
    r.add_argument("--rate", help="link rate, tc syntax: 1gbit, 100mbit")
    r.add_argument("--delay", help="one-way delay per link end, tc syntax: 50us (needs netem)")
    r.add_argument("--loss", type=float, default=0.0, help="packet loss fraction on egress, 0.02 = 2%%")
    r.add_argument("--launcher", choices=("mpirun", "torchrun"), default="mpirun")
    r.add_argument("--port", type=int, default=29511, help="torchrun rendezvous port on h0")
    r.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                   help="environment for every rank (mpirun -genv)")
    r.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("cleanup", help="remove the namespaces of dead clusters")
    a = ap.parse_args(argv)
    if a.cmd == "cleanup":
        cleanup_stale(verbose=True)
        return 0
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("run: no command given (put it after --)")
    env = dict(kv.split("=", 1) for kv in a.env)
    layout = [int(x) for x in a.layout.split(",")] if a.layout else None
    with Cluster(hosts=a.hosts, rate=a.rate, delay=a.delay, loss=a.loss) as c:
        if a.launcher == "mpirun":
            p = c.popen(0, c.mpirun_argv(cmd, a.ranks_per_host, layout, env=env))
            return p.wait()
        agents = [c.popen(h.index, c.torchrun_argv(h.index, cmd, a.ranks_per_host, a.port),
                          env={**os.environ, **env}) for h in c.hosts]
        return max(abs(p.wait()) for p in agents)


if __name__ == "__main__":
    sys.exit(main())
