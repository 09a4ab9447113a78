"""ringcomm.init() under a launcher that sets RANK, WORLD_SIZE, MASTER_ADDR
and MASTER_PORT itself (srun, a shell script: no torchrun agent, so rank 0
hosts the TCPStore server inside init()).

    RANK=r WORLD_SIZE=p MASTER_ADDR=127.0.0.1 MASTER_PORT=N python env_launch.py ROUNDS [--slow]

Each of ROUNDS rounds makes the world communicator with ringcomm.init() on
the same port, checks an all-reduce, a split (color rank % 2, key -rank), a
nested split and collectives on them against numpy on seeded data, and
closes them.  --slow makes every rank but 0 read the store's last round
0.3 s late (a proxy around the store that init() builds): rank 0 must not
return, and so drop the server, before they have read it.  Prints
ENV-LAUNCH-OK rank=R size=P rounds=N at the end; the last round returns
straight to exit (the original failure: rank 0 left while the others still
read).
"""
import os
import sys
import time

import numpy as np

import ringcomm
from ringcomm import bootstrap

RANK = int(os.environ["RANK"])
SIZE = int(os.environ["WORLD_SIZE"])


class SlowStore:
    """Delegates to the store; on ranks but 0, each get of the last
    all-gather round ("/ag2/") is 0.3 s late."""

    def __init__(self, store):
        self._s = store

    def get(self, key):
        if RANK != 0 and "/ag2/" in key:
            time.sleep(0.3)
        return self._s.get(key)

    def __getattr__(self, name):
        return getattr(self._s, name)


def data(n, *key):
    return np.random.default_rng([*key, RANK]).standard_normal(n)


def others(n, members, *key):
    return [np.random.default_rng([*key, r]).standard_normal(n) for r in members]


def check_sub(comm, members, what, rnd):
    """allreduce and allgather on `comm` (whose world ranks are `members`)."""
    assert comm.size == len(members) and members[comm.rank] == RANK, (what, comm.rank, members)
    n = 1000 + 7 * rnd
    x = data(n, rnd, len(members))
    comm.allreduce(x)
    ref = np.sum(others(n, members, rnd, len(members)), axis=0)
    np.testing.assert_allclose(x, ref, rtol=1e-12, atol=1e-12, err_msg=what)
    y = np.empty(len(members) * 3, np.int64)
    comm.allgather(np.arange(3, dtype=np.int64) + 10 * RANK, y)
    assert np.array_equal(y, np.concatenate([np.arange(3) + 10 * r for r in members])), what


def main():
    rounds = int(sys.argv[1])
    if "--slow" in sys.argv:
        orig = bootstrap.from_store
        bootstrap.from_store = lambda store, *a, **k: orig(SlowStore(store), *a, **k)
    cases = 0
    for rnd in range(rounds):
        comm = ringcomm.init(timeout=60)
        assert (comm.rank, comm.size) == (RANK, SIZE)
        check_sub(comm, list(range(SIZE)), "world", rnd)
        # split: color rank % 2, key -rank (reversed order)
        sub = comm.split(RANK % 2, key=-RANK)
        members = sorted((r for r in range(SIZE) if r % 2 == RANK % 2), reverse=True)
        check_sub(sub, members, "split", rnd)
        # nested: the sub-communicator's first two ranks; the others join none
        inner = sub.split(0 if sub.rank < 2 else None)
        if sub.rank < 2:
            check_sub(inner, members[:2], "nested split", rnd)
            inner.close()
        else:
            assert inner is None
        sub.close()
        comm.barrier()
        cases += 4
        if rnd + 1 < rounds:
            comm.close()
    # the last communicator is left to exit (as scripts do)
    print(f"ENV-LAUNCH-OK rank={RANK} size={SIZE} rounds={rounds} cases={cases}", flush=True)


if __name__ == "__main__":
    main()
