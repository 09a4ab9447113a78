"""the GIL is released while allreduce/barrier wait for peers.

Rank 0 starts a Python thread, then enters the collective.  The last rank
joins the collective only after that thread has written a marker file.  If
rank 0 held the GIL while waiting, its thread could never write the marker,
the last rank would never join and rank 0 would fail with RC_ERR_TIMEOUT
(RINGCOMM_TIMEOUT is set small by the test).  Usage: gil.py DIR
"""

import os
import sys
import threading
import time

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, finish


def wait_for(path, limit=60.0):
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"rank {RANK}: {path} never appeared (GIL held by rank 0?)")
        time.sleep(0.01)


def main():
    tmpdir = sys.argv[1]
    ncases = 0
    with ringcomm.Communicator.from_mpi(WORLD) as comm:
        for k, what in enumerate(["allreduce-small", "allreduce-big", "barrier"]):
            marker = os.path.join(tmpdir, f"gil{k}")
            x = np.full(10 if what == "allreduce-small" else 300000, RANK + 1, np.int64)

            def call():
                if what == "barrier":
                    comm.barrier()
                else:
                    comm.allreduce(x)

            if RANK == 0:
                def writer():
                    time.sleep(0.3)           # let the main thread block in C first
                    with open(marker, "w") as f:
                        f.write("x")
                t = threading.Thread(target=writer)
                t.start()
                call()
                t.join()
            else:
                if RANK == SIZE - 1:
                    wait_for(marker)
                call()
            if what != "barrier":
                assert (x == SIZE * (SIZE + 1) // 2).all(), f"{what}: wrong sum"
            ncases += 1
    finish("gil", ncases)


if __name__ == "__main__":
    main()
