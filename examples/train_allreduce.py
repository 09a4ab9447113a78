"""Data-parallel training of a small MLP with ringcomm's all-reduce.

    mpirun -n 4 python examples/train_allreduce.py          # also -n 1, -n 2, -n 3
    mpirun -n 2 python examples/train_allreduce.py --steps 500 --algorithm ring

Every rank builds the same seeded model and the same seeded dataset (a noisy
regression target produced by a random "teacher" network), keeps its own
equal shard of the samples, and at every step

1. computes the mean-squared-error gradient on its shard,
2. flattens all gradients (plus the shard loss, for logging) into ONE float32
   tensor and averages it across ranks with ``comm.allreduce(flat, op="avg")``,
3. writes the averaged gradients back and takes an SGD step (momentum 0.9).

Because the shards are equal, the average of the shard gradients is the
full-batch gradient, so this is full-batch gradient descent done by p
processes.  At the end the script checks, and exits non-zero if either fails:

- every rank holds bitwise identical parameters (a SHA-256 of the parameter
  bytes, gathered through mpi4py): ringcomm's all-reduce gives every rank the
  same bits, so the replicas never drift apart;
- the final full-dataset loss agrees (relative tolerance ``--rtol``, 1e-5)
  with the same model trained by ONE process on the full batch (rank 0
  computes this reference after the parallel run).  They differ only by
  float rounding: the sum of p shard means vs one mean over all samples.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

import torch

torch.set_num_threads(1)   # p ranks on few cores: no oversubscription


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="SGD steps (default 300)")
    ap.add_argument("--samples", type=int, default=1920,
                    help="dataset size; must be a multiple of the rank count (default 1920 = 2^7 * 15)")
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--print-every", type=int, default=50)
    ap.add_argument("--algorithm", default="auto", help="ringcomm all-reduce algorithm (default auto)")
    ap.add_argument("--rtol", type=float, default=1e-5,
                    help="allowed relative difference of the final loss vs the 1-process reference")
    ap.add_argument("--no-reference", action="store_true", help="skip the single-process reference run")
    return ap.parse_args(argv)


def make_dataset(n, d, seed):
    """x ~ N(0, 1); y = teacher(x) + small noise; identical on every rank."""
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, d, generator=g)
    w1 = torch.randn(d, 16, generator=g) / d ** 0.5
    w2 = torch.randn(16, 1, generator=g) / 4.0
    y = torch.tanh(x @ w1) @ w2 + 0.01 * torch.randn(n, 1, generator=g)
    return x, y


def make_model(d, h, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(d, h), torch.nn.Tanh(),
        torch.nn.Linear(h, h), torch.nn.Tanh(),
        torch.nn.Linear(h, 1),
    )


def full_loss(model, x, y):
    with torch.no_grad():
        return torch.nn.functional.mse_loss(model(x), y).item()


def param_digest(model) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def train_reference(args, x, y):
    """The same run on one process, full batch, no communication."""
    model = make_model(args.features, args.hidden, args.seed)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    for _ in range(args.steps):
        opt.zero_grad(set_to_none=False)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return model


def main(argv=None) -> int:
    args = parse_args(argv)
    from mpi4py import MPI
    import ringcomm

    world = MPI.COMM_WORLD
    comm = ringcomm.init()
    rank, size = comm.rank, comm.size
    assert (rank, size) == (world.Get_rank(), world.Get_size()), "ringcomm and MPI disagree on ranks"

    def log(msg):
        if rank == 0:
            print(msg, flush=True)

    if args.samples % size:
        log(f"error: --samples {args.samples} is not a multiple of {size} ranks (equal shards needed)")
        return 2

    x, y = make_dataset(args.samples, args.features, args.seed)
    shard = args.samples // size
    xs, ys = x[rank * shard:(rank + 1) * shard], y[rank * shard:(rank + 1) * shard]

    model = make_model(args.features, args.hidden, args.seed)
    params = list(model.parameters())
    numels = [p.numel() for p in params]
    nparams = sum(numels)
    opt = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum)
    flat = torch.empty(nparams + 1, dtype=torch.float32)   # gradients + shard loss
    log(f"# train_allreduce: ringcomm {ringcomm.__version__}, {size} rank(s), algorithm {args.algorithm}; "
        f"MLP {args.features}-{args.hidden}-{args.hidden}-1 ({nparams} parameters, "
        f"{4 * (nparams + 1)} B all-reduced per step), {args.samples} samples, {shard} per rank, "
        f"{args.steps} full-batch SGD steps, lr {args.lr}, momentum {args.momentum}")

    comm.barrier()
    t_comm = 0.0
    t_start = time.perf_counter()
    for step in range(1, args.steps + 1):
        opt.zero_grad(set_to_none=False)
        loss = torch.nn.functional.mse_loss(model(xs), ys)
        loss.backward()

        # 1. flatten every gradient and the loss into one contiguous buffer
        torch.cat([p.grad.reshape(-1) for p in params] + [loss.detach().reshape(1)], out=flat)
        # 2. average over ranks, in place
        t0 = time.perf_counter()
        comm.allreduce(flat, op="avg", algorithm=args.algorithm)
        t_comm += time.perf_counter() - t0
        # 3. scatter the averaged gradients back and step
        off = 0
        for p, n in zip(params, numels):
            p.grad.copy_(flat[off:off + n].view_as(p.grad))
            off += n
        opt.step()

        if step == 1 or step % args.print_every == 0 or step == args.steps:
            log(f"step {step:5d}  loss {flat[nparams].item():.6e}")
    comm.barrier()
    t_total = time.perf_counter() - t_start

    # ---- checks -----------------------------------------------------------
    digests = world.allgather(param_digest(model))
    same = len(set(digests)) == 1
    failures = []
    if not same:
        failures.append("parameters differ between ranks: " +
                        ", ".join(f"rank {r}: {d[:12]}" for r, d in enumerate(digests)))
    t_comm_max = world.allreduce(t_comm, op=MPI.MAX)
    log(f"# time {t_total:.3f} s total, {t_comm_max:.3f} s in allreduce "
        f"({100 * t_comm_max / t_total:.1f} %, {1e6 * t_comm_max / args.steps:.1f} us per step, max over ranks; "
        f"includes waiting for the slowest rank's backward pass)")
    log(f"# parameters bitwise identical on all {size} ranks: {'yes' if same else 'NO'} "
        f"(sha256 {digests[0][:16]})")

    if rank == 0 and not args.no_reference:
        final = full_loss(model, x, y)
        t0 = time.perf_counter()
        ref = train_reference(args, x, y)
        t_ref = time.perf_counter() - t0
        ref_loss = full_loss(ref, x, y)
        rel = abs(final - ref_loss) / max(abs(ref_loss), 1e-30)
        max_dp = max((a - b).abs().max().item() for a, b in zip(model.parameters(), ref.parameters()))
        print(f"# final full-dataset loss {final:.8e}; 1-process full-batch reference {ref_loss:.8e} "
              f"({t_ref:.2f} s): relative difference {rel:.2e} (tolerance {args.rtol:g}), "
              f"max |param difference| {max_dp:.2e}", flush=True)
        if not rel <= args.rtol:
            failures.append(f"final loss {final:.8e} vs reference {ref_loss:.8e}: "
                            f"relative difference {rel:.2e} > {args.rtol:g}")
    failures = world.bcast(failures, root=0) if rank == 0 else world.bcast(None, root=0)
    comm.close()
    if failures:
        log("# FAILED: " + "; ".join(failures))
        return 1
    log("# OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
