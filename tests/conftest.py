"""Shared pytest configuration and helpers for the ringcomm test suite.

This file is the suite's whole configuration (there is no pytest.ini):

* markers are registered here (``mpi`` for tests that launch ``mpirun``);
* every test gets a pytest-timeout marker (default 600 s) unless it sets its
  own, as a second safety net behind the subprocess timeouts;
* ``tests/mpi/`` holds mpirun workers, not test modules, and is not collected;
* every test is wrapped by a fixture that fails it when it leaves a
  ``/dev/shm/ringcomm-*`` segment behind;
* the ``run_mpi`` fixture launches ``mpirun -n P python -m mpi4py
  tests/mpi/<worker>.py ...`` with a hard timeout and shows the captured
  output of every rank when the job fails.  Missing mpirun or mpi4py FAILS the
  test (the multi-process tests are never skipped).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
MPI_WORKERS = TESTS_DIR / "mpi"
SHM_GLOB = "/dev/shm/ringcomm-*"
DEFAULT_TEST_TIMEOUT = 600          # pytest-timeout, per test (seconds)
DEFAULT_MPI_TIMEOUT = 300           # subprocess timeout of one mpirun job
DEFAULT_RINGCOMM_TIMEOUT = "60"     # RINGCOMM_TIMEOUT inside mpirun jobs

# Environment variables that configure a communicator: the launcher strips them
# from the inherited environment so every job sees only what its test sets.
RINGCOMM_CONFIG_VARS = ("RINGCOMM_CHUNK_BYTES", "RINGCOMM_NSLOTS", "RINGCOMM_ALGO",
                        "RINGCOMM_TIMEOUT", "RINGCOMM_ISA", "RINGCOMM_SHM_CELLS",
                        "RINGCOMM_SHM_P2P_CELLS", "RINGCOMM_STRAGGLER",
                        "RINGCOMM_STRAGGLER_CALLS")

# tests/mpi/*.py are launched by mpirun, never collected by pytest.
collect_ignore = ["mpi"]


def pytest_configure(config):
    config.addinivalue_line("markers", "mpi: launches an mpirun job (never skipped)")
    if not config.pluginmanager.hasplugin("timeout"):
        # Keep the marker known so the suite still runs (the subprocess
        # timeouts remain the primary guard against hangs).
        config.addinivalue_line("markers", "timeout(seconds): pytest-timeout limit")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT))


# --------------------------------------------------------------------------
# /dev/shm leak check
# --------------------------------------------------------------------------

def _shm_segments() -> set[str]:
    return set(glob.glob(SHM_GLOB))


@pytest.fixture(autouse=True)
def no_shm_leak():
    """Fail a test that leaves a /dev/shm/ringcomm-* segment behind."""
    before = _shm_segments()
    yield
    leaked = _shm_segments() - before
    # Another process on this machine (a concurrent test run) may hold a
    # segment for a moment while it connects: only what stays is a leak.
    deadline = time.monotonic() + 2.0
    while leaked and time.monotonic() < deadline:
        time.sleep(0.1)
        leaked &= _shm_segments()
    if leaked:
        for path in leaked:          # keep later tests' snapshots clean
            try:
                os.unlink(path)
            except OSError:
                pass
        pytest.fail(f"shared-memory segments left in /dev/shm: {sorted(leaked)}",
                    pytrace=False)


# --------------------------------------------------------------------------
# mpirun launcher
# --------------------------------------------------------------------------

def _mapped_shm_paths() -> set[str]:
    """/dev/shm files that some live process has mapped."""
    mapped = set()
    for maps in glob.glob("/proc/[0-9]*/maps"):
        try:
            with open(maps) as f:
                for line in f:
                    if "/dev/shm/" in line:
                        mapped.add(line.split(None, 5)[-1].strip().replace(" (deleted)", ""))
        except OSError:
            pass
    return mapped


def _remove_orphaned_mpich_shm(before: set[str]) -> None:
    """MPICH leaves /dev/shm/mpich_shm_* behind when a job is aborted or a rank is
    killed; remove the ones our job created that no live process maps."""
    new = set(glob.glob("/dev/shm/mpich_shm_*")) - before
    if not new:
        return
    mapped = _mapped_shm_paths()
    for path in new - mapped:
        try:
            os.unlink(path)
        except OSError:
            pass


def find_mpirun() -> str:
    """mpirun beside the running Python (the venv's mpich wheel), then on PATH."""
    beside = Path(sys.executable).parent / "mpirun"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("mpirun")
    if found:
        return found
    pytest.fail(
        f"mpirun not found (looked at {beside} and on PATH). The multi-process "
        "tests are required: install an MPI (e.g. `pip install mpich mpi4py` "
        "into this environment) and run again.", pytrace=False)


def require_mpi4py() -> None:
    if importlib.util.find_spec("mpi4py") is None:
        pytest.fail(
            f"mpi4py is not importable from {sys.executable}. The multi-process "
            "tests are required: `pip install mpi4py` and run again.", pytrace=False)


OK_LINE = re.compile(r"RINGCOMM-WORKER-OK (\S+) rank=(\d+) size=(\d+) cases=(\d+)")


class MpiResult:
    def __init__(self, cmd, returncode, output, nprocs):
        self.cmd = cmd
        self.returncode = returncode
        self.output = output
        self.nprocs = nprocs

    def ok_lines(self):
        return OK_LINE.findall(self.output)


def _describe(cmd, env_extra, output, why):
    envs = " ".join(f"{k}={v}" for k, v in sorted(env_extra.items()))
    return (f"{why}\ncommand: {envs} {' '.join(cmd)}\n"
            f"---------------- output of all ranks ----------------\n{output}"
            f"\n------------------------------------------------------")


def launch_mpi(nprocs, worker, *args, env=None, timeout=DEFAULT_MPI_TIMEOUT,
               expect_success=True, wrap=None, mpirun_args=(),
               rank_prefix=()) -> MpiResult:
    """Run ``mpirun -n nprocs python -m mpi4py tests/mpi/<worker> args``.

    ``wrap(cmd) -> cmd`` runs the mpirun command inside another one (e.g.
    tests/_smallshm.py: a mount namespace with a small /dev/shm).

    With expect_success, the job must exit 0 and every rank must print its
    RINGCOMM-WORKER-OK line with a positive case count; otherwise the test
    fails showing the whole output.  A job that outlives ``timeout`` seconds is
    killed (its whole process group) and fails the test.  mpirun_args go
    before ``-n`` (e.g. ``-disable-auto-cleanup``); rank_prefix before the
    python command (e.g. a shell that runs it).
    """
    require_mpi4py()
    mpirun = find_mpirun()
    script = MPI_WORKERS / worker
    assert script.is_file(), f"no worker {script}"
    cmd = [mpirun, *mpirun_args, "-n", str(nprocs), *rank_prefix, sys.executable, "-m", "mpi4py",
           str(script),
           *map(str, args)]
    # no tune file (~/.cache/ringcomm/tune-<P>.conf) unless a test names one:
    # "auto" picks by the built-in defaults, the same for everyone
    env_extra = {"RINGCOMM_TIMEOUT": DEFAULT_RINGCOMM_TIMEOUT, "RINGCOMM_TUNE_FILE": "none"}
    env_extra.update({k: str(v) for k, v in (env or {}).items()})
    full_env = {k: v for k, v in os.environ.items() if k not in RINGCOMM_CONFIG_VARS}
    full_env.update({
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",       # 4 ranks on 2 cores: no thread pools
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(MPI_WORKERS), os.environ.get("PYTHONPATH", "")) if p),
    })
    full_env.update(env_extra)
    mpich_before = set(glob.glob("/dev/shm/mpich_shm_*"))
    if wrap is not None:
        cmd = wrap(cmd)
    proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=full_env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
        _remove_orphaned_mpich_shm(mpich_before)
        pytest.fail(_describe(cmd, env_extra, out.decode(errors="replace"),
                              f"mpirun job timed out after {timeout} s (killed)"),
                    pytrace=False)
    if proc.returncode != 0:
        _remove_orphaned_mpich_shm(mpich_before)
    output = out.decode(errors="replace")
    result = MpiResult(cmd, proc.returncode, output, nprocs)
    if expect_success:
        if proc.returncode != 0:
            pytest.fail(_describe(cmd, env_extra, output,
                                  f"mpirun job failed with exit code {proc.returncode}"),
                        pytrace=False)
        lines = result.ok_lines()
        ranks = sorted(int(r) for _, r, _, _ in lines)
        if ranks != list(range(nprocs)) or any(int(c) <= 0 for *_, c in lines) \
                or any(int(s) != nprocs for _, _, s, _ in lines):
            pytest.fail(_describe(cmd, env_extra, output,
                                  "job exited 0 but not every rank reported "
                                  "RINGCOMM-WORKER-OK with size=P and cases>0"),
                        pytrace=False)
    return result


@pytest.fixture
def run_mpi():
    """The mpirun launcher (see launch_mpi)."""
    return launch_mpi
