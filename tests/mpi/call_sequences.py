"""call sequences: results must not depend on what the communicator did before.

  1. Each named algorithm as the FIRST call on a fresh communicator, with a
     buffer far larger than one chunk (an algorithm that only fits one chunk
     must decline and fall back, not overflow).
  2. Calls that alternate a 1-byte and an 8-byte dtype with the same count,
     chosen so the 1-byte buffer fits one chunk and the 8-byte one does not,
     for every algorithm, in place and out of place.
Every result is checked against the exact integer/float reference.
"""

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, finish


def expect_int(count, dtype):
    base = np.arange(count, dtype=np.int64)
    return (SIZE * base + SIZE * (SIZE - 1) // 2).astype(dtype)


def run(comm, count, dtype, algo, inplace, tag):
    x = (np.arange(count, dtype=np.int64) + RANK).astype(dtype)
    if inplace:
        comm.allreduce(x, algorithm=algo)
        res = x
    else:
        res = np.zeros_like(x)
        comm.allreduce(x, out=res, algorithm=algo)
    exp = expect_int(count, dtype)
    assert np.array_equal(res, exp), f"{tag}: {algo} {dtype} n={count} inplace={inplace} wrong"


def main():
    names = list(ringcomm.algorithms())
    ncases = 0
    for algo in names:
        for inplace in (True, False):
            with ringcomm.Communicator.from_mpi(WORLD) as comm:
                big = 8 * comm.chunk_bytes // 4 + 3          # eight chunks of float32 and more
                run(comm, big, np.float32, algo, inplace, "first call on a fresh communicator")
                ncases += 1
    with ringcomm.Communicator.from_mpi(WORLD) as comm:
        count = comm.chunk_bytes // 2        # int8 fits one chunk, int64 needs four
        for rnd in range(2):
            for algo in names + ["auto"]:
                for dtype in ("int8", "int64", "uint8", "float64", "int8"):
                    run(comm, count, dtype, algo, inplace=(rnd == 0), tag="alternating dtypes")
                    ncases += 1
    finish("call_sequences", ncases)


if __name__ == "__main__":
    main()
