"""mismatch: one rank calls allreduce with a different count, dtype or op.

(Also: a different explicit algorithm, barrier against allreduce, and for
the other collectives: different roots, different collectives, different
counts and ops.)  A rank whose part of a call is only sending may return
before its peers find the mismatch; it raises at its next call, so those
scenarios follow the call with a barrier.

Every rank must raise RingcommError with status_name RC_ERR_MISMATCH (status
-7) -- not hang, not time out, not return garbage.  After each scenario the
broken communicator is closed, and a fresh one (from_mpi) must work.
RINGCOMM_TIMEOUT is set small by the test, so a missed mismatch shows up as
RC_ERR_TIMEOUT in the report instead of a hang.

Usage: mismatch.py [scenario ...]   (default: all)
"""

import sys
import time

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, finish, get_torch


def odd_rank():
    return SIZE - 1


# name -> function(rank) -> (buf, op)
def s_count(r):
    return np.ones(1001 if r == odd_rank() else 1000, np.float32), "sum"


def s_count_big(r):
    return np.ones(100000 + (r == odd_rank()), np.float32), "sum"


def s_count_rank0(r):
    return np.ones(5 if r == 0 else 6, np.int32), "sum"


def s_count_zero(r):
    return np.ones(0 if r == 0 else 64, np.float32), "sum"


def s_dtype_same_bytes(r):
    # float64 x 500 and float32 x 1000 have the same byte count
    if r == 1 % SIZE:
        return np.ones(500, np.float64), "sum"
    return np.ones(1000, np.float32), "sum"


def s_dtype_same_size(r):
    return np.ones(257, np.int32 if r == odd_rank() else np.float32), "max"


def s_dtype_bf16(r):
    torch = get_torch()
    return torch.ones(300, dtype=torch.bfloat16 if r == odd_rank() else torch.float16), "sum"


def s_op(r):
    return np.ones(4096, np.float32), "max" if r == 0 else "sum"


def s_op_avg(r):
    return np.ones(64, np.float64), "avg" if r == odd_rank() else "sum"


def s_op_bitwise(r):
    return np.ones(33, np.int64), "bxor" if r == odd_rank() else "bor"


def s_algorithm(r):
    # not a count/dtype/op mismatch, but must not hang or corrupt either
    return np.ones(5000, np.float32), "sum", ("tree" if r == odd_rank() else "ring")


def s_barrier_vs_allreduce(r):
    return (None if r == 0 else np.ones(10, np.float32)), "sum"


# Scenarios of the other collectives: function(rank) -> callable(comm)
def s_broadcast_root(r):
    x = np.ones(1000, np.float32)
    return lambda comm: comm.broadcast(x, root=1 if r == odd_rank() else 0)


def s_reduce_root(r):
    x = np.ones(100_000, np.float64)
    return lambda comm: comm.reduce(x, root=odd_rank() if r == 0 else 0)


def s_reduce_root_binomial(r):
    # more chunks than slots through the binomial tree: with another root a
    # leaf's parent may be a rank that never receives (4 ranks: rank 0 sends
    # to rank 3, a leaf of the tree the others build); the leaf blocks on a
    # full ring while that rank moves on to the barrier, and fails on seeing
    # it in a later call (rc_comm_peer_left).  4 MB: 8 chunks even at 4 ranks
    # on 2 CPUs (512 KiB chunks), 4 slots
    x = np.ones(500_000, np.float64)
    return lambda comm: comm.reduce(x, root=odd_rank() if r == 0 else 0, algorithm="binomial")


def s_gather_root(r):
    x = np.ones(10, np.int32)
    root = 1 if r == odd_rank() else 0
    return lambda comm: comm.gather(x, np.empty(10 * SIZE, np.int32), root=root)


def s_broadcast_vs_allreduce(r):
    x = np.ones(500, np.float32)
    return lambda comm: comm.broadcast(x) if r == 0 else comm.allreduce(x)


