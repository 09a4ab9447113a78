"""RINGCOMM_TRACE (Chrome/Perfetto trace per rank) and RINGCOMM_DEBUG=INFO output."""

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(300)]


@pytest.mark.parametrize("nprocs", [1, 3])
def test_trace_and_debug(run_mpi, tmp_path, nprocs):
    """Each rank's trace holds every operation with its algorithm and bytes; the merge tool joins them; INFO logs version, transports and algorithms."""
    res = run_mpi(nprocs, "trace_debug.py", tmp_path,
                  env={"RINGCOMM_TRACE": str(tmp_path / "t.json"), "RINGCOMM_DEBUG": "INFO"})
    out = res.output
    assert out.count(f"of {nprocs} connected") >= nprocs, out
    if nprocs > 1:
        assert "-> rank 1: transport shm" in out, out
        assert "allreduce #0 count=1000 float32 sum root=-1: algorithm ring" in out, out
    files = sorted(str(p) for p in tmp_path.glob("t.rank*.json"))
    assert len(files) == nprocs, files
    for f in files:  # the processes exited: each file is a complete JSON array
        json.loads(open(f).read())
    merged = tmp_path / "all.json"
    subprocess.run([sys.executable, "-m", "ringcomm.trace", *files, "-o", str(merged)],
                   check=True)
    events = json.loads(merged.read_text())
    pids = {e["pid"] for e in events if e.get("cat") == "op"}
    assert len(pids) == nprocs
    assert any(e["name"] == "queued" for e in events), "no queued phase for async operations"
