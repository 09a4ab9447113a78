"""Pipeline-parallel training of a small MLP with ringcomm's point-to-point calls.

    mpirun -n 4 python examples/train_pipeline.py          # also -n 1, -n 2, -n 3
    mpirun -n 2 python examples/train_pipeline.py --steps 200 --micro-batches 16

The model is a stack of ``--layers`` blocks (Linear + Tanh; the last block is a
Linear to one output).  Rank ``s`` of ``p`` owns stage ``s``: a contiguous run
of blocks (the blocks are split as evenly as possible, earlier stages take the
extra one).  Every step takes a batch of ``--batch`` samples, cuts it into
``--micro-batches`` micro-batches, and runs them through the pipeline on the
**1F1B schedule** (one-forward-one-backward, as in PipeDream-Flush/Megatron):

- stage ``s`` first runs ``min(p - 1 - s, M)`` warm-up forwards, then
  alternates one forward and one backward, then drains the remaining
  backwards; at most ``p - s`` micro-batches' activations are alive on a
  stage, instead of all ``M`` with GPipe;
- a forward receives the micro-batch's activations from stage ``s - 1``
  (``comm.recv``; stage 0 reads the data instead), runs the stage's blocks and
  posts ``comm.isend`` of the output to stage ``s + 1`` (tag = micro-batch);
- the last stage computes the loss, ``mse / M`` (gradient accumulation over
  micro-batches), and backpropagates it at once;
- a backward receives the gradient of the stage's output from stage ``s + 1``
  (tag = M + micro-batch), backpropagates it through the stage and posts
  ``comm.isend`` of the gradient of the stage's input to stage ``s - 1``.

Sends are non-blocking (``isend``; each step waits for its sends before the
optimizer step) so a stage never blocks in a send while its neighbour does the
same; receives block (their time is what the stage waits for the neighbour's
compute and for the transfer).  After the last micro-batch every stage takes
an SGD step (momentum) on its own parameters; no collective is involved.

Checks (the script exits non-zero if any fails).  After the pipeline run,
every stage's final parameters and the last stage's per-step losses are
gathered on rank 0 through mpi4py (not ringcomm, so the check does not depend
on the library it checks).  Rank 0 builds the full seeded model and trains it
on ONE process with the same batches, the same micro-batches in the same order
and the same gradient accumulation (the other ranks sleep meanwhile), then
checks:

- the loss of every step (relative tolerance ``--rtol``, default 1e-5);
- every stage's parameters against the reference's parameters of the same
  blocks (max |difference| / max |reference| per tensor <= ``--rtol``).

The math is the same up to float reassociation; in practice the results are
bitwise identical, and the report says so when they are (``--rtol 0`` demands
it).  The report also
gives, per rank, the time spent in communication (receives, posting sends and
waiting for them): it includes the pipeline bubble, i.e. waiting for the
neighbouring stages' compute.

``--perturb R`` tests the check itself: rank R scales the first tensor it sends
in step 1 by 1.1, and the run must then FAIL.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

torch.set_num_threads(1)   # p ranks on few cores: no oversubscription


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps (default 60)")
    ap.add_argument("--layers", type=int, default=8,
                    help="blocks in the MLP, split into one stage per rank; >= the rank count (default 8)")
    ap.add_argument("--samples", type=int, default=1024, help="dataset size (default 1024)")
    ap.add_argument("--batch", type=int, default=128, help="samples per step (default 128)")
    ap.add_argument("--micro-batches", type=int, default=8,
                    help="micro-batches per step; must divide --batch (default 8)")
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--print-every", type=int, default=10)
    ap.add_argument("--rtol", type=float, default=1e-5,
                    help="allowed relative difference of losses and parameters vs the 1-process reference")
    ap.add_argument("--no-reference", action="store_true", help="skip the single-process reference run")
    ap.add_argument("--perturb", type=int, default=-1, metavar="RANK",
                    help="testing the check: RANK sends one slightly wrong tensor; the run must FAIL")
    return ap.parse_args(argv)


# ---- model and data (identical on every rank) -------------------------------

def make_dataset(n, d, seed):
    """x ~ N(0, 1); y = teacher(x) + small noise."""
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, d, generator=g)
    w1 = torch.randn(d, 16, generator=g) / d ** 0.5
    w2 = torch.randn(16, 1, generator=g) / 4.0
    y = torch.tanh(x @ w1) @ w2 + 0.01 * torch.randn(n, 1, generator=g)
    return x, y


def make_blocks(args):
    """The full model as a list of blocks: Linear+Tanh, ..., Linear(hidden, 1)."""
    torch.manual_seed(args.seed)
    dims = [args.features] + [args.hidden] * (args.layers - 1) + [1]
    blocks = []
    for i in range(args.layers):
        lin = torch.nn.Linear(dims[i], dims[i + 1])
        blocks.append(torch.nn.Sequential(lin, torch.nn.Tanh()) if i < args.layers - 1
                      else torch.nn.Sequential(lin))
    return blocks


def stage_bounds(layers, stages):
    """[(first, end)) block range of every stage, sizes differing by at most one."""
    base, extra = divmod(layers, stages)
    bounds, lo = [], 0
    for s in range(stages):
        hi = lo + base + (1 if s < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def batch_of(step, x, y, batch):
    """Step `step` (from 1) trains on samples [(step-1)*batch, step*batch) mod n."""
    n = x.shape[0]
    idx = (torch.arange(batch) + (step - 1) * batch) % n
    return x[idx], y[idx]


def train_reference(args, x, y):
    """The same training on one process: the full model, the same micro-batches
    in the same order, gradients accumulated, one SGD step per batch."""
    model = torch.nn.Sequential(*make_blocks(args))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    M = args.micro_batches
    losses = []
    for step in range(1, args.steps + 1):
        xb, yb = batch_of(step, x, y, args.batch)
        opt.zero_grad(set_to_none=False)
        total = 0.0
        for xm, ym in zip(xb.chunk(M), yb.chunk(M)):
            loss = torch.nn.functional.mse_loss(model(xm), ym) / M
            loss.backward()
            total += loss.item()
        opt.step()
        losses.append(total)
    return list(model), losses


# ---- the 1F1B schedule ------------------------------------------------------

def one_f_one_b(stage, stages, M):
    """The (kind, micro-batch) sequence stage `stage` runs: 'F' forwards, 'B' backwards."""
    warmup = min(stages - 1 - stage, M)
    order = [("F", m) for m in range(warmup)]
    for i in range(M - warmup):
        order += [("F", warmup + i), ("B", i)]
    order += [("B", m) for m in range(M - warmup, M)]
    return order


def max_rel_diff(a, b):
    """max |a - b| / max |b| (0 when both are zero)."""
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


def wait_quietly(world, poll=0.005):
    """A barrier that sleeps: MPICH busy-polls in blocking calls, which would
    take the cores away from rank 0 while it trains the reference."""
    req = world.Ibarrier()
    while not req.Test():
        time.sleep(poll)


def check_against_reference(args, x, y, bounds, stage_params, losses):
    """Rank 0: train the 1-process reference, compare every stage's parameters
    and every step's loss; print the comparison, return the failures."""
    t0 = time.perf_counter()
    ref_blocks, ref_losses = train_reference(args, x, y)
    t_ref = time.perf_counter() - t0
    failures = []
    bitwise = True
    worst_l = 0.0
    for step, (a, b) in enumerate(zip(losses, ref_losses), 1):
        d = abs(a - b) / max(abs(b), 1e-30)
        bitwise &= a == b
        worst_l = max(worst_l, d)
        if not d <= args.rtol:
            failures.append(f"step {step}: loss {a:.8e} vs reference {b:.8e}: "
                            f"relative difference {d:.2e} > {args.rtol:g}")
    if len(losses) != len(ref_losses):
        failures.append(f"{len(losses)} losses vs {len(ref_losses)} reference losses")
    print(f"# 1-process reference ({t_ref:.2f} s on rank 0): final loss {ref_losses[-1]:.8e}, pipeline "
          f"{losses[-1]:.8e}; max relative loss difference over {len(losses)} steps {worst_l:.2e} "
          f"(tolerance {args.rtol:g})", flush=True)
    for s, ((lo, hi), got) in enumerate(zip(bounds, stage_params)):
        ref = list(torch.nn.Sequential(*ref_blocks[lo:hi]).named_parameters())
        worst_p = 0.0
        if [n for n, _ in got] != [n for n, _ in ref]:
            failures.append(f"stage {s}: parameters {[n for n, _ in got]}, expected {[n for n, _ in ref]}")
            continue
        for (name, p), (_, q) in zip(got, ref):
            d = max_rel_diff(p, q.detach())
            bitwise &= torch.equal(p, q)
            worst_p = max(worst_p, d)
            if not d <= args.rtol:
                failures.append(f"stage {s}: parameter {name} (blocks [{lo},{hi})) differs from the "
                                f"reference by {d:.2e} (relative) > {args.rtol:g}")
        print(f"# stage {s} blocks [{lo},{hi}): max relative parameter difference vs reference "
              f"{worst_p:.2e} (tolerance {args.rtol:g})", flush=True)
    if not failures:
        print(f"# pipeline and reference: {'bitwise identical' if bitwise else 'equal within tolerance'} "
              f"(losses of all steps, parameters of all stages)", flush=True)
    return failures


