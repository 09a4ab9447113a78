"""The straggler report: who the other ranks waited for (docs/stragglers.md).

The C core records, for every collective call, this rank's arrival time
(CLOCK_MONOTONIC, when the call starts running here) under the call's
sequence number, in a ring of the last 4096 calls: no message is added to
any call.  ``comm.stragglers(reset=False)`` is itself collective: the ranks
all-gather their recorded times of the calls since the last reset and each
computes the same summary from the same numbers.

Definitions (per call c, times in rank 0's clock):

- lateness of rank r in c: its arrival minus the earliest arrival in c
  (how long the first rank to arrive waited for r; 0 for that first rank);
- the last rank of c is the one with the latest arrival; the time it held
  the others up is its arrival minus the second-latest arrival (how much
  sooner the call could have started had it arrived with the others);
- per rank: the calls it arrived last in, the median and 99th percentile of
  its lateness, and the total time it held the others up ("waited_for").
- the straggler: the rank with the highest median lateness, when that is
  at least 1 ms and at least 3 times the next rank's median (None when no
  rank stands out).

Clock offsets: ranks on the same kernel (the same
/proc/sys/kernel/random/boot_id) share CLOCK_MONOTONIC: offset 0.  A rank on
another kernel estimates its offset to rank 0 with a few ping-pongs
(Cristian's method: the round trip with the smallest RTT; error at most
RTT/2), at every report, and subtracts it from its times.
"""
import os
import socket
import time

import numpy as np

RING = 4096                 # calls kept (csrc/core.h RC_STRAG_RING)
MIN_LATENESS = 1e-3         # a straggler is at least this late (median, seconds) ...
FACTOR = 3.0                # ... and this many times later than the next rank
PINGS = 8                   # Cristian round trips per rank on another kernel
_TAG = (1 << 30) + (1 << 24)  # reserved tag of the ping-pongs (split uses 2**30 + small)
_NAME_BYTES = 96


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown:" + socket.gethostname()


def _allgather_text(comm, text):
    raw = text.encode()[:_NAME_BYTES].ljust(_NAME_BYTES, b"\0")
    out = np.empty(_NAME_BYTES * comm.size, np.uint8)
    comm.allgather(np.frombuffer(raw, np.uint8).copy(), out)
    return [bytes(out[r * _NAME_BYTES:(r + 1) * _NAME_BYTES]).rstrip(b"\0").decode("utf-8", "replace")
            for r in range(comm.size)]


def clock_offset(comm, boots, force=False):
    """Cristian's method against rank 0, for the ranks whose kernel (boot id)
    differs from rank 0's (all ranks but 0 with force=True): returns
    (offset, rtt) on this rank, offset = this clock minus rank 0's (0, 0 for
    ranks that share rank 0's clock).  Collective over those ranks and rank 0."""
    need = [r for r in range(comm.size) if r != 0 and (force or boots[r] != boots[0])]
    buf = np.zeros(1, np.float64)
    if comm.rank == 0:
        for r in need:
            for _ in range(PINGS):
                comm.recv(buf, r, _TAG, _reserved=True)
                buf[0] = time.monotonic()
                comm.send(buf, r, _TAG, _reserved=True)
        return 0.0, 0.0
    if comm.rank not in need:
        return 0.0, 0.0
    best = None
    for _ in range(PINGS):
        t0 = time.monotonic()
        comm.send(buf, 0, _TAG, _reserved=True)
        comm.recv(buf, 0, _TAG, _reserved=True)
        t1 = time.monotonic()
        if best is None or t1 - t0 < best[1]:
            best = (float((t0 + t1) / 2 - buf[0]), t1 - t0)
    return best


def _state(comm):
    """Hosts, kernels and the window start, gathered on first use (quiet)."""
    st = comm._strag
    if st is None:
        host = os.environ.get("RINGCOMM_HOST_ID") or socket.gethostname()
        st = comm._strag = {"first": 0, "hosts": _allgather_text(comm, host),
                            "boots": _allgather_text(comm, _boot_id()), "offset": 0.0}
    return st


def setup(comm):
    """At connect, when RINGCOMM_STRAGGLER is on (bootstrap.py): hosts and
    clock offsets for the periodic line (collective, quiet)."""
    comm._set_quiet(True)
    try:
        st = _state(comm)
        st["offset"] = clock_offset(comm, st["boots"])[0]
        comm._set_clock_offset(st["offset"])
    finally:
        comm._set_quiet(False)


