"""The MPI transport's own cases (run with RINGCOMM_TRANSPORT=mpi).

Modes:

--interleave
  The user's MPI traffic on MPI.COMM_WORLD (the communicator ringcomm was
  made from) interleaved with ringcomm calls: receives posted on WORLD with
  ringcomm's own tags (0, 1, 2) and with MPI.ANY_SOURCE/ANY_TAG before
  ringcomm runs collectives and send/recv, sends completed after; WORLD
  collectives between ringcomm calls; async ringcomm calls (run by the
  progress thread) while this thread calls mpi4py.  Every message must reach
  the right side: ringcomm works on a duplicate of WORLD, never WORLD itself.

--finalize
  MPI.Finalize() with three communicators open: a call after it raises
  RingcommError naming MPI_Finalize, close() after it does not crash (and a
  third communicator is left for the interpreter's exit).

--exit-open
  Communicators left open at the interpreter's exit, one with a receive that
  never completes: the job exits cleanly (ringcomm closes them before
  mpi4py finalizes MPI).

--thread-level LEVEL
  MPI initialized with a thread level below MPI_THREAD_MULTIPLE: from_mpi
  must refuse the MPI transport with RC_ERR_NOT_SUPPORTED naming the level.
"""

import sys

if "--thread-level" in sys.argv:
    import mpi4py
    mpi4py.rc.thread_level = sys.argv[sys.argv.index("--thread-level") + 1]

import numpy as np  # noqa: E402

import ringcomm  # noqa: E402
from _common import RANK, SIZE, WORLD, finish, log  # noqa: E402
from mpi4py import MPI  # noqa: E402


