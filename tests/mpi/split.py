"""comm.split(color, key): MPI_Comm_split semantics checked against mpi4py's
Split; odd/even and reversed orders; color None joins none; nested splits;
every sub-communicator has its own shared memory and works while the
others do.  --churn N: then N more split/all-reduce/close rounds (a
communicator made from MPI splits its MPI communicator alongside, and
close() must free it: MPICH has about 2000 context ids).
"""
import argparse

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, finish, world_comm


def check(sub, color, key):
    """Rank and size as MPI_Comm_split gives them; an all-reduce of world ranks."""
    ref = WORLD.Split(color if color is not None else -32766, key)  # MPI_UNDEFINED = -32766
    if color is None:
        assert sub is None
        return 0
    assert (sub.rank, sub.size) == (ref.Get_rank(), ref.Get_size()), \
        (color, key, sub.rank, sub.size, ref.Get_rank(), ref.Get_size())
    members = ref.allgather(RANK)
    ref.Free()
    x = np.array([RANK, 1], np.int64)
    sub.allreduce(x)
    assert x[0] == sum(members) and x[1] == len(members), (x, members)
    # rank 0 of the sub-communicator is the first member
    y = np.array([RANK], np.int64)
    sub.allreduce(y, op="min")
    assert y[0] == min(members) if key == 0 else True
    return 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--churn", type=int, default=0)
    args = ap.parse_args()
    comm = world_comm()
    n = 0
    halves = comm.split(RANK % 2)
    n += check(halves, RANK % 2, 0)
    rev = comm.split(0, key=-RANK)
    assert rev.rank == SIZE - 1 - RANK
    n += check(rev, 0, -RANK)
    # ranks 0 and the last stay out
    color = None if RANK in (0, SIZE - 1) and SIZE > 1 else 5
    out = comm.split(color)
    n += check(out, color, 0)
    # a split of a split
    inner = rev.split(rev.rank // 2, key=rev.rank)
    x = np.array([1], np.int64)
    inner.allreduce(x)
    assert x[0] == inner.size
    n += 1
    # all at once: every communicator's collectives interleaved
    for it in range(3):
        for c in (comm, halves, rev, inner):
            z = np.full(10_007, it + 1, np.int32)
            c.allreduce(z)
            assert (z == (it + 1) * c.size).all()
            n += 1
    for c in (inner, out, rev, halves):
        if c is not None:
            c.close()
    # bad arguments raise before communicating
    for bad, exc in (("red", TypeError), (1.5, TypeError)):
        try:
            comm.split(bad)
            raise AssertionError(f"split({bad!r}) did not raise")
        except exc:
            n += 1
    for it in range(args.churn):
        sub = comm.split(RANK % 2 if SIZE > 2 else 0, key=-RANK)
        x = np.array([1], np.int64)
        sub.allreduce(x)
        assert x[0] == sub.size, (it, x)
        sub.close()
    n += args.churn
    comm.close()
    finish("split", n)


if __name__ == "__main__":
    main()
