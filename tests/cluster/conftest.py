"""Fixtures of the cluster suite (``make test-cluster``): namespace hosts made
by tools/cluster.py, mpirun jobs of the tests/mpi/ workers on them.

Not collected by ``make test`` (it passes --ignore=tests/cluster).  Needs
root (network and mount namespaces): without it every test FAILS saying so.

* ``cluster(n, **shape)``: a Cluster of n hosts, torn down after the test
  (also when it fails); before teardown, every host's /dev/shm must hold no
  ringcomm segment (a leak fails the test).
* ``run_cluster(cluster, layout, worker, *args, env=...)``: ``mpirun`` (inside
  h0, the ssh launcher entering each host's namespaces) of
  ``python -m mpi4py tests/mpi/<worker>``; layout is ranks per host, e.g.
  (2, 1).  RINGCOMM_TEST_CLUSTER=1 and RINGCOMM_TEST_HOSTS=h0,h0,h1 tell the
  workers' _common.py where every rank must run (checked on each rank; no
  RINGCOMM_HOST_ID: the host identity is the real one).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest

CLUSTER_DIR = Path(__file__).resolve().parent
TESTS_DIR = CLUSTER_DIR.parent
REPO_ROOT = TESTS_DIR.parent
MPI_WORKERS = TESTS_DIR / "mpi"
STANDALONE = TESTS_DIR / "standalone"
sys.path.insert(0, str(REPO_ROOT / "tools"))

import cluster as cluster_mod  # noqa: E402  (tools/cluster.py)

# as tests/conftest.py (not imported: both files are "conftest" to pytest)
OK_LINE = re.compile(r"RINGCOMM-WORKER-OK (\S+) rank=(\d+) size=(\d+) cases=(\d+)")
RINGCOMM_CONFIG_VARS = ("RINGCOMM_CHUNK_BYTES", "RINGCOMM_NSLOTS", "RINGCOMM_ALGO",
                        "RINGCOMM_TIMEOUT", "RINGCOMM_ISA")


def require_mpi4py():
    if importlib.util.find_spec("mpi4py") is None:
        pytest.fail(f"mpi4py is not importable from {sys.executable}: `pip install mpi4py`",
                    pytrace=False)

DEFAULT_RINGCOMM_TIMEOUT = "60"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.fspath).startswith(str(CLUSTER_DIR)):
            item.add_marker(pytest.mark.mpi)


def _require_root():
    if os.geteuid() != 0:
        pytest.fail("the cluster suite needs root (ip netns, unshare -m -u): run "
                    "`make test-cluster` as root", pytrace=False)


def base_env(**extra):
    """The environment of every rank: the caller's, without ringcomm settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in RINGCOMM_CONFIG_VARS and k not in ("RINGCOMM_HOST_ID", "RINGCOMM_TRANSPORT",
                                                          "RINGCOMM_DEBUG", "RINGCOMM_TEST_HOSTS")}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", RINGCOMM_TIMEOUT=DEFAULT_RINGCOMM_TIMEOUT,
               RINGCOMM_TUNE_FILE="none", RINGCOMM_TEST_CLUSTER="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(MPI_WORKERS),
                                                      os.environ.get("PYTHONPATH", "")) if p))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def layout_hosts(layout):
    """(2, 1) -> ['h0', 'h0', 'h1']."""
    return [f"h{i}" for i, n in enumerate(layout) for _ in range(n)]


@pytest.fixture
def cluster():
    """cluster(n, rate=..., loss=...) -> a started Cluster (torn down after the test)."""
    _require_root()
    made = []

    def make(n, **shape):
        c = cluster_mod.Cluster(hosts=n, **shape)
        made.append(c)
        c.start()
        return c

    yield make
    leaks = []
    for c in made:
        try:
            if not c._closed:
                for h in c.hosts:
                    left = [f for f in c.shm_files(h.index) if f.startswith("ringcomm")]
                    if left:
                        leaks.append(f"{h.name}: {left}")
        finally:
            c.close()
    if leaks:
        pytest.fail(f"/dev/shm of the namespace hosts not empty: {leaks}", pytrace=False)


def _describe(cmd, env_extra, output, why):
    envs = " ".join(f"{k}={v}" for k, v in sorted(env_extra.items()))
    return (f"{why}\ncommand: {envs} {' '.join(map(str, cmd))}\n"
            f"---------------- output of all ranks ----------------\n{output}"
            f"\n------------------------------------------------------")


class Result:
    def __init__(self, returncode, output):
        self.returncode, self.output = returncode, output


def _run_cluster(c, layout, worker, *args, env=None, timeout=300, expect_success=True):
    """mpirun of tests/mpi/<worker> on cluster c, ranks placed by layout."""
    require_mpi4py()
    hosts = layout_hosts(layout)
    extra = {"RINGCOMM_TEST_HOSTS": ",".join(hosts), **(env or {})}
    argv = [sys.executable, "-m", "mpi4py", str(MPI_WORKERS / worker), *map(str, args)]
    code, out = c.mpirun(argv, layout=layout, popen_env=base_env(**extra), timeout=timeout,
                         cwd=str(REPO_ROOT))
    cmd = c.mpirun_argv(argv, layout=layout)
    if code is None:
        pytest.fail(_describe(cmd, extra, out, f"mpirun job timed out after {timeout} s (killed)"),
                    pytrace=False)
    res = Result(code, out)
    if expect_success:
        if code != 0:
            pytest.fail(_describe(cmd, extra, out, f"mpirun job failed with exit code {code}"),
                        pytrace=False)
        lines = OK_LINE.findall(out)
        n = len(hosts)
        if sorted(int(r) for _, r, _, _ in lines) != list(range(n)) or \
                any(int(cs) <= 0 or int(s) != n for _, _, s, cs in lines):
            pytest.fail(_describe(cmd, extra, out, "job exited 0 but not every rank reported "
                                  "RINGCOMM-WORKER-OK with size=P and cases>0"), pytrace=False)
    return res


@pytest.fixture
def run_cluster():
    """The mpirun launcher on a cluster (see _run_cluster)."""
    return _run_cluster
