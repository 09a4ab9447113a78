"""determinism: the same inputs and algorithm give the same bytes, every time.

For every algorithm and a set of order-sensitive float cases (mixed
magnitudes, so any change of reduction order shows in the bits), the
allreduce is repeated three times on one communicator and once more on a
fresh communicator; all results must be bitwise equal, and equal on every
rank.
"""

import ringcomm
from _common import (RANK, SIZE, WORLD, case_seed, check_same_on_all_ranks, digest, finish,
                     gen_rank_data, make_buf, raw_bytes)

CASES = [("float32", "sum", 20003), ("float64", "sum", 4099), ("float16", "sum", 20001),
         ("bfloat16", "avg", 20001), ("float32", "avg", 1000), ("float32", "prod", 777),
         ("float16", "prod", 5)]


def main():
    algos = list(ringcomm.algorithms()) + ["auto"]
    records, ncases = [], 0
    first = {}
    comms = [ringcomm.Communicator.from_mpi(WORLD)]
    for round_ in range(4):
        if round_ == 3:   # a fresh communicator for the last round
            comms[0].close()
            comms[0] = ringcomm.Communicator.from_mpi(WORLD)
        comm = comms[0]
        for algo in algos:
            for dtype, op, count in CASES:
                data = gen_rank_data(dtype, op, count, case_seed(7, dtype, op, count), RANK,
                                     SIZE, nonfinite=False)
                buf = make_buf("numpy" if round_ % 2 else "torch", dtype, data)
                comm.allreduce(buf, op=op, algorithm=algo)
                b = raw_bytes(buf)
                key = (algo, dtype, op, count)
                if key in first:
                    assert first[key] == b, f"{key}: round {round_} differs from round 0"
                else:
                    first[key] = b
                    records.append((repr(key), digest(b)))
                ncases += 1
    comms[0].close()
    check_same_on_all_ranks(records)
    finish("determinism", ncases)


if __name__ == "__main__":
    main()
