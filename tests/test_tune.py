"""python -m ringcomm.tune and the tune file the library reads (csrc/tune.c).

No timing is asserted: the tune command's numbers depend on the machine; the
tests check that it runs end to end, what it writes, and which thresholds a
communicator takes from the file, the environment and the built-in defaults.
"""

import json
import os
import re

import pytest

from ringcomm import tune

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(300)]

KEYS = sorted(tune.KEYS.values())


def identity(ranks=2):
    return {"format": "ringcomm-tune-1", "ranks": ranks, "cpus": os.cpu_count(),
            "cpu_model": tune.cpu_model()}


def write(path, fields, extra_lines=()):
    with open(path, "w") as f:
        f.write("# test tune file\n\n")
        for k, v in fields.items():
            f.write(f"{k}={v}\n")
        for line in extra_lines:
            f.write(line + "\n")
    return str(path)


FILE_THRESHOLDS = {"allreduce_direct_max": 0, "allreduce_binomial_max": 4096,
                   "allreduce_tree_max": 0, "allreduce_cma_min": 0,
                   "broadcast_binomial_max": 100, "reduce_binomial_max": 200,
                   "allgather_direct_max": 300, "reduce_scatter_direct_max": 400,
                   "alltoall_cma_min": 0}


def read(run_mpi, path, want, env=None, nprocs=2):
    e = {"RINGCOMM_TUNE_FILE": str(path), "RINGCOMM_DEBUG": "INFO"}
    e.update(env or {})
    return run_mpi(nprocs, "tune_read.py", json.dumps(want), env=e)


def test_tune_quick_end_to_end(run_mpi, tmp_path):
    """--quick measures, derives, writes every threshold with the constants and
    identity, then validates auto (through a communicator that read the file)."""
    out = tmp_path / "sub" / "tune.conf"
    js = tmp_path / "tune.json"
    res = run_mpi(2, "tune_run.py", "--quick", "-o", out, "--json", js,
                  env={"RINGCOMM_TUNE_FILE": "none", "RINGCOMM_DIRECT_MAX": "7"})
    text = out.read_text()
    fields = dict(line.split("=", 1) for line in text.splitlines()
                  if line and not line.startswith("#"))
    for k in ("format", "ranks", "cpus", "cpu_model", "chunk_bytes", "host", "kernel", "date",
              "ringcomm_version", "alpha_hop_us", "gamma_ns_per_byte",
              "model.allreduce.ring.alpha_us", "model.allreduce.ring.beta_ns_per_byte"):
        assert k in fields, f"{k} missing from the tune file:\n{text}"
    assert fields["format"] == "ringcomm-tune-1" and fields["ranks"] == "2"
    for k in KEYS:
        assert int(fields[k]) >= 0, k
    for coll in tune.SELECTION:
        assert f"validated_worst_ratio.{coll}" in fields, text
    assert "ignoring RINGCOMM_DIRECT_MAX" in res.output, res.output
    assert f"validation (file {out})" in res.output, res.output  # the library took it
    assert "worst auto/best" in res.output and "worst pick/best" in res.output
    report = json.loads(js.read_text())
    assert set(report["validation"]) == set(tune.SELECTION)
    assert {k: int(fields[k]) for k in KEYS} == report["thresholds"]


def test_file_is_read(run_mpi, tmp_path):
    """Every rank gets rank 0's file values; auto follows them."""
    path = write(tmp_path / "t.conf", {**identity(), "chunk_bytes": 131072,
                                       "alpha_hop_us": "1.5", "model.x.y": "1:2,3:4",
                                       **FILE_THRESHOLDS})
    want = {"thresholds": {k: [v, "file"] for k, v in FILE_THRESHOLDS.items()},
            "source": f"file {path}",
            "select": [[2, "allreduce", "binomial"], [1024, "allreduce", "binomial"],
                       [1025, "allreduce", "ring"], [25, "broadcast", "binomial"],
                       [26, "broadcast", "chain"], [50, "reduce", "binomial"],
                       [51, "reduce", "rs_gather"], [37, "allgather", "direct"],
                       [38, "allgather", "ring"], [50, "reduce_scatter", "direct"],
                       [51, "reduce_scatter", "ring"], [1000, "alltoall", "pairwise"]]}
    res = read(run_mpi, path, want)
    # two keys are not in the file: they keep their defaults, and the log says so
    assert f"auto thresholds from file {path}: " \
           "allreduce_direct_max=0 allreduce_binomial_max=4096" in res.output, res.output
    assert re.search(r"broadcast_scatter_allgather_min=\d+\(default\)", res.output), res.output
    assert re.search(r"allgather_cma_min=\d+\(default\)", res.output), res.output
    assert "allreduce_direct_max=0(default)" not in res.output, res.output
    assert "WARN" not in res.output, res.output


