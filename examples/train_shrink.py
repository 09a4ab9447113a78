"""Data-parallel training that survives a lost rank: numpy, ringcomm, shrink.

    mpirun -disable-auto-cleanup -n 4 python examples/train_shrink.py --kill 3:40 --kill 1:120

Linear regression by minibatch gradient descent; every step's batch is
split among the ranks, the gradients are summed with one all-reduce and
divided by the batch size.  `--kill RANK:STEP` makes that (original) rank
SIGKILL itself at that step, before its all-reduce - mid-epoch.  The
survivors' all-reduce raises RC_ERR_PEER_LOST; they shrink the communicator
(comm.shrink(): agree on who is left, build a new communicator of them),
re-shard the batch over the survivors and redo the step: the sum over the
whole batch is unchanged, so the training goes on exactly (up to the
summation order) as the serial reference, which every rank computes at the
end to check.  MPICH's mpirun kills every rank when one dies unless given
`-disable-auto-cleanup` (Open MPI: `--enable-recovery`, or
`--mca orte_abort_on_non_zero_status 0` in older versions).

MPI only launches and bootstraps here: the communicator is made without
ringcomm's MPI transport (RINGCOMM_TRANSPORT=shm,tcp), so that after a rank
died nothing calls MPI again - MPI's default error handler would abort the
job - and the survivors leave with os._exit (MPI_Finalize may wait for the
dead rank).
"""
import argparse
import os
import signal
import sys
import time

import numpy as np

import ringcomm


def batch(step, n_batch, dim, seed):
    rng = np.random.default_rng([seed, step])
    x = rng.standard_normal((n_batch, dim))
    w_true = np.linspace(-1.0, 1.0, dim)
    y = x @ w_true + 0.01 * rng.standard_normal(n_batch)
    return x, y


def grad_sum(w, x, y):
    """The sum over the samples of d/dw (x.w - y)^2 / 2."""
    return x.T @ (x @ w - y)


def reference(args):
    w = np.zeros(args.dim)
    for step in range(args.steps):
        x, y = batch(step, args.batch, args.dim, args.seed)
        w -= args.lr * grad_sum(w, x, y) / args.batch
    return w


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--kill", action="append", default=[], metavar="RANK:STEP",
                    help="this original rank SIGKILLs itself at this step (repeatable)")
    args = ap.parse_args()
    kills = {int(r): int(s) for r, s in (k.split(":") for k in args.kill)}

    # no MPI transport: after a death, an MPI call towards the dead rank would
    # make MPI's default error handler abort the whole job
    os.environ.setdefault("RINGCOMM_TRANSPORT", "shm,tcp")
    from mpi4py import MPI
    comm = ringcomm.Communicator.from_mpi(MPI.COMM_WORLD, timeout=30)
    me = comm.rank                       # the original rank, for --kill and the output
    w = np.zeros(args.dim)
    g = np.empty(args.dim)
    shrinks = []
    step = 0
    while step < args.steps:
        if kills.get(me) == step:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        x, y = batch(step, args.batch, args.dim, args.seed)
        mine = np.array_split(np.arange(args.batch), comm.size)[comm.rank]  # re-sharded after a shrink
        g[:] = grad_sum(w, x[mine], y[mine])
        try:
            comm.allreduce(g)
        except ringcomm.RingcommError as e:
            if e.status_name not in ("RC_ERR_PEER_LOST", "RC_ERR_TIMEOUT"):
                raise
            t0 = time.monotonic()
            new = comm.shrink()
            lost = comm.failed_ranks()
            comm.close()
            comm = new
            shrinks.append((step, lost, time.monotonic() - t0))
            print(f"rank {me}: step {step}: {e.status_name}; shrunk to {comm.size} ranks "
                  f"(lost {lost}) in {shrinks[-1][2] * 1e3:.1f} ms", flush=True)
            continue                     # redo this step on the survivors
        w -= args.lr * g / args.batch
        step += 1

    ref = reference(args)
    err = float(np.max(np.abs(w - ref)))
    assert np.allclose(w, ref, rtol=1e-10, atol=1e-12), (w, ref)
    every = np.empty(args.dim * comm.size)
    comm.allgather(w, every)             # the survivors hold the same parameters, bit for bit
    assert all(np.array_equal(w, every[i * args.dim:(i + 1) * args.dim])
               for i in range(comm.size))
    print(f"TRAIN-SHRINK-OK rank={me} new_rank={comm.rank} size={comm.size} shrinks={len(shrinks)} "
          f"max|w-ref|={err:.2e} loss_w0={np.mean(batch(0, 64, args.dim, args.seed)[1] ** 2):.3f}",
          flush=True)
    comm.close()
    if shrinks:
        os._exit(0)                      # a dead peer: do not enter MPI_Finalize


if __name__ == "__main__":
    main()
