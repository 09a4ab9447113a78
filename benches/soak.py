"""Soak: many all-reduces and communicator create/close cycles, watching for leaks.

    mpirun -n 2 python benches/soak.py [--small N] [--large N] [--comms N] [--check]

Per rank it samples, at start (before the first communicator), after warm-up,
at intervals through each phase and at the end (every communicator closed):

  rss    resident memory, VmRSS from /proc/self/status
  heap   bytes malloc has handed out and not got back (glibc mallinfo2, all
         arenas): finds a small per-call leak in the C core long before RSS does
  fds    open file descriptors, len(os.listdir('/proc/self/fd'))
  thr    threads, len(os.listdir('/proc/self/task')) (progress threads joined?)
  maps   ringcomm shared-memory segments this process has mapped
         (/dev/shm/ringcomm-* lines of /proc/self/maps)

Phases, after a warm-up of each (first-call allocations are not leaks):

  small  --small all-reduces of one float64 (8 B), every 4th iteration as two
         async requests (async_op=True, waited in reverse order) so the
         progress-thread path soaks too
  large  --large all-reduces of 16 MiB float32, every other one async
  comms  --comms cycles of Communicator.from_mpi(MPI.COMM_WORLD), one
         all-reduce on it, close(), close() again (harmless), and a call after
         close (must raise RingcommError)

Every result is checked (a soak that computes garbage proves nothing).  Rank 0
prints one table with every rank's samples and the growth since warm-up.
With --check the run exits 1 when, after warm-up, RSS grows by more than
--rss-bound-mib or the malloc heap by more than --heap-bound-kib at any
sample, any fd or thread is left open, a segment stays mapped after close, or
a /dev/shm/ringcomm-* entry created during the run is still there at the end.
tests/test_soak.py runs a shorter version under pytest (tests/mpi/soak.py).
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import sys
import time

import numpy as np
from mpi4py import MPI

import ringcomm

SHM_GLOB = "/dev/shm/ringcomm-*"
LARGE_BYTES = 16 << 20

# Documented bounds for --check: growth after warm-up, per rank, at any sample.
# Measured (2 and 4 ranks, 20000/100/100 and the defaults): RSS +0.1..0.3 MiB,
# heap +1.5 KiB at most.  RSS moves by a few MiB on its own (malloc keeping
# freed memory, MPI's internal buffers), so its bound is loose: it catches a
# leaked 16 MiB buffer or ~8 MiB of anything.  The malloc heap is exact: 64 KiB
# is ~2.5 bytes per call over the ~26000 calls of tests/test_soak.py, or 640
# bytes per communicator over its 100 create/close cycles.
DEFAULT_RSS_BOUND_MIB = 8.0
DEFAULT_HEAP_BOUND_KIB = 64.0


# --------------------------------------------------------------------------
# probes
# --------------------------------------------------------------------------

class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]


def _load_mallinfo2():
    try:
        libc = ctypes.CDLL(None)
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None                          # not glibc >= 2.33: no heap column
    fn.restype = _Mallinfo2
    fn.argtypes = []
    return fn


_MALLINFO2 = _load_mallinfo2()


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def heap_bytes() -> int:
    """Bytes in use by malloc (small chunks + mmapped chunks), or -1."""
    if _MALLINFO2 is None:
        return -1
    m = _MALLINFO2()
    return int(m.uordblks + m.hblkhd)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def mapped_segments() -> int:
    """ringcomm shared-memory segments this process has mapped."""
    paths = set()
    with open("/proc/self/maps") as f:
        for line in f:
            if "/dev/shm/ringcomm-" in line:
                paths.add(line.split(None, 5)[-1].strip())
    return len(paths)


def shm_entries() -> set[str]:
    return set(glob.glob(SHM_GLOB))


def snapshot(label: str) -> dict:
    return {"label": label, "t": time.monotonic(), "rss_kib": rss_kib(), "heap": heap_bytes(),
            "fds": fd_count(), "threads": thread_count(), "maps": mapped_segments()}


# --------------------------------------------------------------------------
# the workload
# --------------------------------------------------------------------------

class Soak:
    def __init__(self, world, intervals=5, log=None):
        self.world = world
        self.rank = world.Get_rank()
        self.size = world.Get_size()
        self.intervals = max(1, intervals)
        self.samples: list[dict] = []
        self.calls = 0
        self.log = log or (lambda *a: None)
        # expected sum over ranks of (rank + 1) and of (rank + 1) * k
        self.tri = self.size * (self.size + 1) // 2

    def sample(self, label):
        s = snapshot(label)
        s["calls"] = self.calls
        self.samples.append(s)
        return s

    def _marks(self, n):
        """Iterations after which a phase takes an intermediate sample."""
        return {n * k // self.intervals for k in range(1, self.intervals)} - {0, n}

    # -- small: 8-byte all-reduces, blocking and async ------------------------
    def small(self, comm, n, label):
        a = np.zeros(1, np.float64)
        b = np.zeros(1, np.float64)
        marks = self._marks(n) if label else set()
        me = float(self.rank + 1)
        for i in range(n):
            if i % 4 == 3:
                a[0] = me
                b[0] = me * 2.0
                ra = comm.allreduce(a, async_op=True)
                rb = comm.allreduce(b, async_op=True)
                if rb.wait() is not b or ra.wait() is not a:
                    raise AssertionError("Request.wait() did not return the buffer")
                if a[0] != self.tri or b[0] != 2 * self.tri:
                    raise AssertionError(f"async small all-reduce {i}: got {a[0]}, {b[0]}, "
                                         f"expected {self.tri}, {2 * self.tri}")
                self.calls += 2
            else:
                a[0] = me
                comm.allreduce(a)
                if a[0] != self.tri:
                    raise AssertionError(f"small all-reduce {i}: got {a[0]}, expected {self.tri}")
                self.calls += 1
            if i + 1 in marks:
                self.sample(f"{label} {i + 1}/{n}")

    # -- large: 16 MiB all-reduces, every other one async ---------------------
    def large(self, comm, n, label, x=None):
        count = LARGE_BYTES // 4
        if x is None:
            # allocated once (before warm-up ends): the checks make no temporaries
            # (glibc keeps a freed 4 MiB temporary resident, which reads as growth)
            x = np.empty(count, np.float32)
            self._eq = np.empty(count, np.bool_)
            self._eq_stride = np.empty((count + 4098) // 4099, np.bool_)
        eq, eq_stride = self._eq, self._eq_stride
        marks = self._marks(n) if label else set()
        for i in range(n):
            k = float(i % 7 + 1)
            x.fill((self.rank + 1) * k)
            if i % 2:
                req = comm.allreduce(x, async_op=True)
                req.wait()
            else:
                comm.allreduce(x)
            self.calls += 1
            want = np.float32(self.tri * k)
            # ends and a stride of the middle every time, all of it now and then
            if x[0] != want or x[-1] != want or \
                    not np.equal(x[::4099], want, out=eq_stride).all() or \
                    (i % 16 == 0 and not np.equal(x, want, out=eq).all()):
                bad = np.flatnonzero(x != want)
                raise AssertionError(f"large all-reduce {i}: {bad.size} wrong elements, "
                                     f"first {bad[:5]}: {x[bad[:5]]}, expected {want}")
            if i + 1 in marks:
                self.sample(f"{label} {i + 1}/{n}")
        return x

    # -- communicator create / close cycles ------------------------------------
    def comms(self, n, label):
        marks = self._marks(n) if label else set()
        y = np.zeros(3, np.int64)
        for i in range(n):
            c = ringcomm.Communicator.from_mpi(self.world)
            y[:] = (self.rank + 1, i, 1)
            c.allreduce(y)
            if list(y) != [self.tri, i * self.size, self.size]:
                raise AssertionError(f"cycle {i}: all-reduce on a new communicator gave {y}")
            c.close()
            c.close()                            # twice: harmless
            try:
                c.allreduce(y)
            except ringcomm.RingcommError:
                pass
            else:
                raise AssertionError("allreduce on a closed communicator did not raise "
                                     "RingcommError")
            self.calls += 1
            if i + 1 in marks:
                self.sample(f"{label} {i + 1}/{n}")

    # -- the whole run ---------------------------------------------------------
    def run(self, n_small, n_large, n_comms, warm_small=1000, warm_large=4, warm_comms=5):
        shm_before = shm_entries()
        self.world.Barrier()
        self.sample("start")
        comm = ringcomm.Communicator.from_mpi(self.world)
        x = None
        # warm-up: every path once or a few times (first-call allocations)
        self.small(comm, min(warm_small, n_small), None)
        if n_large:
            x = self.large(comm, min(warm_large, n_large), None)
        self.comms(min(warm_comms, n_comms), None)
        self.world.Barrier()
        self.sample("warm-up")
        t0 = time.monotonic()
        self.small(comm, n_small, "small")
        self.world.Barrier()
        self.sample(f"small {n_small}/{n_small}")
        self.t_small = time.monotonic() - t0
        t0 = time.monotonic()
        if n_large:
            self.large(comm, n_large, "large", x)
        self.world.Barrier()
        self.sample(f"large {n_large}/{n_large}")
        self.t_large = time.monotonic() - t0
        t0 = time.monotonic()
        self.comms(n_comms, "comms")
        self.world.Barrier()
        self.sample(f"comms {n_comms}/{n_comms}")
        self.t_comms = time.monotonic() - t0
        # the buffers go, so that start -> end shows what the run kept
        del x
        self._eq = self._eq_stride = None
        # the world communicator: close twice, use after close raises
        comm.close()
        comm.close()
        try:
            comm.barrier()
        except ringcomm.RingcommError:
            pass
        else:
            raise AssertionError("barrier on a closed communicator did not raise RingcommError")
        self.world.Barrier()
        end = self.sample("end (all closed)")
        # /dev/shm names this job created that are still there; other jobs on
        # the machine may hold theirs for a moment, so only what stays counts
        new = shm_entries() - shm_before
        deadline = time.monotonic() + 3.0
        while new and time.monotonic() < deadline:
            time.sleep(0.1)
            new &= shm_entries()
        end["shm_left"] = sorted(new)
        return self.samples

    # -- verdict -------------------------------------------------------------------
    def failures(self, rss_bound_mib, heap_bound_kib):
        """Problems of this rank, one line per kind (at its worst sample)."""
        s = self.samples
        warm = next(x for x in s if x["label"] == "warm-up")
        open_ = s[s.index(warm):-1]                  # world communicator open
        end = s[-1]
        worst = {}                                   # kind -> (badness, message, samples)

        def bad(kind, amount, msg):
            old = worst.get(kind)
            n = old[2] + 1 if old else 1
            if old is None or amount >= old[0]:
                worst[kind] = (amount, msg, n)
            else:
                worst[kind] = (old[0], old[1], n)

        for x in open_:
            if x["fds"] != warm["fds"]:
                bad("fds", abs(x["fds"] - warm["fds"]),
                    f"fds {warm['fds']} after warm-up, {x['fds']} at '{x['label']}'")
            if x["threads"] != warm["threads"]:
                bad("threads", abs(x["threads"] - warm["threads"]),
                    f"threads {warm['threads']} after warm-up, {x['threads']} at '{x['label']}'")
            if x["maps"] != 1:
                bad("maps", abs(x["maps"] - 1), f"{x['maps']} ringcomm segments mapped at "
                    f"'{x['label']}' (expected 1: the world communicator)")
        for x in s[s.index(warm):]:
            grow = (x["rss_kib"] - warm["rss_kib"]) / 1024.0
            if grow > rss_bound_mib:
                bad("rss", grow, f"RSS grew by {grow:.1f} MiB after warm-up at '{x['label']}' "
                    f"(bound {rss_bound_mib} MiB)")
            if warm["heap"] >= 0:
                hgrow = (x["heap"] - warm["heap"]) / 1024.0
                if hgrow > heap_bound_kib:
                    bad("heap", hgrow, f"malloc heap grew by {hgrow:.0f} KiB after warm-up at "
                        f"'{x['label']}' (bound {heap_bound_kib:.0f} KiB)")
        out = [msg + (f" [{n} samples over]" if n > 1 else "")
               for _, msg, n in worst.values()]
        if end["maps"]:
            out.append(f"{end['maps']} ringcomm segments still mapped after every close()")
        # with every communicator closed, neither fds nor threads above warm-up
        # (which had the world communicator open)
        if end["fds"] > warm["fds"]:
            out.append(f"fds {warm['fds']} after warm-up, {end['fds']} after closing all")
        if end["threads"] > warm["threads"]:
            out.append(f"threads {warm['threads']} after warm-up, {end['threads']} "
                       "after closing all")
        if end.get("shm_left"):
            out.append(f"/dev/shm entries left: {end['shm_left']}")
        return [f"rank {self.rank}: {f}" for f in out]


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def _mib(kib):
    return f"{kib / 1024.0:8.1f}"


def _heap(b):
    return "       -" if b < 0 else f"{b / 1048576.0:8.2f}"


def format_report(all_samples, times=None):
    """One table: a row per sample label, per rank RSS/heap MiB, fds, threads, maps."""
    nr = len(all_samples)
    head = f"{'sample':<20} {'calls':>8}" + "".join(
        f" | r{r} {'rss MiB':>8} {'heap MiB':>8} {'fds':>4} {'thr':>3} {'maps':>4}"
        for r in range(nr))
    lines = [head, "-" * len(head)]
    for row in zip(*all_samples):
        line = f"{row[0]['label']:<20} {row[0]['calls']:>8}"
        for x in row:
            line += (f" | {'':>2} {_mib(x['rss_kib'])} {_heap(x['heap'])} {x['fds']:>4} "
                     f"{x['threads']:>3} {x['maps']:>4}")
        lines.append(line)
    lines.append("-" * len(head))
    for name, a, b in (("growth start->end", "start", None),
                       ("growth warm-up->max", "warm-up", "max")):
        line = f"{name:<20} {'':>8}"
        for s in all_samples:
            base = next(x for x in s if x["label"] == a)
            after = s[s.index(base):]
            if b == "max":
                last = {"rss_kib": max(x["rss_kib"] for x in after),
                        "heap": max(x["heap"] for x in after),
                        "fds": max(x["fds"] for x in after[:-1]),
                        "threads": max(x["threads"] for x in after[:-1]),
                        "maps": max(x["maps"] for x in after[:-1])}
            else:
                last = s[-1]
            dh = "       -" if base["heap"] < 0 else \
                f"{(last['heap'] - base['heap']) / 1048576.0:+8.2f}"
            line += (f" | {'':>2} {(last['rss_kib'] - base['rss_kib']) / 1024.0:+8.1f} {dh} "
                     f"{last['fds'] - base['fds']:+4d} {last['threads'] - base['threads']:+3d} "
                     f"{last['maps'] - base['maps']:+4d}")
        lines.append(line)
    left = [x for s in all_samples for x in s[-1].get("shm_left", [])]
    lines.append(f"/dev/shm/ringcomm-* entries created during the run and left at the end: "
                 f"{len(left)}" + (f" {sorted(left)}" if left else ""))
    if times:
        lines.append("phase times (rank 0): " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=100_000, help="8-byte all-reduces (100000)")
    p.add_argument("--large", type=int, default=1000, help="16 MiB all-reduces (1000)")
    p.add_argument("--comms", type=int, default=200, help="communicator create/close cycles (200)")
    p.add_argument("--intervals", type=int, default=5, help="samples per phase (5)")
    p.add_argument("--check", action="store_true", help="exit 1 when a bound is crossed")
    p.add_argument("--rss-bound-mib", type=float, default=DEFAULT_RSS_BOUND_MIB,
                   help=f"allowed RSS growth after warm-up ({DEFAULT_RSS_BOUND_MIB} MiB)")
    p.add_argument("--heap-bound-kib", type=float, default=DEFAULT_HEAP_BOUND_KIB,
                   help=f"allowed malloc heap growth after warm-up ({DEFAULT_HEAP_BOUND_KIB:.0f} KiB)")
    p.add_argument("--json", metavar="FILE", help="also write every rank's samples as JSON")
    a = p.parse_args(argv)
    world = MPI.COMM_WORLD
    soak = Soak(world, a.intervals)
    soak.run(a.small, a.large, a.comms)
    fails = soak.failures(a.rss_bound_mib, a.heap_bound_kib)
    all_samples = world.gather(soak.samples, root=0)
    all_fails = world.allgather(fails)
    if soak.rank == 0:
        print(f"ringcomm soak: {soak.size} ranks, {a.small} x 8 B, {a.large} x 16 MiB all-reduces, "
              f"{a.comms} create/close cycles (ringcomm {ringcomm.__version__})")
        print(format_report(all_samples, {"small": soak.t_small, "large": soak.t_large,
                                          "comms": soak.t_comms}))
        flat = [f for fl in all_fails for f in fl]
        if flat:
            print(f"{len(flat)} problem(s) (bounds: RSS +{a.rss_bound_mib} MiB, "
                  f"heap +{a.heap_bound_kib:.0f} KiB after warm-up):")
            print("\n".join("  " + f for f in flat))
        else:
            print(f"no leak: fds, threads and mapped segments back to their counts, no /dev/shm "
                  f"entry left, growth within RSS +{a.rss_bound_mib} MiB / heap "
                  f"+{a.heap_bound_kib:.0f} KiB after warm-up")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"size": soak.size, "samples": all_samples, "problems": all_fails}, f,
                          indent=1)
        sys.stdout.flush()
    bad = any(all_fails)
    return 1 if (a.check and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
