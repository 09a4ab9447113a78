"""Asynchronous operations: requests posted back to back run in post order
and can be waited in any order; test() polls; wait(timeout) times out while
the request stays valid; the caller's thread is free (GIL released) while
the progress thread works; blocking calls after async ones keep the order;
a dropped request is finished safely; close() fails what never ran.
"""

import threading
import time

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, finish, world_comm


def tri(k):
    return SIZE * k + SIZE * (SIZE - 1) // 2


def out_of_order_waits(comm):
    n = 0
    for count in (1, 1000, 300_001):
        bufs = [np.full(count, k + RANK, np.int64) for k in range(6)]
        reqs = [comm.allreduce(b, async_op=True) for b in bufs]
        for k in (3, 0, 5, 1, 4, 2):
            out = reqs[k].wait()
            assert out is bufs[k]
            assert (bufs[k] == tri(k)).all(), (count, k)
            assert reqs[k].test() and reqs[k].done
            n += 1
    # async and blocking interleaved: the blocking call runs after the posted ones
    a = np.full(100_000, RANK, np.float64)
    b = np.full(10, RANK + 1.0, np.float64)
    ra = comm.allreduce(a, async_op=True)
    comm.allreduce(b)  # queued behind ra on every rank
    assert ra.done, "a blocking call returned before an earlier async call completed"
    assert (a == tri(0)).all() and (b == tri(1)).all()
    rb = comm.barrier(async_op=True)
    assert rb.wait() is None
    return n + 2


def test_polling(comm):
    x = np.full(1 << 22, float(RANK), np.float32)  # 16 MiB
    req = comm.allreduce(x, async_op=True)
    polls = 0
    while not req.test():
        polls += 1
        time.sleep(0.0005)
    assert (x == tri(0)).all()
    return 1


def wait_timeout(comm):
    """irecv whose sender is late: wait(timeout) raises TimeoutError, later wait() works."""
    if SIZE < 2 or RANK > 1:
        WORLD.Barrier()
        return 0
    if RANK == 1:
        got = np.empty(4, np.float32)
        req = comm.irecv(got, 0, tag=1)
        try:
            req.wait(timeout=0.05)
            raise AssertionError("wait(timeout=0.05) returned before the message was sent")
        except TimeoutError as e:
            assert "still running" in str(e), e
        assert not req.test()
        WORLD.Barrier()
        assert req.wait() == 0
        assert (got == np.arange(4)).all()
    else:
        WORLD.Barrier()
        comm.send(np.arange(4, dtype=np.float32), 1, tag=1)
    return 1


def caller_thread_free(comm):
    """A Python thread keeps running while the main thread waits on a request."""
    ticks = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    th = threading.Thread(target=spin)
    th.start()
    x = np.full(1 << 22, 1.0, np.float32)
    if RANK == 0:
        time.sleep(0.3)  # the others wait inside wait()
    t0 = ticks[0]
    comm.allreduce(x, async_op=True).wait()
    stop.set()
    th.join()
    assert (x == SIZE).all()
    if RANK != 0:
        assert ticks[0] - t0 > 10, f"the thread ran {ticks[0] - t0} times during wait()"
    return 1


def two_threads(comm):
    """A second thread calling into a communicator that one thread is blocked
    in gets an error at once (not a deadlock, not a wrong order)."""
    if SIZE < 2:
        return 0
    if RANK == 0:
        got = np.empty(5, np.int32)
        th = threading.Thread(target=lambda: comm.recv(got, 1, tag=77))
        th.start()
        time.sleep(0.3)  # the thread is inside recv, waiting for rank 1
        try:
            comm.allreduce(np.ones(4, np.float32))
            raise AssertionError("a call from a second thread was accepted")
        except ringcomm.RingcommError as e:
            assert "already in use" in str(e), e
        WORLD.Barrier()  # now rank 1 sends
        th.join(timeout=60)
        assert not th.is_alive() and (got == np.arange(5)).all()
    else:
        WORLD.Barrier()
        if RANK == 1:
            comm.send(np.arange(5, dtype=np.int32), 0, tag=77)
    comm.barrier()  # the communicator is fine
    return 1


def dropped_request(comm):
    x = np.full(1000, 2.0, np.float32)
    comm.allreduce(x, async_op=True)  # never waited: freed by the garbage collector
    y = np.full(1000, 3.0, np.float32)
    comm.allreduce(y)
    assert (x == 2.0 * SIZE).all() and (y == 3.0 * SIZE).all()
    return 1


def close_fails_pending():
    comm = world_comm()
    if SIZE < 2:
        comm.close()
        return 0
    got = np.empty(3, np.float32)
    req = comm.irecv(got, (RANK + 1) % SIZE, tag=99)  # nobody sends
    comm.close()
    try:
        req.wait(timeout=5)
        raise AssertionError("a pending irecv completed after close()")
    except ringcomm.RingcommError as e:
        assert "closed" in str(e), e
    return 1


def two_communicators(comm):
    """Async collectives on two communicators in flight at once."""
    sub = comm.split(RANK % 2)
    members = [r for r in range(SIZE) if r % 2 == RANK % 2]
    reqs = []
    for k in range(4):
        a = np.full(50_001, RANK + k, np.int64)
        b = np.full(70_003, RANK * 10 + k, np.int64)
        reqs.append((comm.allreduce(a, async_op=True), a, tri(k)))
        reqs.append((sub.allreduce(b, async_op=True), b,
                     sum(10 * m + k for m in members)))
    for req, buf, want in reversed(reqs):
        req.wait()
        assert (buf == want).all(), (buf[:3], want)
    sub.close()
    return len(reqs)


def main():
    comm = world_comm()
    n = out_of_order_waits(comm)
    n += test_polling(comm)
    n += wait_timeout(comm)
    n += caller_thread_free(comm)
    n += dropped_request(comm)
    n += two_threads(comm)
    n += two_communicators(comm)
    comm.close()
    n += close_fails_pending()
    finish("async_ops", n)


if __name__ == "__main__":
    main()