def report(comm, reset=False):
    """comm.stragglers(): see the module docstring."""
    if not isinstance(reset, (bool, np.bool_)):
        raise TypeError("reset: expected a bool, got %r" % (reset,))
    comm._set_quiet(True)
    try:
        # a quiet barrier first: calls posted before (async) have all run,
        # so the sequence number below is the same on every rank
        comm.barrier()
        st = _state(comm)
        st["offset"] = clock_offset(comm, st["boots"])[0]
        comm._set_clock_offset(st["offset"])
        seq = comm._seq()
        total = (seq - st["first"]) % (1 << 32)
        n = min(total, RING)
        mine = comm._arrivals((seq - n) % (1 << 32), n) - st["offset"]
        times = np.empty(comm.size * n, np.float64)
        comm.allgather(mine, times)
        if reset:
            st["first"] = comm._seq()
    finally:
        comm._set_quiet(False)
    return StragglerReport(times.reshape(comm.size, n), st["hosts"], total)


class StragglerReport:
    """The same summary on every rank (see ringcomm.stragglers' docstring).

    Attributes: ``ncalls`` (calls summarised), ``calls_since_reset`` (all of
    them; only the last 4096 are kept), ``straggler`` (a rank, or None),
    ``ranks`` (one dict per rank: rank, host, last, median_lateness,
    p99_lateness, waited_for; seconds), ``median_skew`` (median over calls
    of latest minus earliest arrival)."""

    def __init__(self, times, hosts, since_reset):
        p = times.shape[0]
        ok = np.all(np.isfinite(times), axis=0) if times.size else np.zeros(0, bool)
        t = times[:, ok]
        self.ncalls = int(t.shape[1])
        self.calls_since_reset = int(since_reset)
        self.size = p
        late = t - t.min(axis=0) if self.ncalls else t
        last = np.argmax(t, axis=0) if self.ncalls else np.zeros(0, int)
        if p > 1 and self.ncalls:
            srt = np.sort(t, axis=0)
            held = srt[-1] - srt[-2]
            self.median_skew = float(np.median(srt[-1] - srt[0]))
        else:
            held = np.zeros(self.ncalls)
            self.median_skew = 0.0
        self.ranks = []
        for r in range(p):
            mine = last == r
            self.ranks.append({
                "rank": r, "host": hosts[r] if r < len(hosts) else "?",
                "last": int(mine.sum()),
                "median_lateness": float(np.median(late[r])) if self.ncalls else 0.0,
                "p99_lateness": float(np.percentile(late[r], 99)) if self.ncalls else 0.0,
                "waited_for": float(held[mine].sum()) if self.ncalls else 0.0,
            })
        self.straggler = None
        if p > 1 and self.ncalls:
            meds = sorted(((d["median_lateness"], d["rank"]) for d in self.ranks), reverse=True)
            (m1, r1), (m2, _) = meds[0], meds[1]
            if m1 >= MIN_LATENESS and m1 >= FACTOR * m2:
                self.straggler = r1

    def as_dict(self):
        return {"ncalls": self.ncalls, "calls_since_reset": self.calls_since_reset,
                "straggler": self.straggler, "median_skew": self.median_skew,
                "ranks": [dict(d) for d in self.ranks]}

    def __str__(self):
        head = ("stragglers over %d calls%s: %s; median arrival skew %.3f ms"
                % (self.ncalls,
                   "" if self.calls_since_reset <= RING
                   else " (the last %d kept of %d since reset)" % (RING, self.calls_since_reset),
                   "rank %d (host %s) is the straggler"
                   % (self.straggler, self.ranks[self.straggler]["host"])
                   if self.straggler is not None else "no rank stands out",
                   self.median_skew * 1e3))
        rows = ["%4s  %-16s %6s %12s %12s %12s" % ("rank", "host", "last", "median(ms)",
                                                 "p99(ms)", "waited(s)")]
        for d in self.ranks:
            rows.append("%4d  %-16s %6d %12.3f %12.3f %12.4f%s"
                        % (d["rank"], d["host"][:16], d["last"], d["median_lateness"] * 1e3,
                           d["p99_lateness"] * 1e3, d["waited_for"],
                           "  <- straggler" if d["rank"] == self.straggler else ""))
        return "\n".join([head] + rows)

    def __repr__(self):
        return "<StragglerReport %d calls, straggler %r>" % (self.ncalls, self.straggler)
