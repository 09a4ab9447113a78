"""tcp setup: a communicator over forced TCP (the launcher sets
RINGCOMM_TRANSPORT=tcp and the interface variables), one checked all-reduce
and send/recv, then --fds N: N communicators created and closed, and the
process's open file descriptors must not grow (sockets, the kick eventfd,
the listener: every one closed by close()).
Usage: tcp_setup.py [--fds N]
"""

import os
import sys

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, finish


def check(comm):
    x = np.arange(1000, dtype=np.float64) * (RANK + 1)
    comm.allreduce(x)
    assert np.array_equal(x, np.arange(1000) * (SIZE * (SIZE + 1) // 2)), "allreduce wrong"
    if SIZE > 1:
        y = np.full(70001, RANK, np.int32)
        z = np.empty_like(y)
        comm.send(y, (RANK + 1) % SIZE)
        comm.recv(z, (RANK - 1) % SIZE)
        assert (z == (RANK - 1) % SIZE).all(), "send/recv wrong"


def nfds():
    return len(os.listdir("/proc/self/fd"))


def main():
    cases = 0
    with ringcomm.Communicator.from_mpi(WORLD) as comm:
        check(comm)
        cases += 1
    if "--fds" in sys.argv:
        n = int(sys.argv[sys.argv.index("--fds") + 1])
        for _ in range(3):  # warm up (MPI's own descriptors)
            ringcomm.Communicator.from_mpi(WORLD).close()
        before = nfds()
        for i in range(n):
            comm = ringcomm.Communicator.from_mpi(WORLD)
            if i % 50 == 0:
                check(comm)
            comm.close()
        after = nfds()
        assert after <= before, f"rank {RANK}: {before} open descriptors before {n} " \
                                f"communicators, {after} after"
        print(f"rank {RANK}: {before} descriptors before, {after} after {n} communicators",
              flush=True)
        cases += n
    finish("tcp_setup", cases)


if __name__ == "__main__":
    main()