def main(argv=None) -> int:
    args = parse_args(argv)
    from mpi4py import MPI
    import ringcomm

    world = MPI.COMM_WORLD
    comm = ringcomm.init()
    rank, size = comm.rank, comm.size
    assert (rank, size) == (world.Get_rank(), world.Get_size()), "ringcomm and MPI disagree on ranks"
    first, last = rank == 0, rank == size - 1
    M = args.micro_batches

    def log(msg, who=0):
        if rank == who:
            print(msg, flush=True)

    problems = []
    if args.layers < size:
        problems.append(f"--layers {args.layers} < {size} ranks (one stage of at least one block per rank)")
    if M < 1 or args.batch % M:
        problems.append(f"--micro-batches {M} must be >= 1 and divide --batch {args.batch}")
    if problems:
        log("error: " + "; ".join(problems))
        comm.close()
        return 2

    x, y = make_dataset(args.samples, args.features, args.seed)
    bounds = stage_bounds(args.layers, size)
    lo, hi = bounds[rank]
    stage = torch.nn.Sequential(*make_blocks(args)[lo:hi])
    params = list(stage.parameters())
    opt = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum)
    mb = args.batch // M
    act_shape = (mb, args.hidden)          # every stage boundary carries hidden-wide activations
    schedule = one_f_one_b(rank, size, M)

    log(f"# train_pipeline: ringcomm {ringcomm.__version__}, {size} stage(s) (one per rank), 1F1B schedule; "
        f"MLP {args.features}-{args.hidden}x{args.layers - 1}-1 in {args.layers} blocks, stages "
        + " ".join(f"[{a},{b})" for a, b in bounds)
        + f"; batch {args.batch} = {M} micro-batches of {mb}, {args.steps} steps, "
          f"SGD lr {args.lr} momentum {args.momentum}; "
          f"{4 * mb * args.hidden} B per activation/gradient message")
    log(f"# stage {rank}: blocks [{lo},{hi}), {sum(p.numel() for p in params)} parameters, schedule "
        + " ".join(f"{k}{m}" for k, m in schedule), who=rank)

    losses = []
    t_comm = 0.0
    n_sent = n_recv = 0
    comm.barrier()
    t_start = time.perf_counter()
    for step in range(1, args.steps + 1):
        xb, yb = batch_of(step, x, y, args.batch)
        xms, yms = xb.chunk(M), yb.chunk(M)
        opt.zero_grad(set_to_none=False)
        saved = {}          # micro-batch -> (stage input, stage output or loss)
        sends = []          # (request, tensor) pairs in flight this step
        step_loss = 0.0
        perturb = args.perturb == rank and step == 1

        for kind, m in schedule:
            if kind == "F":
                if first:
                    inp = xms[m]
                else:
                    inp = torch.empty(act_shape)
                    t0 = time.perf_counter()
                    comm.recv(inp, rank - 1, tag=m)
                    t_comm += time.perf_counter() - t0
                    n_recv += 1
                    inp.requires_grad_()
                out = stage(inp)
                if last:
                    out = torch.nn.functional.mse_loss(out, yms[m]) / M
                    step_loss += out.item()
                else:
                    buf = out.detach()
                    if perturb:
                        buf, perturb = buf * 1.1, False
                    t0 = time.perf_counter()
                    sends.append((comm.isend(buf, rank + 1, tag=m), buf))
                    t_comm += time.perf_counter() - t0
                    n_sent += 1
                saved[m] = (inp, out)
            else:
                inp, out = saved.pop(m)
                if last:
                    out.backward()
                else:
                    grad = torch.empty(act_shape)
                    t0 = time.perf_counter()
                    comm.recv(grad, rank + 1, tag=M + m)
                    t_comm += time.perf_counter() - t0
                    n_recv += 1
                    out.backward(grad)
                if not first:
                    buf = inp.grad
                    if perturb:
                        buf, perturb = buf * 1.1, False
                    t0 = time.perf_counter()
                    sends.append((comm.isend(buf, rank - 1, tag=M + m), buf))
                    t_comm += time.perf_counter() - t0
                    n_sent += 1
        assert not saved, f"schedule left micro-batches {sorted(saved)} without a backward"
        t0 = time.perf_counter()
        for req, _ in sends:
            req.wait()
        t_comm += time.perf_counter() - t0
        opt.step()

        if last:
            losses.append(step_loss)
            if step == 1 or step % args.print_every == 0 or step == args.steps:
                log(f"step {step:5d}  loss {step_loss:.6e}", who=size - 1)
    t_total = time.perf_counter() - t_start
    comm.barrier()

    # ---- report and checks (through mpi4py, independent of ringcomm) ---------
    stats = world.gather((t_total, t_comm, n_sent, n_recv), root=0)
    if first:
        for r, (tt, tc, ns, nr) in enumerate(stats):
            print(f"# rank {r}: {tt:.3f} s in the training loop, {tc:.3f} s in communication "
                  f"({100 * tc / tt:.1f} %, {1e3 * tc / args.steps:.2f} ms per step; {ns} isend, {nr} recv; "
                  f"includes waiting for the neighbouring stages' compute)", flush=True)

    failures = []
    if not args.no_reference:
        # every stage's final parameters and the last stage's losses, to rank 0
        mine = [(name, p.detach().clone()) for name, p in stage.named_parameters()]
        got = world.gather((mine, losses if last else None), root=0)
        if first:
            failures = check_against_reference(args, x, y, bounds, [g[0] for g in got], got[-1][1])
        wait_quietly(world)             # the other ranks sleep while rank 0 trains the reference
        failures = world.bcast(failures, root=0)
    comm.close()
    if failures:
        log(f"# FAILED ({len(failures)} check(s)): " + "; ".join(failures[:10]))
        return 1
    log("# OK" + (" (reference check skipped)" if args.no_reference else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
