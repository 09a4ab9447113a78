"""barrier: no rank leaves before every rank has entered.

Round k: the "late" rank (k mod P) sleeps, then writes a marker file, then
enters comm.barrier(); every rank checks after the barrier that the marker
exists.  A barrier that returns early sees no marker.  Usage: barrier.py DIR
"""

import os
import sys
import time

import ringcomm
from _common import RANK, SIZE, WORLD, finish


def main():
    tmpdir = sys.argv[1]
    ncases = 0
    with ringcomm.Communicator.from_mpi(WORLD) as comm:
        comm.barrier()
        for k in range(2 * SIZE + 2):
            late = k % SIZE
            marker = os.path.join(tmpdir, f"round{k}")
            if RANK == late:
                time.sleep(0.1)
                with open(marker, "w") as f:
                    f.write("x")
            ret = comm.barrier()
            assert ret is None, f"barrier returned {ret!r}"
            assert os.path.exists(marker), \
                f"round {k}: rank {RANK} left the barrier before rank {late} entered it"
            ncases += 1
    finish("barrier", ncases)


if __name__ == "__main__":
    main()
