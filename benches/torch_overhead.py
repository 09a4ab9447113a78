"""Overhead of the torch.distributed backend "ringcomm" over ringcomm's own API, gloo beside.

    mpirun -n 2 python benches/torch_overhead.py [--reps 7] [--ddp-steps 200]

In one run, on the same processes and buffers (float32, sum):

- ``dist.all_reduce`` of 4 B and 16 MiB through the ringcomm backend,
- the same through a gloo group,
- ``Communicator.allreduce`` on the backend's own communicator (no torch layer),

each the median over --reps repetitions of the mean time per call of a
timed loop (rank 0's numbers; every loop starts after a barrier; the three
take turns in every repetition); and the
median step time of DistributedDataParallel training of a small MLP on each
backend.  The difference between the first and the third line is what the
backend's Python path costs per call.
"""
import argparse
import statistics
import time

import torch
import torch.distributed as dist

import ringcomm.torch as rt

torch.set_num_threads(1)


def per_call(variants, reps, barrier):
    """Median time per call of each (fn, iters); the variants take turns in
    every repetition, so a burst of load on this shared host hits them alike."""
    out = [[] for _ in variants]
    cpu = [[] for _ in variants]
    for _ in range(reps):
        for k, (fn, iters) in enumerate(variants):
            barrier()
            t0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(iters):
                fn()
            out[k].append((time.perf_counter() - t0) / iters)
            cpu[k].append((time.thread_time() - c0) / iters)
    return [statistics.median(o) for o in out], [statistics.median(c) for c in cpu]


def ddp_step_time(group, steps):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 1))
    ddp = torch.nn.parallel.DistributedDataParallel(model, process_group=group)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(dist.get_rank())
    x, y = torch.randn(64, 32, generator=g), torch.randn(64, 1, generator=g)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.mse_loss(ddp(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[steps // 5:])


def fmt(s):
    return "%.1f us" % (s * 1e6) if s < 1e-3 else "%.2f ms" % (s * 1e3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--ddp-steps", type=int, default=200)
    args = ap.parse_args()
    dist.init_process_group("ringcomm")
    rank, size = dist.get_rank(), dist.get_world_size()
    gloo = dist.new_group(backend="gloo")
    comm = dist.group.WORLD.communicator
    barrier = comm.barrier
    rows = []
    for nbytes, iters_rc, iters_gloo in ((4, 500, 50), (16 << 20, 5, 2)):
        t = torch.ones(nbytes // 4)
        (r_dist, r_own, r_gloo), (c_dist, c_own, _) = per_call([(lambda: dist.all_reduce(t), iters_rc),
                                          (lambda: comm.allreduce(t), iters_rc),
                                          (lambda: dist.all_reduce(t, group=gloo), iters_gloo)],
                                         args.reps, barrier)
        rows.append((nbytes, r_dist, r_own, r_gloo, c_dist, c_own))
    ddp_rc = ddp_step_time(None, args.ddp_steps)
    ddp_gloo = ddp_step_time(gloo, args.ddp_steps)
    if rank == 0:
        print(f"# torch {torch.__version__}, {size} ranks, float32 sum, median of {args.reps}")
        print("| size | dist.all_reduce (ringcomm) | Communicator.allreduce | backend overhead "
              "| dist.all_reduce (gloo) | gloo / ringcomm |")
        print("|---:|---:|---:|---:|---:|---:|")
        for nbytes, r_dist, r_own, r_gloo, _, _ in rows:
            size_s = "4 B" if nbytes == 4 else "16 MiB"
            print(f"| {size_s} | {fmt(r_dist)} | {fmt(r_own)} | {fmt(r_dist - r_own)} "
                  f"| {fmt(r_gloo)} | {r_gloo / r_dist:.1f}x |")
        _, _, _, _, c_dist, c_own = rows[0]
        print(f"\nCPU time of the calling thread per 4 B call (thread_time; at 1 rank this is "
              f"the pure software cost, at more ranks it includes spinning): dist.all_reduce "
              f"{fmt(c_dist)}, Communicator.allreduce {fmt(c_own)}, difference {fmt(c_dist - c_own)}")
        print(f"\nDDP step (MLP 32-128-128-1, batch 64 per rank), median of {args.ddp_steps}: "
              f"ringcomm {fmt(ddp_rc)}, gloo {fmt(ddp_gloo)} ({ddp_gloo / ddp_rc:.2f}x)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