def s_allgather_vs_alltoall(r):
    x, y = np.ones(4 * SIZE, np.float32), np.empty(4 * SIZE * SIZE, np.float32)
    return lambda comm: (comm.alltoall(y, np.empty_like(y)) if r == odd_rank()
                         else comm.allgather(x, y))


def s_allgather_count(r):
    n = 7 if r == odd_rank() else 8
    return lambda comm: comm.allgather(np.ones(n, np.int64), np.empty(n * SIZE, np.int64))


def s_reduce_scatter_op(r):
    x, y = np.ones(64 * SIZE, np.float32), np.empty(64, np.float32)
    return lambda comm: comm.reduce_scatter(x, y, op="max" if r == 0 else "sum")


def s_scatter_dtype(r):
    dt = np.float64 if r == odd_rank() else np.int64
    return lambda comm: comm.scatter(np.ones(3 * SIZE, dt) if r == 0 else None,
                                     np.empty(3, dt), root=0)


SCENARIOS = {f.__name__[2:]: f for f in (s_count, s_count_big, s_count_rank0, s_count_zero,
                                         s_dtype_same_bytes, s_dtype_same_size, s_dtype_bf16,
                                         s_op, s_op_avg, s_op_bitwise, s_algorithm,
                                         s_barrier_vs_allreduce, s_broadcast_root,
                                         s_reduce_root, s_reduce_root_binomial, s_gather_root, s_broadcast_vs_allreduce,
                                         s_allgather_vs_alltoall, s_allgather_count,
                                         s_reduce_scatter_op, s_scatter_dtype)}


def check_fresh_comm_works():
    with ringcomm.Communicator.from_mpi(WORLD) as comm:
        x = np.arange(1000, dtype=np.int64) * (RANK + 1)
        comm.allreduce(x)
        expect = np.arange(1000, dtype=np.int64) * (SIZE * (SIZE + 1) // 2)
        assert np.array_equal(x, expect), "fresh communicator after a mismatch gives wrong sums"


def main():
    assert SIZE >= 2, "mismatch needs at least two ranks"
    names = sys.argv[1:] or list(SCENARIOS)
    outcomes = {}
    for name in names:
        comm = ringcomm.Communicator.from_mpi(WORLD)
        scenario = SCENARIOS[name](RANK)
        t0 = time.monotonic()
        try:
            if callable(scenario):
                scenario(comm)
                comm.barrier()  # send-only parts raise here at the latest
                outcome = "returned normally"
                raise StopIteration
            buf, op, *algo = scenario
            if buf is None:
                comm.barrier()
            else:
                comm.allreduce(buf, op=op, algorithm=algo[0] if algo else "auto")
            outcome = "returned normally"
        except ringcomm.RingcommError as e:
            outcome = f"{e.status_name} ({e.status}): {e}"
            if e.status_name == "RC_ERR_MISMATCH" and e.status == -7:
                outcome = "RC_ERR_MISMATCH"
        except StopIteration:
            pass
        except Exception as e:  # noqa: BLE001 - reported below
            outcome = f"{type(e).__name__}: {e}"
        dt = time.monotonic() - t0
        comm.close()
        outcomes[name] = (outcome, dt)
        check_fresh_comm_works()
    every = WORLD.allgather(outcomes)
    bad = [f"  {name}: rank {r}: {every[r][name][0]} (after {every[r][name][1]:.2f} s)"
           for name in names for r in range(SIZE) if every[r][name][0] != "RC_ERR_MISMATCH"]
    for name in names:
        worst = max(every[r][name][1] for r in range(SIZE))
        if RANK == 0:
            print(f"mismatch {name}: slowest rank raised after {worst:.3f} s", flush=True)
    if bad:
        raise AssertionError("expected RingcommError RC_ERR_MISMATCH on every rank:\n"
                             + "\n".join(bad))
    finish("mismatch", len(names))


if __name__ == "__main__":
    main()
