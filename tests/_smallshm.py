"""Run an mpirun job with a small /dev/shm: a private mount namespace whose
/dev/shm is a fresh tmpfs of a given size, as in a Docker container (whose
default --shm-size is 64 MiB).

    unshare -m --propagation private sh -c '
        mount -t tmpfs -o size=64m tmpfs /dev/shm && mpirun ...; ls /dev/shm'

mpirun and every rank are children of that shell, so they all share the
namespace and see only the small tmpfs; it vanishes with the namespace when
the job ends, so what the job left behind is listed from inside, by the same
shell, after mpirun returns (the SMALLSHM-LEFT line).  The host's /dev/shm is
untouched.

Making the namespace needs root (or CAP_SYS_ADMIN): where it is impossible
the test FAILS saying why; it never skips (CI runs as root).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

import pytest

# MPICH's own shared memory lives in the same tmpfs: with its defaults it takes
# ~5.1 MiB per rank (measured, MPICH 5.0.2 ch4:ucx: ~4 MiB of UCX posix shm
# and ~1 MiB of iqueue cells per rank), i.e. 41 MiB of a 64 MiB /dev/shm at
# 8 ranks, and at 16 ranks it does not fit in 64 MiB by itself (it
# segfaults).  These settings shrink it to ~2 MiB at 16 ranks (UCX without
# its shm transports, 8 iqueue cells per rank), so that the tmpfs measures
# ringcomm, the bootstrap being nearly free.  Pass lean_mpich=False for the
# defaults a user would have.
LEAN_MPICH_ENV = {"UCX_TLS": "tcp,self", "MPIR_CVAR_CH4_SHM_POSIX_IQUEUE_NUM_CELLS": "8"}

# $1 = tmpfs size, the rest = the mpirun command line.
SCRIPT = r"""
size=$1; shift
mount -t tmpfs -o "size=$size,mode=1777" tmpfs /dev/shm || {
    echo "SMALLSHM-MOUNT-FAILED size=$size"; exit 97; }
