"""peer loss: the last rank SIGKILLs itself while the others are in (or
about to enter) an operation; every survivor must raise RingcommError
RC_ERR_PEER_LOST naming the lost rank within 10 s, every later call must
raise too, and close() must still release everything.  Launched without
mpirun (the test starts the processes; _files.py bootstraps), because
mpirun kills the survivors soon after a rank dies.  Each survivor prints
PEER-LOST-OK and exits 0.  Usage: peer_lost.py OPERATION
"""

import os
import signal
import sys
import time

import numpy as np

import ringcomm
from _files import RANK, SIZE, connect

COUNT = 300_001


def operation(comm, name):
    """One call of `name` on fresh buffers."""
    p, r = comm.size, comm.rank
    x = np.full(COUNT, r + 1.0, np.float32)
    big = np.zeros(COUNT * p, np.float32)
    if name == "allreduce-ll":  # 8 bytes: the one-line shared-memory path
        comm.allreduce(np.full(2, r + 1.0, np.float32), algorithm="direct")
    elif name.startswith("allreduce-"):
        comm.allreduce(x, algorithm=name.split("-", 1)[1])
    elif name == "async":
        comm.allreduce(x, async_op=True).wait()
    elif name == "broadcast":
        comm.broadcast(x, root=0)
    elif name == "reduce":
        comm.reduce(x, root=0)
    elif name == "allgather":
        comm.allgather(x, big)
    elif name == "reduce_scatter":
        comm.reduce_scatter(big, x)
    elif name == "alltoall":
        comm.alltoall(big, np.empty_like(big))
    elif name == "gather":
        comm.gather(x, big if r == 0 else None, root=0)
    elif name == "scatter":
        comm.scatter(big if r == 0 else None, x, root=0)
    elif name == "barrier":
        comm.barrier()
    elif name == "recv":   # everyone waits for a message from the victim
        comm.recv(x, p - 1)
    elif name == "send":   # a large send the victim never drains
        comm.send(np.zeros(COUNT * 8, np.float32), p - 1)
    else:
        raise ValueError(name)


def main():
    name = sys.argv[1]
    victim = SIZE - 1
    comm, files = connect(timeout=60)
    comm.barrier()
    files.barrier()
    if RANK == victim:
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.monotonic()
    err = None
    for _ in range(3):  # a rank may finish its part before the loss shows
        try:
            operation(comm, name)
            comm.barrier()
        except ringcomm.RingcommError as e:
            err = e
            break
    took = time.monotonic() - t0
    assert err is not None, f"rank {RANK}: {name} never failed after rank {victim} died"
    assert err.status_name == "RC_ERR_PEER_LOST", f"rank {RANK}: {err}"
    assert f"rank {victim} (pid" in str(err), f"rank {RANK}: the message does not name it: {err}"
    assert took < 10, f"rank {RANK}: detection took {took:.1f} s"
    try:  # sticky
        comm.barrier()
        raise AssertionError("a call after the loss returned normally")
    except ringcomm.RingcommError as e:
        assert e.status_name == "RC_ERR_PEER_LOST", e
    comm.close()
    comm.close()
    print(f"PEER-LOST-OK rank={RANK} op={name} took={took:.2f}s: {err}", flush=True)


if __name__ == "__main__":
    main()
