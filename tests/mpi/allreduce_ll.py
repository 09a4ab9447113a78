"""allreduce_ll: the one-line ("LL") shared-memory path of tiny all-reduces.

All-reduces of at most 48 bytes with every rank on one host travel through
each rank's outbox of 8 cache lines instead of the slot rings (shm.c).

Modes (argv[1]):

* ``stress`` -- 2400 seeded random all-reduces (float32, float64, int32,
  bfloat16; sum, max, min, prod, avg; counts 0 .. 48 bytes, now and then
  just above, in place and out of place, "direct" and "auto"), interleaved
  with broadcasts from root 0 and reduces to root 1 (collectives in which
  some rank only sends, so ranks drift apart and the outbox lines wrap
  around while readers lag), every result checked against numpy and
  bitwise the same on every rank;
* ``paths`` -- one 48-byte and one 52-byte call (the pytest side checks
  RINGCOMM_DEBUG=INFO says which took the one-line path);
* ``mismatch`` -- one rank differs from the others in one LL call (count 2
  vs 3, float32 vs float64 of the same count, the LL all-reduce against a
  broadcast from rank 0 or from the odd rank, against a 64-byte all-reduce
  on the slot path): every rank must raise RC_ERR_MISMATCH whose text names
  both calls (the odd rank's and another's), never time out.  A send-only
  broadcast root raises at its next call (a barrier) at the latest.
"""

import sys
import time

import numpy as np

import ringcomm
from _common import (RANK, SIZE, WORLD, as_numpy, case_seed, check_same_on_all_ranks,
                     check_values, digest, finish, gen_rank_data, get_torch, raw_bytes,
                     reference, storage_dtype)

LL_DTYPES = {"float32": 4, "float64": 8, "int32": 4, "bfloat16": 2}
OPS = {"float32": ("sum", "max", "min", "prod", "avg"),
       "float64": ("sum", "max", "min", "prod", "avg"),
       "bfloat16": ("sum", "max", "min", "prod", "avg"),
       "int32": ("sum", "max", "min", "prod")}


def make(dtype, arr):
    if dtype == "bfloat16":
        torch = get_torch()
        return torch.from_numpy(np.array(arr, np.float32, copy=True)).to(torch.bfloat16)
    return np.array(arr, copy=True)


