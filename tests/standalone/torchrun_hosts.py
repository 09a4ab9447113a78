"""torchrun launch across simulated hosts: `torchrun --standalone
--nproc-per-node 4 torchrun_hosts.py` puts ranks 0-1 on "host0" and 2-3 on
"host1" (RINGCOMM_HOST_ID, set before ringcomm.init(), which bootstraps
through the torch Store).  Ranks of one host talk over shared memory, the
others over TCP; "auto" all-reduce is then the hierarchical one.  Checks
every all-reduce algorithm, broadcast, all-gather and a send/recv ring
shift against numpy; each rank prints TORCHRUN-HOSTS-OK."""

import os

RANK = int(os.environ["RANK"])
SIZE = int(os.environ["WORLD_SIZE"])
PER_HOST = int(os.environ.get("RINGCOMM_TEST_PER_HOST", "2"))
os.environ["RINGCOMM_HOST_ID"] = "host%d" % (RANK // PER_HOST)

import numpy as np  # noqa: E402

import ringcomm  # noqa: E402


def data(count, r):
    return np.random.default_rng([count, r]).integers(-10**6, 10**6, count, dtype=np.int64)


def main():
    comm = ringcomm.init(timeout=120)
    assert (comm.rank, comm.size) == (RANK, SIZE)
    uniform = SIZE % PER_HOST == 0 and SIZE > PER_HOST > 1
    assert (comm.select_algorithm(1 << 20) == "hier") == uniform, comm.select_algorithm(1 << 20)
    cases = 0
    for count in (0, 1, 1000, 300001):
        xs = [data(count, r) for r in range(SIZE)]
        for algo in ("auto", "hier", "ring", "tree"):
            x = xs[RANK].copy()
            comm.allreduce(x, algorithm=algo)
            assert np.array_equal(x, sum(xs[1:], xs[0].copy())), (algo, count)
            cases += 1
        y = xs[RANK].copy()
        comm.broadcast(y, root=SIZE - 1)
        assert np.array_equal(y, xs[SIZE - 1]), count
        out = np.empty(count * SIZE, np.int64)
        comm.allgather(xs[RANK], out)
        assert np.array_equal(out, np.concatenate(xs)), count
        got = np.empty(count, np.int64)
        req = comm.isend(xs[RANK], (RANK + 1) % SIZE, tag=3)
        comm.recv(got, (RANK - 1) % SIZE, tag=3)
        req.wait()
        assert np.array_equal(got, xs[(RANK - 1) % SIZE]), count
        cases += 3
    comm.close()
    print(f"TORCHRUN-HOSTS-OK rank={RANK} size={SIZE} cases={cases}", flush=True)


if __name__ == "__main__":
    main()
