"""Point-to-point send/recv: ring shift, ping-pong, tags out of order,
ANY_SOURCE, self-sends, large streamed messages, and p2p mixed with
collectives.  Every message's content depends on (sender, receiver, tag,
round), so a message delivered to the wrong receive shows.
"""

import argparse

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, as_numpy, finish, get_torch, log, world_comm


def payload(src, dst, tag, n, dtype="float32", rnd=0):
    rng = np.random.default_rng([src, dst, tag, rnd, n])
    x = rng.standard_normal(n) * 100
    if dtype == "bfloat16":
        torch = get_torch()
        return torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
    return x.astype(dtype)


def empty_like(x):
    if hasattr(x, "numpy"):
        return get_torch().empty_like(x)
    return np.empty_like(x)


def same(a, b):
    if hasattr(a, "numpy"):
        return bool(get_torch().equal(a, b))
    return np.array_equal(a, b)


def ring_shift(comm, sizes, dtypes):
    n_cases = 0
    right, left = (RANK + 1) % SIZE, (RANK - 1) % SIZE
    for dtype in dtypes:
        for i, n in enumerate(sizes):
            tag = i
            x = payload(RANK, right, tag, n, dtype)
            got = empty_like(payload(left, RANK, tag, n, dtype))
            # blocking receive after a posted send: never deadlocks
            sreq = comm.isend(x, right, tag)
            src = comm.recv(got, left, tag)
            sreq.wait()
            assert src == left, (src, left)
            assert same(got, payload(left, RANK, tag, n, dtype)), f"shift {dtype} n={n}"
            # and both sides posted
            got2 = empty_like(got)
            rreq = comm.irecv(got2, left, tag + 1000)
            sreq = comm.isend(x, right, tag + 1000)
            assert rreq.wait() == left
            sreq.wait()
            assert rreq.test() and sreq.test() and rreq.source == left
            assert same(got2, got), f"ishift {dtype} n={n}"
            n_cases += 2
    return n_cases


def ping_pong(comm, n, rounds):
    if SIZE < 2 or RANK > 1:
        return 0
    peer = 1 - RANK
    buf = np.zeros(n, np.float64)
    for rnd in range(rounds):
        if (rnd + RANK) % 2 == 0:
            x = payload(RANK, peer, 7, n, "float64", rnd)
            comm.send(x, peer, 7)
        else:
            comm.recv(buf, peer, 7)
            assert np.array_equal(buf, payload(peer, RANK, 7, n, "float64", rnd)), rnd
    return rounds


def tags_out_of_order(comm, n, ntags):
    """0 sends tags 0..T-1 (two messages per tag); 1 receives in reverse tag order."""
    if SIZE < 2 or RANK > 1:
        return 0
    if RANK == 0:
        reqs = []
        for t in range(ntags):
            for k in range(2):
                reqs.append(comm.isend(payload(0, 1, t, n, rnd=k), 1, t))
        for r in reqs:
            r.wait()
    else:
        for t in reversed(range(ntags)):
            for k in range(2):  # same tag: in send order
                got = np.empty(n, np.float32)
                comm.recv(got, 0, t)
                assert np.array_equal(got, payload(0, 1, t, n, rnd=k)), (t, k)
    return 2 * ntags


def any_source(comm, n):
    """Rank 0 receives one message from every other rank with ANY_SOURCE."""
    if RANK == 0:
        seen = set()
        for _ in range(SIZE - 1):
            got = np.empty(n, np.float32)
            src = comm.recv(got, ringcomm.ANY_SOURCE, 3)
            assert np.array_equal(got, payload(src, 0, 3, n)), src
            seen.add(src)
        assert seen == set(range(1, SIZE)), seen
    else:
        comm.send(payload(RANK, 0, 3, n), 0, 3)
    return 1


def self_send(comm, n):
    x = payload(RANK, RANK, 9, n)
    got = np.empty_like(x)
    r = comm.irecv(got, RANK, 9)
    comm.send(x, RANK, 9)
    assert r.wait() == RANK
    assert np.array_equal(got, x)
    return 1


def mixed_with_collectives(comm, n):
    """A large send posted before an all-reduce completes after it: the
    point-to-point lane never blocks the collective one."""
    right, left = (RANK + 1) % SIZE, (RANK - 1) % SIZE
    x = payload(RANK, right, 11, n)
    s = comm.isend(x, right, 11)
    y = np.arange(1000, dtype=np.int64) + RANK
    comm.allreduce(y)
    assert np.array_equal(y, np.arange(1000) * SIZE + SIZE * (SIZE - 1) // 2)
    got = np.empty(n, np.float32)
    comm.recv(got, left, 11)
    s.wait()
    assert np.array_equal(got, payload(left, RANK, 11, n))
    return 1


def many_outstanding(comm, n, count=100):
    """More sends in flight to one peer than the transport has ack flags (64),
    received in a different order; the sender overwrites each buffer as soon
    as its request completes, so a send completed too early shows as a wrong
    message."""
    if SIZE < 2 or RANK > 1:
        return 0
    if RANK == 0:
        bufs = [payload(0, 1, k, n) for k in range(count)]
        reqs = [comm.isend(bufs[k], 1, tag=k) for k in range(count)]
        pending = set(range(count))
        while pending:
            for k in list(pending):
                if reqs[k].test():
                    bufs[k][:] = -1.0
                    pending.discard(k)
    else:
        last = np.empty(n, np.float32)
        lreq = comm.irecv(last, 0, tag=count - 1)  # posted first: the rest gets buffered
        for k in range(count - 1):
            got = np.empty(n, np.float32)
            comm.recv(got, 0, tag=k)
            assert np.array_equal(got, payload(0, 1, k, n)), f"message {k} of {count}"
        lreq.wait()
        assert np.array_equal(last, payload(0, 1, count - 1, n))
    return count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--large", type=int, default=2_000_003)
    ap.add_argument("--dtypes", default="float64,int8,uint8,int32,int64,float16,bfloat16",
                    help="dtypes of the second ring shift (bfloat16 imports torch)")
    args = ap.parse_args()
    comm = world_comm()
    chunk = comm.chunk_bytes // 4
    sizes = [0, 1, 3, chunk - 1, chunk, chunk + 1, 3 * chunk + 7, args.large]
    n = ring_shift(comm, sizes, ["float32"])
    n += ring_shift(comm, [0, 1, 1001, 3 * chunk + 5], args.dtypes.split(","))
    n += ping_pong(comm, 1, 500)
    n += ping_pong(comm, 3 * chunk + 1, 20)
    n += tags_out_of_order(comm, 5, 40)
    n += tags_out_of_order(comm, 3 * chunk + 3, 4)  # large unexpected messages
    n += any_source(comm, 1001)
    n += self_send(comm, 10)
    n += mixed_with_collectives(comm, 4 * chunk + 1)
    n += many_outstanding(comm, 1 << 15)
    comm.barrier()
    comm.close()
    log("p2p cases", n)
    finish("p2p", n)


if __name__ == "__main__":
    main()