def stress(n_cases=2400):
    rng = np.random.default_rng(1234)  # same plan on every rank
    records, ll_calls = [], 0
    with ringcomm.Communicator.from_mpi(WORLD) as comm:
        for case in range(n_cases):
            dtype = rng.choice(list(LL_DTYPES))
            op = rng.choice(OPS[dtype])
            max_count = 48 // LL_DTYPES[dtype]
            # mostly the one-line path, sometimes just past it (slot path)
            count = int(rng.integers(0, max_count + 1)) if rng.random() < 0.9 \
                else max_count + int(rng.integers(1, 4))
            ll_calls += count <= max_count
            inplace = bool(rng.integers(0, 2))
            algo = "direct" if rng.random() < 0.5 else "auto"
            seed = case_seed("ll", case)
            datas = [gen_rank_data(dtype, op, count, seed, r, SIZE) for r in range(SIZE)]
            buf = make(dtype, datas[RANK])
            if inplace:
                res = comm.allreduce(buf, op=op, algorithm=algo)
            else:
                out = make(dtype, np.full(count, 7, storage_dtype(dtype)))
                res = comm.allreduce(buf, out=out, op=op, algorithm=algo)
                got_in = as_numpy(buf, dtype)
                if not np.array_equal(got_in, datas[RANK], equal_nan=dtype != "int32"):
                    raise AssertionError(f"case {case}: out-of-place all-reduce changed its input")
            got = as_numpy(res, dtype)
            ref, absum = reference(dtype, op, datas, SIZE)
            what = f"case {case}: allreduce {dtype} {op} count={count} inplace={inplace} {algo}"
            check_values(dtype, op, got, ref, absum, SIZE, what)
            records.append((case, digest(raw_bytes(res))))
            # collectives in which some rank only sends: ranks drift apart
            k = case % 7
            if k == 1:
                b = np.full(3 + case % 5, RANK + case, np.int64)
                comm.broadcast(b, root=0)
                if not (b == case).all():
                    raise AssertionError(f"case {case}: broadcast from 0 gave {b}")
            elif k == 4:
                r = np.full(5, RANK + 1, np.int32)
                comm.reduce(r, root=1 % SIZE)
                if RANK == 1 % SIZE and not (r == SIZE * (SIZE + 1) // 2).all():
                    raise AssertionError(f"case {case}: reduce to 1 gave {r}")
            elif k == 6 and case % 3 == 0:
                comm.barrier()
    check_same_on_all_ranks(records, "LL all-reduce results")
    assert ll_calls > n_cases * 0.8, ll_calls
    finish("allreduce_ll-stress", n_cases)


def paths():
    with ringcomm.Communicator.from_mpi(WORLD) as comm:
        for count in (12, 13):
            x = np.full(count, RANK + 1.0, np.float32)
            comm.allreduce(x, algorithm="direct")
            assert (x == SIZE * (SIZE + 1) / 2).all(), x
    finish("allreduce_ll-paths", 2)


def odd_rank():
    return SIZE - 1


# name -> function(comm, odd) running this rank's call
SCENARIOS = {
    "count": lambda c, odd: c.allreduce(np.ones(3 if odd else 2, np.float32)),
    "dtype": lambda c, odd: c.allreduce(np.ones(2, np.float64 if odd else np.float32)),
    "op": lambda c, odd: c.allreduce(np.ones(4, np.int32), op="max" if odd else "sum"),
    "slot_path": lambda c, odd: c.allreduce(np.ones(16 if odd else 2, np.float32)),
    # rank 0 is the root: the others wait to receive
    "broadcast_from_0": lambda c, odd: (c.broadcast(np.ones(2, np.float32), root=0) if odd
                                        else c.allreduce(np.ones(2, np.float32))),
    # the odd rank is the root and only sends: its peers find its slot message
    "broadcast_from_odd": lambda c, odd: (c.broadcast(np.ones(2, np.float32), root=odd_rank())
                                          if odd else c.allreduce(np.ones(2, np.float32))),
}

# what each scenario's message must name (rc_desc_format's wording)
NAMES = {
    "count": ("count=2", "count=3"),
    "dtype": ("float32", "float64"),
    "op": ("sum", "max"),
    "slot_path": ("count=2", "count=16"),
    "broadcast_from_0": ("allreduce", "broadcast"),
    "broadcast_from_odd": ("allreduce", "broadcast"),
}


def mismatch(names):
    outcomes = {}
    for name in names:
        comm = ringcomm.Communicator.from_mpi(WORLD)
        # good LL calls first: the mismatch is not on the first lines
        for i in range(11):
            x = np.full(3, float(i), np.float32)
            comm.allreduce(x)  # (once raised here: a failure recorded in call 11)
            assert (x == i * SIZE).all(), x
        t0 = time.monotonic()
        try:
            SCENARIOS[name](comm, RANK == odd_rank())
            comm.barrier()  # a send-only root raises here at the latest
            outcome = "returned normally"
        except ringcomm.RingcommError as e:
            msg = str(e)
            want = NAMES[name]
            if e.status_name != "RC_ERR_MISMATCH":
                outcome = f"{e.status_name}: {msg}"
            elif not all(w in msg for w in want) or "collective mismatch: rank" not in msg:
                outcome = f"mismatch text does not name both calls ({want}): {msg}"
            else:
                outcome = "RC_ERR_MISMATCH"
        dt = time.monotonic() - t0
        comm.close()
        outcomes[name] = (outcome, dt)
        if RANK == 0 or outcome != "RC_ERR_MISMATCH":
            print(f"mismatch {name} rank {RANK}: {outcome} after {dt:.3f} s", flush=True)
    every = WORLD.allgather(outcomes)
    bad = [f"  {name}: rank {r}: {every[r][name][0]} (after {every[r][name][1]:.2f} s)"
           for name in names for r in range(SIZE) if every[r][name][0] != "RC_ERR_MISMATCH"]
    if bad:
        raise AssertionError("expected RC_ERR_MISMATCH naming both calls on every rank:\n"
                             + "\n".join(bad))
    # the communicator after all that: a fresh one works
    with ringcomm.Communicator.from_mpi(WORLD) as comm:
        x = np.full(2, RANK + 1.0, np.float32)
        comm.allreduce(x)
        assert (x == SIZE * (SIZE + 1) / 2).all(), x
    finish("allreduce_ll-mismatch", len(names))


def main():
    assert SIZE >= 2
    mode = sys.argv[1]
    if mode == "stress":
        stress(int(sys.argv[2]) if len(sys.argv) > 2 else 2400)
    elif mode == "paths":
        paths()
    elif mode == "mismatch":
        mismatch(sys.argv[2:] or list(SCENARIOS))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
