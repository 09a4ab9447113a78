"""Point-to-point errors: bad arguments raise before any communication; a
receive whose count or dtype differ from the message raises RC_ERR_MISMATCH
naming both ranks, and every rank's next call fails too; a receive nobody
sends to raises RC_ERR_TIMEOUT naming the source and tag.
Usage: p2p_errors.py --bad-args | --mismatch | --timeout
"""

import sys
import time

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, finish, world_comm


def bad_args(comm):
    x = np.arange(10, dtype=np.float32)
    ro = np.arange(10, dtype=np.float32)
    ro.flags.writeable = False
    calls = [
        ("dest out of range", ValueError, "dest", lambda: comm.send(x, SIZE)),
        ("negative dest", ValueError, "dest", lambda: comm.isend(x, -1)),
        ("source out of range", ValueError, "source", lambda: comm.recv(x, SIZE + 3)),
        ("negative tag", ValueError, "tag", lambda: comm.send(x, 0, tag=-2)),
        ("negative tag irecv", ValueError, "tag", lambda: comm.irecv(x, 0, tag=-1)),
        ("reserved tag", ValueError, "tag", lambda: comm.isend(x, 0, tag=ringcomm.TAG_UB + 1)),
        ("read-only recv buffer", ValueError, "buf", lambda: comm.recv(ro, 0)),
        ("None buffer", TypeError, "buf", lambda: comm.send(None, 0)),
        ("non-contiguous", ValueError, "buf", lambda: comm.send(x[::2], 0)),
    ]
    for what, exc, arg, fn in calls:
        try:
            fn()
        except exc as e:
            assert arg in str(e), f"{what}: message does not name {arg!r}: {e}"
        else:
            raise AssertionError(f"{what}: no {exc.__name__}")
    # nothing was sent: the communicator still works
    y = np.ones(5, np.int64)
    comm.allreduce(y)
    assert (y == SIZE).all()
    return len(calls)


def mismatch(comm):
    outcome = "no error"
    if RANK == 0:
        comm.send(np.arange(10, dtype=np.float32), 1, tag=4)
    elif RANK == 1:
        try:
            comm.recv(np.empty(11, np.float32), 0, tag=4)
        except ringcomm.RingcommError as e:
            assert e.status_name == "RC_ERR_MISMATCH", e
            msg = str(e)
            assert "rank 1" in msg and "rank 0" in msg and "count=11" in msg and \
                "count=10" in msg, msg
            outcome = "mismatch"
    WORLD.Barrier()
    # the failure is sticky here and reported to every peer
    try:
        comm.barrier()
        after = "barrier returned"
    except ringcomm.RingcommError as e:
        after = e.status_name
    comm.close()
    every = WORLD.allgather((outcome, after))
    assert every[1][0] == "mismatch", every
    assert all(a == "RC_ERR_MISMATCH" for _, a in every), every
    return 1


def timeout(comm):
    outcome = "skipped"
    if RANK == 1:
        t0 = time.monotonic()
        try:
            comm.recv(np.empty(3, np.float32), 0, tag=5)
            outcome = "returned"
        except ringcomm.RingcommError as e:
            took = time.monotonic() - t0
            assert e.status_name == "RC_ERR_TIMEOUT", e
            assert "recv from rank 0 (tag 5" in str(e), e
            assert 1.5 < took < 30, took
            outcome = "timeout"
    WORLD.Barrier()
    comm.close()
    assert WORLD.allgather(outcome)[1] == "timeout"
    return 1


def main():
    mode = sys.argv[1]
    assert SIZE >= 2
    comm = world_comm(timeout=2.0 if mode == "--timeout" else None)
    n = {"--bad-args": bad_args, "--mismatch": mismatch, "--timeout": timeout}[mode](comm)
    if mode == "--bad-args":
        comm.close()
    finish("p2p_errors", n)


if __name__ == "__main__":
    main()
