"""pytest-benchmark plumbing for benches that run on every rank under mpirun.

    mpirun -n 2 python -m pytest benches/ --benchmark-only

Every rank runs the same benchmarks with the same fixed rounds/iterations
(``benchmark.pedantic``: pytest-benchmark's own calibration could pick a
different count on each rank and deadlock the collectives), timed with
``barrier_timer``: MPI barrier, then the clock, at the start AND the end of
every round, so a round lasts until the slowest rank is done and all ranks
measure the same interval.  Only rank 0 reports: the other ranks drop their
terminal reporter and never save or write JSON.  A failing rank aborts the
whole job (MPI_Abort) and a hung benchmark dumps its stack and exits after
RINGCOMM_BENCH_TIMEOUT seconds (default 600), so nothing hangs CI.
"""

import faulthandler
import os
import sys
import time

import pytest

try:
    from mpi4py import MPI
except ImportError:  # pragma: no cover - the dev venv has mpi4py
    MPI = None

BENCH_TIMEOUT = float(os.environ.get("RINGCOMM_BENCH_TIMEOUT", "600"))


def _world():
    return MPI.COMM_WORLD if MPI is not None else None


def world_rank():
    return _world().Get_rank() if MPI is not None else 0


def world_size():
    return _world().Get_size() if MPI is not None else 1


def barrier_timer():
    """The benchmark timer: every rank leaves the barrier, then reads the clock."""
    MPI.COMM_WORLD.Barrier()
    return time.perf_counter()


def pytest_addoption(parser):
    group = parser.getgroup("ringcomm benches")
    group.addoption("--allreduce-sizes", default="4,64,1K,16K,256K,4M,64M",
                    help="comma list of all-reduce sizes in bytes, K/M/G suffixes "
                         "(default 4 B .. 64 MiB in x16 steps)")
    group.addoption("--allreduce-algorithms", default="all",
                    help="comma list of ringcomm algorithms, or 'all' = ringcomm.algorithms() + auto")
    group.addoption("--coll-sizes", default="8,64K,1M,16M",
                    help="comma list of sizes in bytes for the other collectives (nccl-tests sizes: "
                         "all-gather/gather the receive buffer, reduce-scatter/scatter/all-to-all the "
                         "send buffer; default 8,64K,1M,16M)")
    group.addoption("--coll-algorithms", default="all",
                    help="comma list of ringcomm algorithms for the other collectives, or 'all' = "
                         "ringcomm.algorithms(<collective>) + auto; names a collective lacks are left out")
    group.addoption("--coll-root", type=int, default=0,
                    help="root rank of broadcast, reduce, gather and scatter (default 0)")


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    if world_rank() == 0:
        return
    # ranks > 0 run every benchmark (they must take part in each collective)
    # but report nothing: no terminal output, no saving, no JSON
    bs = getattr(config, "_benchmarksession", None)
    if bs is not None:
        bs.json = None
        bs.save = None
        bs.autosave = None
        bs.histogram = None
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        config.pluginmanager.unregister(reporter)


def pytest_collection_modifyitems(config, items):
    # every benchmark in this folder uses the barrier-synchronised timer
    if MPI is None:
        return
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()) and item.get_closest_marker("benchmark") is None:
            item.add_marker(pytest.mark.benchmark(timer=barrier_timer))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    faulthandler.dump_traceback_later(BENCH_TIMEOUT, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def pytest_runtest_logreport(report):
    if report.failed and world_size() > 1:
        # the other ranks are (or will be) blocked in a collective: fail fast
        sys.stderr.write(f"\n[rank {world_rank()}] {report.nodeid} failed in {report.when}:\n"
                         f"{report.longreprtext}\n")
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_benchmark_group_stats(config, benchmarks, group_by):
    # groups in size order (4B, 64B, 1KiB, ...) rather than alphabetical
    outcome = yield
    groups = outcome.get_result()

    def key(group):
        sizes = [b.get("extra_info", {}).get("size_bytes", 0) for b in group[1]]
        return (min(sizes) if sizes else 0, str(group[0]))

    if groups:
        outcome.force_result(sorted(groups, key=key))


@pytest.fixture(scope="session")
def mpi_comm():
    if MPI is None:
        pytest.skip("mpi4py is not installed")
    return MPI.COMM_WORLD


@pytest.fixture(scope="session")
def root(request, mpi_comm):
    """--coll-root, the root of the rooted collectives."""
    r = request.config.getoption("--coll-root")
    if not 0 <= r < mpi_comm.Get_size():
        pytest.skip(f"--coll-root {r} is not a rank of {mpi_comm.Get_size()}")
    return r


@pytest.fixture(scope="session")
def rc_comm(mpi_comm):
    ringcomm = pytest.importorskip("ringcomm")
    comm = ringcomm.Communicator.from_mpi(mpi_comm)
    yield comm
    comm.close()
