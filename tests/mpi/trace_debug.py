"""RINGCOMM_TRACE and RINGCOMM_DEBUG=INFO: every rank writes its own trace
file with one event per operation (collective, algorithm, bytes, sequence
number, status), asynchronous operations also get their queued phase, and
the debug log names the version, each peer's transport and each call's
algorithm.  Usage: trace_debug.py DIR (RINGCOMM_TRACE=DIR/t.json)"""

import os
import sys

import numpy as np

from _common import RANK, SIZE, WORLD, finish, world_comm


def main():
    comm = world_comm()
    x = np.arange(1000, dtype=np.float32)
    comm.allreduce(x, algorithm="ring")
    comm.broadcast(x, root=SIZE - 1)
    comm.allreduce(x, async_op=True).wait()
    reqs = [comm.allreduce(np.ones(10), async_op=True) for _ in range(3)]
    for r in reqs:
        r.wait()
    right, left = (RANK + 1) % SIZE, (RANK - 1) % SIZE
    s = comm.isend(x, right, tag=3)
    comm.recv(np.empty_like(x), left, tag=3)
    s.wait()
    comm.barrier()
    comm.close()
    WORLD.Barrier()
    from ringcomm.trace import load
    path = os.path.join(sys.argv[1], f"t.rank{RANK}.json")
    events = [e for e in load(path) if e.get("cat") == "op"]
    names = [e["name"] for e in events]
    assert names.count("allreduce") == 5 and "broadcast" in names and "barrier" in names, names
    assert "send" in names and "recv" in names, names
    ring = [e for e in events if e["name"] == "allreduce"][0]
    assert ring["args"]["algorithm"] == "ring" and ring["args"]["bytes"] == 4000, ring
    assert ring["args"]["status"] == "RC_OK" and ring["dur"] >= 0
    bc = [e for e in events if e["name"] == "broadcast"][0]
    assert bc["args"]["root"] == SIZE - 1 and bc["args"]["seq"] == 1, bc
    finish("trace_debug", len(events))


if __name__ == "__main__":
    main()
