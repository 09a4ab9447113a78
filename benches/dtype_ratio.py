"""16-bit all-reduce against float32, bytes per second, in one run.

    mpirun -n 2 python benches/dtype_ratio.py [-s 64K,1M,16M,64M] [-r 9] [-a auto]

For every size (bytes of the buffer), float32, bfloat16 and float16 sum
all-reduces of that many bytes take turns in each of -r repetitions (each
repetition: a barrier, then a timed loop of calls of one dtype, the slowest
rank's mean per call); the table gives the median time per dtype and the
16-bit/float32 ratio of bytes per second (1.00: as fast per byte; the target
is >= 0.90).  Taking turns matters on a shared VM whose speed drifts: runs of
one dtype after another would compare different machine states.
"""
import argparse
import os
import statistics
import time

import numpy as np
import torch
from mpi4py import MPI

import ringcomm
from ringcomm.bench import parse_size

DTYPES = ("float32", "bfloat16", "float16")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-s", "--sizes", default="64K,1M,16M,64M")
    ap.add_argument("-r", "--reps", type=int, default=9)
    ap.add_argument("-a", "--algorithm", default="auto")
    args = ap.parse_args()
    world = MPI.COMM_WORLD
    comm = ringcomm.Communicator.from_mpi(world)
    rng = np.random.default_rng(comm.rank)
    if comm.rank == 0:
        print(f"# 16-bit vs float32 all-reduce (sum, {args.algorithm}), {comm.size} ranks, "
              f"median of {args.reps} interleaved repetitions; load average "
              f"{os.getloadavg()[0]:.2f}")
        print(f"# {'bytes':>10} " + " ".join(f"{d + ' us':>14}" for d in DTYPES)
              + f" {'bf16/f32':>9} {'fp16/f32':>9}")
    for size in (parse_size(s) for s in args.sizes.split(",")):
        bufs = {}
        for d in DTYPES:
            x = rng.standard_normal(size // DTYPE_BYTES[d]).astype(np.float32)
            send = torch.from_numpy(x).to(torch.bfloat16) if d == "bfloat16" else x.astype(d)
            bufs[d] = (send, send.clone() if d == "bfloat16" else np.empty_like(send))
        iters = max(1, min(1000, int(2e8 // max(size, 1) // 10)))
        times = {d: [] for d in DTYPES}
        for d, (s, r) in bufs.items():     # warm-up
            for _ in range(max(1, iters // 4)):
                comm.allreduce(s, out=r, algorithm=args.algorithm)
        for _ in range(args.reps):
            for d, (s, r) in bufs.items():
                world.Barrier()
                t0 = time.perf_counter()
                for _ in range(iters):
                    comm.allreduce(s, out=r, algorithm=args.algorithm)
                times[d].append(world.allreduce((time.perf_counter() - t0) / iters, op=MPI.MAX))
        if comm.rank == 0:
            med = {d: statistics.median(t) for d, t in times.items()}
            print(f"  {size:>10} " + " ".join(f"{med[d] * 1e6:14.2f}" for d in DTYPES)
                  + f" {med['float32'] / med['bfloat16']:9.2f} {med['float32'] / med['float16']:9.2f}",
                  flush=True)
    comm.close()


if __name__ == "__main__":
    main()