echo "SMALLSHM-MOUNTED size=$size kib=$(df -k /dev/shm | awk 'NR==2 {print $2}')"
"$@"
rc=$?
echo "SMALLSHM-LEFT:$(ls -A /dev/shm | tr '\n' ' ')"
echo "SMALLSHM-EXIT rc=$rc"
exit $rc
"""

MOUNTED = re.compile(r"^SMALLSHM-MOUNTED size=(\S+) kib=(\d+)", re.M)
LEFT = re.compile(r"^SMALLSHM-LEFT:(.*)$", re.M)
# How MPICH's hydra (and a shell) report a rank that died by a signal: hydra
# gives the signal number as the EXIT CODE (7 SIGBUS, 9 SIGKILL, 11 SIGSEGV,
# 6 SIGABRT).  Not "Terminated (signal 15)": hydra's own clean-up after any
# failing rank, e.g. an uncaught exception (EXIT CODE 1).
SIGNAL_DEATH = re.compile(r"KILLED BY SIGNAL|Bus error|Segmentation fault|core dumped|"
                          r"EXIT CODE: (?:6|7|9|11|13[0-9]|14[0-9])\b", re.I)


@functools.lru_cache(maxsize=None)
def _namespace_problem() -> str | None:
    """None if a private mount namespace with a tmpfs on /dev/shm can be made,
    else the reason it cannot."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "unshare(1) not found on PATH (util-linux)"
    try:
        p = subprocess.run([unshare, "-m", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /dev/shm && "
                            "df -k /dev/shm | awk 'NR==2 {print $2}'"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"running unshare failed: {e!r}"
    if p.returncode != 0 or p.stdout.strip() != "1024":
        return (f"`unshare -m --propagation private sh -c 'mount -t tmpfs -o size=1m tmpfs "
                f"/dev/shm'` failed (exit {p.returncode}, uid {os.getuid()}): "
                f"{(p.stderr or p.stdout).strip()}")
    return None


def require_namespaces() -> None:
    """FAIL (never skip) the calling test when the namespace cannot be made."""
    why = _namespace_problem()
    if why:
        pytest.fail("the small-/dev/shm tests need a private mount namespace with a tmpfs on "
                    f"/dev/shm (root or CAP_SYS_ADMIN; CI runs as root) and cannot make one: "
                    f"{why}", pytrace=False)


class SmallShmResult:
    """An MpiResult plus what the namespace's shell reported."""

    def __init__(self, res, size):
        self.returncode = res.returncode
        self.output = res.output
        self.nprocs = res.nprocs
        self.size = size
        self.ok_lines = res.ok_lines
        m = MOUNTED.search(res.output)
        self.mounted_kib = int(m.group(2)) if m else None
        left = LEFT.search(res.output)
        self.left = left.group(1).split() if left else None

    def ringcomm_left(self):
        return [f for f in (self.left or []) if f.startswith("ringcomm-")]

    def signal_deaths(self):
        return [line for line in self.output.splitlines() if SIGNAL_DEATH.search(line)
                and not line.startswith("SMALLSHM-")]

    def describe(self, why):
        return (f"{why}\n(mpirun job at {self.nprocs} ranks in a {self.size} /dev/shm, exit "
                f"{self.returncode})\n---------------- output ----------------\n{self.output}"
                "\n----------------------------------------")


def run_in_small_shm(launch, size, nprocs, worker, *args, env=None, timeout=300,
                     expect_success=True, lean_mpich=True):
    """launch(nprocs, worker, *args) (conftest's run_mpi fixture) inside a private mount namespace whose
    /dev/shm is a tmpfs of `size` (a mount(8) size: "64m", "8m", "1g").

    Fails the test unless the tmpfs was mounted and the closing listing was
    printed; with expect_success also unless the job passed (conftest's
    checks) and left no ringcomm-* file in the tmpfs."""
    require_namespaces()
    env = {**(LEAN_MPICH_ENV if lean_mpich else {}), **(env or {})}

    def wrap(cmd):
        return [shutil.which("unshare"), "-m", "--propagation", "private",
                "sh", "-c", SCRIPT, "smallshm", size, *cmd]

    res = SmallShmResult(launch(nprocs, worker, *args, env=env, timeout=timeout,
                                expect_success=expect_success, wrap=wrap), size)
    if res.mounted_kib is None or res.left is None:
        pytest.fail(res.describe("the namespace's shell did not report the mount and the "
                                 "closing /dev/shm listing"), pytrace=False)
    if expect_success and res.ringcomm_left():
        pytest.fail(res.describe(f"the job left {res.ringcomm_left()} in its /dev/shm"),
                    pytrace=False)
    return res


def _fail(res, why):
    pytest.fail(res.describe(why), pytrace=False)


def assert_completed(res):
    """The shm_fit.py job ran to the end on every rank with correct results:
    no rank died by a signal, none raised at init, nothing left in /dev/shm."""
    deaths = res.signal_deaths()
    if deaths:
        _fail(res, f"a rank died by a signal (SIGBUS is a /dev/shm too small for pages "
                   f"the segment promised): {deaths[:3]}")
    errors = [line for line in res.output.splitlines() if "SHM-FIT-INIT-ERROR" in line]
    if errors:
        _fail(res, f"the communicator did not fit in a {res.size} /dev/shm at {res.nprocs} "
                   f"ranks (expected to fit): {errors[:2]}")
    if res.returncode != 0:
        _fail(res, f"the job failed with exit code {res.returncode}")
    ok = sorted(int(r) for r in re.findall(r"SHM-FIT-OK rank=(\d+)", res.output))
    if ok != list(range(res.nprocs)) or len(res.ok_lines()) != res.nprocs:
        _fail(res, "not every rank reported SHM-FIT-OK and RINGCOMM-WORKER-OK")
    if res.ringcomm_left():
        _fail(res, f"the job left {res.ringcomm_left()} in its /dev/shm")


# The fixes a "does not fit" message must name.
FIXES = ("--shm-size", "RINGCOMM_CHUNK_BYTES", "RINGCOMM_NSLOTS")


def init_errors(res):
    """{rank: message} of the SHM-FIT-INIT-ERROR lines."""
    return {int(r): text for r, text in
            re.findall(r"SHM-FIT-INIT-ERROR rank=(\d+) status=\S+: (.*)$", res.output, re.M)}


def clear_error_problems(text):
    """What a RingcommError text lacks to be the clear "/dev/shm too small"
    error: the bytes needed, the bytes free on /dev/shm, and the fixes."""
    missing = []
    low = text.lower()
    if "/dev/shm" not in text:
        missing.append("'/dev/shm'")
    if "need" not in low:
        missing.append("the bytes needed ('need...')")
    if "free" not in low:
        missing.append("the bytes free ('free')")
    if len(re.findall(r"\d{4,}|\d+(?:\.\d+)?\s*[KMGT]i?B", text)) < 2:
        missing.append("two byte counts (needed and free)")
    missing += [f"the fix {fix!r}" for fix in FIXES if fix not in text]
    return missing


def assert_clear_error(res):
    """Every rank raised RingcommError at init naming bytes needed/free and
    the fixes; no rank died by a signal; the job ended normally; nothing left."""
    deaths = res.signal_deaths()
    if deaths:
        _fail(res, f"a rank died by a signal instead of raising RingcommError at init: "
                   f"{deaths[:3]}")
    errs = init_errors(res)
    if sorted(errs) != list(range(res.nprocs)):
        _fail(res, f"RingcommError at init on ranks {sorted(errs)}, expected on every rank "
                   f"0..{res.nprocs - 1}")
    for r, text in sorted(errs.items()):
        missing = clear_error_problems(text)
        if missing:
            _fail(res, f"rank {r}'s error lacks {', '.join(missing)}: {text}")
    if res.returncode != 0:
        _fail(res, f"the job failed with exit code {res.returncode} after the init errors")
    if res.ringcomm_left():
        _fail(res, f"the failed init left {res.ringcomm_left()} in its /dev/shm")
