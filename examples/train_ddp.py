"""DistributedDataParallel training over the torch.distributed backend "ringcomm".

    mpirun -n 4 python examples/train_ddp.py
    torchrun --nproc-per-node 4 examples/train_ddp.py
    mpirun -n 2 python examples/train_ddp.py --hook bf16 --steps 500
    mpirun -n 2 python examples/train_ddp.py --backend gloo       # the same on gloo

The only ringcomm-specific lines are ``import ringcomm.torch`` and the
backend name given to ``init_process_group``.  Every rank trains the same
seeded MLP on its own shard of a seeded regression dataset; DDP averages the
gradients over the ranks at every step.  A communication hook wraps the
all-reduce to time it (``--hook``: ``avg`` = DDP's own averaging, ``bf16`` /
``fp16`` = ringcomm's 16-bit hooks).  At the end the script checks that every
rank holds bitwise identical parameters and that the loss went down, and
returns non-zero otherwise.
"""
import argparse
import hashlib
import sys
import time

import torch
import torch.distributed as dist

import ringcomm.torch as rt   # registers "ringcomm"; under mpirun also sets RANK, MASTER_ADDR, ...

torch.set_num_threads(1)      # several ranks on few cores: no oversubscription


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64, help="samples per rank and step")
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--hook", choices=("avg", "bf16", "fp16"), default="avg")
    ap.add_argument("--backend", default="ringcomm", help="ringcomm (default) or gloo, to compare")
    ap.add_argument("--print-every", type=int, default=50)
    return ap.parse_args(argv)


def make_model(d, h):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.ReLU(),
                               torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 1))


def timed(hook, clock):
    """A DDP hook that runs `hook` and adds its wall time to clock[0]."""
    def timed_hook(group, bucket):
        t0 = time.perf_counter()
        fut = hook(group, bucket)
        fut.wait()
        clock[0] += time.perf_counter() - t0
        return fut
    return timed_hook


def avg_hook(group, bucket):
    """DDP's default: divide by the group size, sum-all-reduce (works on any backend)."""
    buf = bucket.buffer()
    buf.div_(dist.get_world_size(group))
    work = dist.all_reduce(buf, group=group, async_op=True)
    return work.get_future().then(lambda f: f.value()[0])


def main(argv=None) -> int:
    args = parse_args(argv)
    dist.init_process_group(args.backend)
    rank, size = dist.get_rank(), dist.get_world_size()

    def log(msg):
        if rank == 0:
            print(msg, flush=True)

    model = make_model(args.features, args.hidden)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    clock = [0.0]
    hook = {"avg": avg_hook, "bf16": rt.bf16_allreduce_hook, "fp16": rt.fp16_allreduce_hook}
    ddp.register_comm_hook(None, timed(hook[args.hook], clock))
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
    nparams = sum(p.numel() for p in model.parameters())
    log(f"# train_ddp: backend {args.backend}, {size} rank(s), hook {args.hook}; MLP "
        f"{args.features}-{args.hidden}-{args.hidden}-1 ({nparams} parameters), batch "
        f"{args.batch} per rank, {args.steps} steps")

    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(args.features, 1, generator=g)
    data_gen = torch.Generator().manual_seed(1000 + rank)       # this rank's shard
    first = last = None
    dist.barrier()
    t_start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x = torch.randn(args.batch, args.features, generator=data_gen)
        y = torch.tanh(x @ teacher / args.features ** 0.5)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(x), y)
        loss.backward()
        opt.step()
        if step == 1 or step % args.print_every == 0 or step == args.steps:
            avg = loss.detach().clone()
            dist.all_reduce(avg, op=dist.ReduceOp.AVG)
            first = avg.item() if first is None else first
            last = avg.item()
            log(f"step {step:5d}  loss {last:.6f}")
    dist.barrier()
    t_total = time.perf_counter() - t_start

    # ---- report and checks -------------------------------------------------
    comm = torch.tensor([clock[0]], dtype=torch.float64)
    dist.all_reduce(comm, op=dist.ReduceOp.MAX)
    log(f"# time {t_total:.3f} s, {1e3 * t_total / args.steps:.3f} ms per step; "
        f"{comm.item():.3f} s in gradient all-reduce ({100 * comm.item() / t_total:.1f} %, "
        f"max over ranks)")
    digest = hashlib.sha256(torch.cat([p.detach().reshape(-1) for p in model.parameters()])
                            .numpy().tobytes()).digest()
    mine = torch.frombuffer(bytearray(digest[:16]), dtype=torch.uint8)
    every = [torch.empty_like(mine) for _ in range(size)]
    dist.all_gather(every, mine)
    same = all(torch.equal(mine, d) for d in every)
    log(f"# parameters bitwise identical on all {size} ranks: {'yes' if same else 'NO'} "
        f"(sha256 {digest.hex()[:16]})")
    failures = []
    if not same:
        failures.append("parameters differ between ranks")
    if not last < 0.5 * first:
        failures.append(f"loss did not halve: {first:.6f} -> {last:.6f}")
    dist.destroy_process_group()
    if failures:
        log("# FAILED: " + "; ".join(failures))
        return 1
    log("# OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
