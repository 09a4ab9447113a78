"""allreduce sweep: algorithms x dtypes x ops x counts x buffer variants.

Checks, for every case, on every rank:
  * the result against a numpy reference computed locally from every rank's
    seeded data (exact for integers/min/max, error-bounded for float sums);
  * the result against mpi4py's Allreduce (types and ops MPI supports; avg is
    checked against MPI.SUM / P);
  * every buffer variant (numpy/torch/memoryview, in place/out of place) of
    one algorithm gives the same bytes, out-of-place leaves the input alone,
    and the call returns the result buffer;
  * "auto" gives the bytes of one of the named algorithms;
  * at the end: every rank holds bitwise identical results for every case.

Usage: allreduce_sweep.py [--algos a,b] [--dtypes ..] [--ops ..] [--counts 0,1,P-1,..]
                          [--variants np-in,np-out,..] [--rotate] [--ops-per-dtype K]
                          [--seed N] [--init]
"""

import argparse
import itertools

import numpy as np

import ringcomm
from _common import (DTYPES, INTS, MPI_DTYPES, MPI_OPS, RANK, SIZE, WORLD, as_numpy, case_seed,
                     check_same_on_all_ranks, check_values, digest, finish, gen_rank_data,
                     get_torch, make_buf, make_out, ops_for, raw_bytes, reference)

# variant name -> (input container, output container or None for in place, op as enum?)
VARIANTS = {
    "np-in": ("numpy", None, False),
    "np-out": ("numpy", "numpy", True),
    "torch-in": ("torch", None, True),
    "torch-out": ("torch", "torch", False),
    "mv-in": ("memoryview", None, False),
    "np-torchout": ("numpy", "torch", False),
    "np-same": ("numpy", "same", False),     # out is buf: in place
    "npoff-in": ("numpy-off", None, False),  # misaligned by one element
    "torchoff-out": ("torch-off", "torch-off", True),
}


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--algos", default="all")
    p.add_argument("--dtypes", default=",".join(DTYPES))
    p.add_argument("--ops", default="all")
    p.add_argument("--counts", default="0,1,3,P-1,17,1000")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--rotate", action="store_true",
                   help="one algorithm and one variant per (dtype, op, count), round robin")
    p.add_argument("--ops-per-dtype", type=int, default=0)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--init", action="store_true", help="use ringcomm.init() for the world")
    p.add_argument("--no-nonfinite", action="store_true")
    return p.parse_args()


def main():
    a = parse()
    if "bfloat16" in a.dtypes.split(",") or "torch" in a.variants:
        get_torch()  # bfloat16 buffers are torch tensors (import once, up front)
    algos = list(ringcomm.algorithms()) + ["auto"] if a.algos == "all" else a.algos.split(",")
    names = ringcomm.algorithms()
    assert "ring" in names and "tree" in names, f"algorithms() = {names}"
    dtypes = a.dtypes.split(",")
    counts = [SIZE - 1 if c == "P-1" else int(c) for c in a.counts.split(",")]
    variants = a.variants.split(",")

    if a.init:
        comm = ringcomm.init()
    else:
        comm = ringcomm.Communicator.from_mpi(WORLD)
    assert (comm.rank, comm.size) == (RANK, SIZE), (comm.rank, comm.size, RANK, SIZE)

    records = []
    ncases = 0
    rr = itertools.count()
    with comm:
        for di, dtype in enumerate(dtypes):
            ops = ops_for(dtype) if a.ops == "all" else [o for o in a.ops.split(",")
                                                          if o in ops_for(dtype)]
            if a.ops_per_dtype:   # a rotating subset: every op still appears somewhere
                k = min(a.ops_per_dtype, len(ops))
                ops = [ops[(di * k + j) % len(ops)] for j in range(k)]
            for op, count in itertools.product(ops, counts):
                seed = case_seed(a.seed, dtype, op, count)
                datas = [gen_rank_data(dtype, op, count, seed, r, SIZE,
                                       nonfinite=not a.no_nonfinite) for r in range(SIZE)]
                mine = datas[RANK]
                ref, absum = reference(dtype, op, datas, SIZE)
                if a.rotate:
                    i = next(rr)
                    plan = [(algos[i % len(algos)],
                             variants[(i + i // len(algos)) % len(variants)])]
                else:
                    plan = list(itertools.product(algos, variants))
                by_algo = {}
                for algo, var in plan:
                    key = f"{algo}/{dtype}/{op}/n={count}/{var}"
                    kind, outkind, as_enum = VARIANTS[var]
                    buf = make_buf(kind, dtype, mine)
                    out = None if outkind is None else \
                        buf if outkind == "same" else make_out(outkind, dtype, count)
                    op_arg = getattr(ringcomm.ReduceOp, op.upper()) if as_enum else op
                    res = comm.allreduce(buf, out=out, op=op_arg, algorithm=algo)
                    expect_obj = buf if out is None else out
                    assert res is expect_obj, f"{key}: allreduce returned {type(res)} " \
                                              f"not the result buffer"
                    if out is not None and out is not buf:
                        assert raw_bytes(buf) == raw_bytes(make_buf(kind, dtype, mine)), \
                            f"{key}: out-of-place allreduce modified its input"
                    b = raw_bytes(res)
                    if SIZE == 1:
                        assert b == raw_bytes(make_buf(kind, dtype, mine)), \
                            f"{key}: size-1 allreduce is not the identity"
                    if algo in by_algo:
                        # same inputs, same algorithm: same bytes (values checked once)
                        assert by_algo[algo] == b, \
                            f"{key}: bytes differ from another buffer variant of {algo}"
                    else:
                        check_values(dtype, op, as_numpy(res, dtype), ref, absum, SIZE, key)
                        by_algo[algo] = b
                    records.append((key, digest(b)))
                    ncases += 1
                named = {k: v for k, v in by_algo.items() if k != "auto"}
                if "auto" in by_algo and len(named) == len(names):
                    assert by_algo["auto"] in named.values(), \
                        f"auto/{dtype}/{op}/n={count}: result equals none of {sorted(named)}"
                # second oracle: MPI's own Allreduce
                if dtype in MPI_DTYPES and by_algo:
                    send = np.array(mine, copy=True)
                    recv = np.empty_like(send)
                    WORLD.Allreduce(send, recv, op=MPI_OPS[op])
                    if dtype in INTS:
                        sel, mref, mabs = slice(None), recv, None
                    else:
                        # NaN/inf positions were checked against numpy above;
                        # MPI leaves NaN behaviour of min/max unspecified.
                        sel = np.isfinite(ref)
                        mref = recv.astype(np.float64)
                        if op == "avg":
                            mref = mref / SIZE
                        mref, mabs = mref[sel], absum[sel]
                    for algo, b in by_algo.items():
                        got = np.frombuffer(b, dtype=dtype)[sel]
                        check_values(dtype, op, got, mref, mabs, SIZE,
                                     f"{algo}/{dtype}/{op}/n={count} vs MPI.Allreduce",
                                     factor=2.0)
                        ncases += 1
        check_same_on_all_ranks(records)
    finish("allreduce_sweep", ncases)


if __name__ == "__main__":
    main()