def test_env_overrides_file(run_mpi, tmp_path):
    path = write(tmp_path / "t.conf", {**identity(), **FILE_THRESHOLDS})
    want = {"thresholds": {"allreduce_tree_max": [12 << 10, "env"],
                           "reduce_binomial_max": [99, "env"],
                           "allreduce_binomial_max": [4096, "file"]},
            "source": f"file {path}, 2 from the environment",   # K/M/G as elsewhere
            "select": [[2048, "allreduce", "tree"]]}
    res = read(run_mpi, path, want,
               env={"RINGCOMM_TREE_MAX": "12K", "RINGCOMM_REDUCE_BINOMIAL_MAX": "99"})
    assert "allreduce_tree_max=12288(env)" in res.output, res.output


def test_file_at_three_ranks(run_mpi, tmp_path):
    """Only rank 0 reads the file; the transport hands its thresholds to the
    others (so auto agrees everywhere), here at a non-power-of-two count."""
    path = write(tmp_path / "t.conf", {**identity(3), **FILE_THRESHOLDS})
    want = {"thresholds": {"allreduce_binomial_max": [4096, "file"]},
            "source": f"file {path}"}
    read(run_mpi, path, want, nprocs=3)


@pytest.mark.parametrize("case", ["garbage line", "bad value", "other ranks", "other cpu",
                                  "no format", "other format"])
def test_bad_file_falls_back(run_mpi, tmp_path, case):
    """A corrupt or foreign file is ignored as a whole, with a warning naming it."""
    fields = {**identity(), **FILE_THRESHOLDS}
    extra = []
    if case == "garbage line":
        extra = ["this line has no equals sign"]
    elif case == "bad value":
        fields["allreduce_tree_max"] = "12kB"     # K, M, G suffixes are fine; "kB" is not
    elif case == "other ranks":
        fields["ranks"] = 5
    elif case == "other cpu":
        fields["cpu_model"] = "Imaginary CPU 9000"
    elif case == "no format":
        del fields["format"]
    else:
        fields["format"] = "ringcomm-tune-0"
    path = write(tmp_path / "t.conf", fields, extra)
    want = {"thresholds": {k: [None, "default"] for k in KEYS},
            "source": "built-in defaults"}
    res = read(run_mpi, path, want)
    assert f"WARN tune file {path}: " in res.output, res.output
    assert "using the built-in defaults" in res.output, res.output


def test_missing_and_disabled(run_mpi, tmp_path):
    """An explicit RINGCOMM_TUNE_FILE that does not exist warns; "none" is silent."""
    want = {"thresholds": {k: [None, "default"] for k in KEYS}, "source": "built-in defaults"}
    res = read(run_mpi, tmp_path / "absent.conf", want)
    assert "WARN tune file" in res.output and "cannot open it" in res.output, res.output
    res = read(run_mpi, "none", want)
    assert "WARN" not in res.output, res.output
    assert "auto thresholds from built-in defaults" in res.output, res.output


def test_default_path_and_xdg(run_mpi, tmp_path):
    """Without RINGCOMM_TUNE_FILE the library looks in $XDG_CACHE_HOME/ringcomm/tune-<P>.conf,
    the place tune writes by default."""
    d = tmp_path / "ringcomm"
    d.mkdir()
    path = write(d / "tune-2.conf", {**identity(), **FILE_THRESHOLDS})
    env = {"XDG_CACHE_HOME": str(tmp_path), "RINGCOMM_TUNE_FILE": ""}
    old = {k: os.environ.get(k) for k in env}
    try:
        os.environ.update(env)
        assert tune.default_path(2) == path
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    want = {"thresholds": {"allreduce_binomial_max": [4096, "file"]}, "source": f"file {path}"}
    read(run_mpi, "", want, env=env)


@pytest.mark.parametrize("pin", ["own", "first"])
def test_oversubscription_from_every_ranks_cpus(run_mpi, pin):
    """"More ranks than CPUs" is decided from the union of the affinity masks of
    the ranks on one machine, not from one rank's mask: ranks bound to a core
    each (mpirun -bind-to core, Open MPI's default at 2 ranks) get the
    core-per-rank defaults; two ranks pinned to one CPU get the other set."""
    ncpu = len(os.sched_getaffinity(0))
    over = pin == "first" or ncpu < 2
    kind = "more ranks than CPUs" if over else "a core per rank"
    # 32 KiB all-reduce: ring with a core per rank, direct when oversubscribed
    want = {"pin": pin, "source": f"built-in defaults ({kind})",
            "thresholds": {k: [None, "default"] for k in KEYS},
            "select": [[8192, "allreduce", "direct" if over else "ring"]]}
    read(run_mpi, "none", want)
