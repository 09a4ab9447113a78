"""env vars are read at communicator creation, and rank 0's values rule.

Rank 0 sets RINGCOMM_CHUNK_BYTES / RINGCOMM_NSLOTS to one value, the other
ranks to different ones, before each communicator is made.  The communicator
must still work (every algorithm, several dtypes, counts that cross many
chunks) and give the numpy reference on every rank, bitwise identical across
ranks.
"""

import os

import ringcomm
from _common import (RANK, SIZE, WORLD, as_numpy, case_seed, check_same_on_all_ranks,
                     check_values, digest, finish, gen_rank_data, make_buf, raw_bytes,
                     reference)

SETTINGS = [  # (rank 0's chunk bytes, nslots), (others')
    (("256", "2"), ("4096", "8")),
    (("65536", "4"), ("512", "2")),
]
CASES = [("float32", "sum", 5000), ("bfloat16", "max", 3001), ("int8", "bxor", 10007),
         ("float64", "avg", 777)]


def main():
    names = list(ringcomm.algorithms()) + ["auto"]
    records, ncases = [], 0
    for i, (mine0, others) in enumerate(SETTINGS):
        chunk, nslots = mine0 if RANK == 0 else others
        os.environ["RINGCOMM_CHUNK_BYTES"] = chunk
        os.environ["RINGCOMM_NSLOTS"] = nslots
        try:
            comm = ringcomm.Communicator.from_mpi(WORLD)
        finally:
            del os.environ["RINGCOMM_CHUNK_BYTES"], os.environ["RINGCOMM_NSLOTS"]
        with comm:
            assert comm.chunk_bytes == int(mine0[0]), \
                f"rank {RANK}: chunk_bytes {comm.chunk_bytes}, rank 0 asked for {mine0[0]}"
            for dtype, op, count in CASES:
                seed = case_seed(5, dtype, op, count)
                datas = [gen_rank_data(dtype, op, count, seed, r, SIZE) for r in range(SIZE)]
                ref, absum = reference(dtype, op, datas, SIZE)
                for algo in names:
                    buf = make_buf("numpy", dtype, datas[RANK])
                    comm.allreduce(buf, op=op, algorithm=algo)
                    key = f"setting{i}/{algo}/{dtype}/{op}/n={count}"
                    check_values(dtype, op, as_numpy(buf, dtype), ref, absum, SIZE, key)
                    records.append((key, digest(raw_bytes(buf))))
                    ncases += 1
    check_same_on_all_ranks(records)
    finish("env_rank0", ncases)


if __name__ == "__main__":
    main()