def interleave():
    assert ringcomm.HAVE_MPI, "this build of ringcomm has no MPI transport"
    comm = ringcomm.Communicator.from_mpi(WORLD)
    right, left = (RANK + 1) % SIZE, (RANK - 1) % SIZE
    cases = 0
    for rnd in range(6):
        # the user's receives, posted first, on the tags ringcomm uses on its duplicate
        ubufs = {t: np.full(8, -1, np.int64) for t in (0, 1, 2)}
        ureqs = [WORLD.Irecv(ubufs[t], source=left, tag=t) for t in (0, 1, 2)]
        wild = np.full(8, -1, np.int64)
        wreq = WORLD.Irecv(wild, source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG)
        # ringcomm collectives and send/recv while they are pending
        x = np.arange(1000, dtype=np.float64) * (RANK + 1) + rnd
        comm.allreduce(x)
        expect = np.arange(1000, dtype=np.float64) * (SIZE * (SIZE + 1) // 2) + rnd * SIZE
        assert np.array_equal(x, expect), f"round {rnd}: allreduce wrong"
        got = np.empty(5000, np.int32)
        req = comm.isend(np.full(5000, RANK * 10 + rnd, np.int32), right, tag=rnd % 2)
        comm.recv(got, left, tag=rnd % 2)
        req.wait()
        assert (got == left * 10 + rnd).all(), f"round {rnd}: ringcomm recv wrong"
        b = np.full(300, RANK, np.int32)
        comm.broadcast(b, root=rnd % SIZE)
        assert (b == rnd % SIZE).all()
        # none of ringcomm's messages reached the user's receives (the
        # barriers: no rank's user sends below start before every rank checked)
        WORLD.Barrier()
        assert not any(r.Test() for r in ureqs), f"round {rnd}: a user receive got a message"
        assert not wreq.Test(), f"round {rnd}: the user's ANY_SOURCE/ANY_TAG receive matched"
        WORLD.Barrier()
        # now the user's sends: every one lands in the user's receives
        sreqs = [WORLD.Isend(np.full(8, 100 * t + RANK, np.int64), dest=right, tag=t)
                 for t in (0, 1, 2)]
        sreqs.append(WORLD.Isend(np.full(8, 999, np.int64), dest=right, tag=77))
        MPI.Request.Waitall(ureqs + [wreq] + sreqs)
        for t in (0, 1, 2):
            assert (ubufs[t] == 100 * t + left).all(), f"round {rnd}: user tag {t} wrong"
        assert (wild == 999).all(), f"round {rnd}: the wildcard receive got {wild}"
        # WORLD collectives between ringcomm calls
        assert WORLD.allreduce(rnd + RANK) == SIZE * rnd + SIZE * (SIZE - 1) // 2
        cases += 1
    # async ringcomm calls (the progress thread calls MPI) while this thread calls mpi4py
    for rnd in range(4):
        bufs = [np.full(20000, RANK + k, np.float32) for k in range(3)]
        reqs = [comm.allreduce(b_, async_op=True) for b_ in bufs]
        p2p = np.empty(100, np.int64)
        rr = comm.irecv(p2p, left, tag=5)
        ss = comm.isend(np.full(100, RANK, np.int64), right, tag=5)
        for _ in range(20):
            WORLD.Barrier()
            v = WORLD.allgather(RANK)
            assert v == list(range(SIZE))
        for k, r in enumerate(reqs):
            r.wait()
            assert (bufs[k] == sum(q + k for q in range(SIZE))).all()
        rr.wait()
        ss.wait()
        assert (p2p == left).all()
        cases += 1
    comm.close()
    finish("mpi_interleave", cases)


def finalize():
    comm = ringcomm.Communicator.from_mpi(WORLD, timeout=30)
    idle = ringcomm.Communicator.from_mpi(WORLD)
    left_open = ringcomm.Communicator.from_mpi(WORLD)  # noqa: F841 - closed by the interpreter's exit
    x = np.ones(10, np.float32)
    comm.allreduce(x)
    assert (x == SIZE).all()
    got = np.empty(4, np.int64)
    req = comm.isend(np.full(4, RANK, np.int64), (RANK + 1) % SIZE, tag=9)
    comm.recv(got, (RANK - 1) % SIZE, tag=9)
    req.wait()
    finish("mpi_finalize", 1)  # the OK line; what follows must not crash
    MPI.Finalize()
    try:
        comm.allreduce(x)
        after = "a call after MPI_Finalize returned"
    except ringcomm.RingcommError as e:
        after = "raised" if "MPI_Finalize" in str(e) else f"raised without naming MPI_Finalize: {e}"
    comm.close()
    idle.close()
    print(f"FINALIZE rank={RANK} after={after} closed", flush=True)


def exit_open():
    """Communicators left open at exit, one with a receive that never
    completes: ringcomm closes them before mpi4py finalizes MPI."""
    comm = ringcomm.Communicator.from_mpi(WORLD, timeout=30)
    other = ringcomm.Communicator.from_mpi(WORLD)
    x = np.ones(10, np.float32)
    comm.allreduce(x)
    other.allreduce(x)
    pending = comm.irecv(np.empty(4, np.int64), (RANK + 1) % SIZE, tag=9)  # never sent
    # kept alive until exit (dropping a running request waits for it to finish)
    _KEEP.extend([comm, other, pending])
    finish("mpi_exit_open", 1)


_KEEP = []


def thread_level(level):
    provided = MPI.Query_thread()
    log("thread level requested", level, "provided", provided)
    if provided == MPI.THREAD_MULTIPLE:
        raise AssertionError(f"MPI gave MPI_THREAD_MULTIPLE although {level} was requested")
    try:
        ringcomm.Communicator.from_mpi(WORLD).close()
        raise AssertionError("from_mpi used the MPI transport below MPI_THREAD_MULTIPLE")
    except ringcomm.RingcommError as e:
        assert e.status_name == "RC_ERR_NOT_SUPPORTED", e
        assert "MPI_THREAD_MULTIPLE" in str(e), e
    finish("mpi_thread_level", 1)


if __name__ == "__main__":
    if "--interleave" in sys.argv:
        interleave()
    elif "--finalize" in sys.argv:
        finalize()
    elif "--exit-open" in sys.argv:
        exit_open()
    elif "--thread-level" in sys.argv:
        thread_level(sys.argv[sys.argv.index("--thread-level") + 1])
    else:
        raise SystemExit("usage: mpi_transport.py --interleave | --finalize | --exit-open | --thread-level L")
