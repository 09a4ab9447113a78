"""several communicators at once: world, a duplicate, and split halves.

Operations on the communicators are interleaved; each must give the sum over
its own members only.  Sub-communicators come from MPI Split (ranks by
parity), so the halves run concurrently on disjoint rank sets.
"""

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, finish

COUNT = 5003


def expected(members, count=COUNT):
    return sum(np.arange(count, dtype=np.int64) * (m + 1) + m for m in members)


def main():
    color = RANK % 2
    sub_mpi = WORLD.Split(color, RANK)
    members = [r for r in range(SIZE) if r % 2 == color]
    world = ringcomm.Communicator.from_mpi(WORLD)
    dup = ringcomm.Communicator.from_mpi(WORLD)
    sub = ringcomm.Communicator.from_mpi(sub_mpi)
    assert (sub.rank, sub.size) == (members.index(RANK), len(members)), (sub.rank, sub.size)
    ncases = 0
    for it in range(6):
        for name, comm, who in (("world", world, range(SIZE)), ("sub", sub, members),
                                ("dup", dup, range(SIZE))):
            algo = ringcomm.algorithms()[it % len(ringcomm.algorithms())]
            x = np.arange(COUNT, dtype=np.int64) * (RANK + 1) + RANK
            comm.allreduce(x, algorithm=algo)
            assert np.array_equal(x, expected(who)), f"round {it} {name} ({algo}): wrong sum"
            ncases += 1
    sub.close()
    dup.close()
    world.close()
    sub_mpi.Free()
    finish("multi_comm", ncases)


if __name__ == "__main__":
    main()
