"""Collectives other than all-reduce: sweep, bad arguments and async requests.

Modes (``--mode``):

sweep (default)
  collectives x dtypes x ops x counts x algorithms x roots x buffer variants.
  For every call, on every rank:
    * the result against a numpy reference computed locally from every rank's
      seeded input (every rank generates every rank's data from
      (seed, case, rank)): bitwise equal for copy collectives (broadcast,
      allgather, alltoall, gather, scatter; NaN/inf payloads included) and
      for integer reductions and min/max; error-bounded for float sum, prod
      and avg (bound from the dtype's eps and P, as allreduce_sweep does);
    * float sum/prod/avg reductions: a second identical call gives the same
      bytes (the reduction order does not depend on timing);
    * out-of-place calls leave the input alone; reduce leaves non-root
      ``buf`` (and a non-root ``out``) unchanged; broadcast leaves the root's
      buffer unchanged;
    * the call returns the result buffer on the ranks that hold a result;
    * "auto" gives the bytes of one of the named algorithms (full mode);
    * second oracle: mpi4py's own Bcast / Reduce / Allgather /
      Reduce_scatter_block / Alltoall / Gather / Scatter on the same data
      (dtypes MPI has, bool included for copies): exact for copies and
      integers, float reductions within twice the bound on finite elements.
  Calls per (collective, dtype, op, count) case, the buffer variant rotating
  from call to call:
    --plan cover (default): every algorithm (incl. "auto") at one root r0,
      and every other root once with a rotating algorithm; r0 rotates from
      case to case, so every algorithm x root pair recurs every P cases;
    --plan full: every (algorithm, root) pair;
    --plan rotate (--rotate): one (algorithm, root, variant) per case, round
      robin: every algorithm and every root within max(A, P) consecutive
      cases, every algorithm x root pair within P * max(A, P).

errors
  Each rank in turn, then every rank at once, makes each kind of bad call
  (wrong recvbuf/sendbuf/out sizes, root out of range, dtype mismatch, op
  invalid for the dtype, bool reductions, unknown or other-collective
  algorithm names, missing root buffers, illegal overlaps, read-only or
  non-contiguous buffers) and must get ValueError/TypeError naming the
  argument, before any communication: the others make no call meanwhile,
  and a round of correct collectives by all ranks afterwards must be right.

async
  Several collectives posted with async_op=True (every collective, plus
  barrier), waited in an order that differs per round and per rank, some
  completed by polling req.test() instead; results checked; test() is True
  after completion; a blocking collective between posted ones keeps order.

Usage: coll_sweep.py [--mode sweep|errors|async] [--colls a,b] [--dtypes ..]
                     [--ops ..] [--ops-per-dtype K] [--counts 0,1,P-1,..]
                     [--algos a,b|all] [--roots all|0,..] [--variants ..]
                     [--plan cover|full|rotate] [--rotate] [--no-mpi] [--seed N]
"""

import argparse
import itertools
import time

import numpy as np

import ringcomm
from _common import (DTYPES, FLOATS, INTS, MPI_DTYPES, MPI_OPS, RANK, SIZE, WORLD, as_numpy,
                     case_seed, check_values, finish, log, gen_rank_data, get_torch, make_buf,
                     make_out, ops_for, raw_bytes, reference, storage_dtype)

COLLS = ("broadcast", "reduce", "allgather", "reduce_scatter", "alltoall", "gather", "scatter")
REDUCING = ("reduce", "reduce_scatter")
ROOTED = ("broadcast", "reduce", "gather", "scatter")
COPY_DTYPES = DTYPES + ("bool",)
MPI_COPY_DTYPES = MPI_DTYPES + ("bool",)

# variant -> (send container, receive container, in place).  Containers as in
# _common.make_buf: numpy, torch, memoryview; "-off" starts one element into a
# larger allocation (misaligned).  bfloat16 is always a torch tensor.
VARIANTS = {
    "np": ("numpy", "numpy", False),
    "torch": ("torch", "torch", False),
    "np-in": ("numpy", "numpy", True),
    "torch-in": ("torch", "torch", True),
    "mv": ("memoryview", "memoryview", False),
    "np-torch": ("numpy", "torch", False),
    "npoff": ("numpy-off", "numpy-off", False),
    "torchoff-in": ("torch-off", "torch-off", True),
    "np-same": ("numpy", "same", True),      # reduce only: out is buf
}

# variants that pass op as a ringcomm.ReduceOp member instead of a string
ENUM_OP_VARIANTS = ("torch", "npoff", "torchoff-in")


def variants_for(coll, names):
    """Variants that mean something for coll (order kept)."""
    out = []
    for v in names:
        _, rk, inplace = VARIANTS[v]
        if rk == "same" and coll != "reduce":
            continue
        if inplace and coll in ("broadcast", "alltoall"):
            continue     # broadcast is always in place; alltoall never
        if coll == "broadcast" and rk != VARIANTS[v][0]:
            continue     # one buffer: the receive container means nothing
        out.append(v)
    return out


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", default="sweep", help="sweep, errors, async, or a comma list")
    p.add_argument("--colls", default=",".join(COLLS))
    p.add_argument("--dtypes", default=",".join(COPY_DTYPES))
    p.add_argument("--ops", default="all")
    p.add_argument("--ops-per-dtype", type=int, default=0,
                   help="a rotating subset of K ops per dtype (every op still appears)")
    p.add_argument("--counts", default="0,1,3,P-1,17,1000")
    p.add_argument("--algos", default="all", help="'all' = ringcomm.algorithms(coll) + auto")
    p.add_argument("--roots", default="all")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--plan", default="cover", choices=("cover", "full", "rotate"),
                   help="calls per (collective, dtype, op, count) case; see the docstring")
    p.add_argument("--rotate", dest="plan", action="store_const", const="rotate",
                   help="same as --plan rotate")
    p.add_argument("--no-mpi", action="store_true", help="skip the mpi4py oracle")
    p.add_argument("--seed", type=int, default=4321)
    p.add_argument("--expect-chunk-bytes", type=int, default=0,
                   help="fail unless comm.chunk_bytes is this (the env setting took effect)")
    return p.parse_args()


def parse_count(c):
    c = c.strip()
    if c.startswith("P"):
        return SIZE + int(c[1:] or 0)
    return int(c)


# ---------------------------------------------------------------------------
# data and comparisons
# ---------------------------------------------------------------------------

def gen(dtype, op, count, seed, rank):
    """rank's input (storage dtype): seeded random, NaN/inf included for
    copies and sum/avg/min/max of floats (count >= 8)."""
    if dtype == "bool":
        return np.random.default_rng([seed, rank]).integers(0, 2, count).astype(bool)
    return gen_rank_data(dtype, op or "sum", count, seed, rank, SIZE)


class Data:
    """Every rank's input of one case, generated on first use, block by block:
    block j of rank r comes from (seed, j, r), so a rank that needs only
    other ranks' block `rank` (alltoall, reduce_scatter, scatter) does not
    generate whole buffers.  nblocks is 1 or P; data(r) is the whole input."""

    def __init__(self, dtype, op, n, seed, nblocks=1):
        self.args = (dtype, op, n, seed)
        self.nblocks = nblocks
        self.blocks = {}
        self.whole = {}

    def block(self, r, j):
        if (r, j) not in self.blocks:
            dtype, op, n, seed = self.args
            self.blocks[(r, j)] = gen(dtype, op, n, case_seed(seed, j), r)
        return self.blocks[(r, j)]

    def __call__(self, r):
        if r not in self.whole:
            self.whole[r] = self.block(r, 0) if self.nblocks == 1 else \
                np.concatenate([self.block(r, j) for j in range(self.nblocks)])
        return self.whole[r]


def vals(buf, dtype):
    """The values of a container as a numpy array in the storage dtype."""
    a = as_numpy(buf, dtype)
    return np.ascontiguousarray(a, dtype=storage_dtype(dtype) if dtype != "bool" else bool)


def assert_bitwise(got, exp, what):
    got = np.ascontiguousarray(got)
    exp = np.ascontiguousarray(exp)
    if got.shape != exp.shape:
        raise AssertionError(f"{what}: shape {got.shape} != expected {exp.shape}")
    if got.tobytes() == exp.tobytes():
        return
    u = f"u{got.dtype.itemsize}"
    bad = np.flatnonzero(got.view(u) != exp.view(u))
    raise AssertionError(f"{what}: {bad.size} of {got.size} elements differ, first at "
                         f"{bad[:6]}: got {got[bad[:6]]} expected {exp[bad[:6]]}")


def blk(buf, i, n):
    return buf[i * n:(i + 1) * n]


def fill_block(dtype, kind, total, block, n, values):
    """A fresh `kind` buffer of `total` elements, sentinel 7 except block
    `block` which holds `values`."""
    big = np.full(total, 7, dtype=storage_dtype(dtype) if dtype != "bool" else bool)
    big[block * n:(block + 1) * n] = values
    return make_buf(kind, dtype, big)


def unchanged(buf, kind, dtype, arr, what):
    if raw_bytes(buf) != raw_bytes(make_buf(kind, dtype, arr)):
        assert_bitwise(vals(buf, dtype), arr, what)
        raise AssertionError(what)  # bytes differ though values compare equal


def sentinel_unchanged(buf, dtype, count, what):
    exp = np.full(count, 7, dtype=storage_dtype(dtype) if dtype != "bool" else bool)
    assert_bitwise(vals(buf, dtype), exp, what)


# ---------------------------------------------------------------------------
# one call
# ---------------------------------------------------------------------------

def run_one(comm, coll, dtype, op, n, algo, root, var, data, key):
    """Make one collective call; check inputs left alone and the return value.
    Returns this rank's result container (None when the rank has none)."""
    sk, rk, inplace = VARIANTS[var]
    P = SIZE
    kw = {} if algo is None else {"algorithm": algo}
    if op is not None and var in ENUM_OP_VARIANTS:
        op = getattr(ringcomm.ReduceOp, op.upper())

    if coll == "broadcast":
        buf = make_buf(sk, dtype, data(RANK))
        res = comm.broadcast(buf, root=root, **kw)
        assert res is buf, f"{key}: broadcast returned {type(res).__name__}, not buf"
        return buf

    if coll == "reduce":
        mine = data(RANK)
        buf = make_buf(sk, dtype, mine)
        if rk == "same":
            out = buf
        elif inplace:
            out = None
        else:
            out = make_out(rk, dtype, n)
        res = comm.reduce(buf, out=out, op=op, root=root, **kw)
        if RANK == root:
            result = buf if out is None else out
            assert res is result, f"{key}: reduce returned {type(res).__name__} " \
                                  f"not the result buffer at the root"
            if out is not None and out is not buf:
                unchanged(buf, sk, dtype, mine, f"{key}: out-of-place reduce changed the "
                                                 f"root's buf")
            return result
        unchanged(buf, sk, dtype, mine, f"{key}: reduce changed non-root rank {RANK}'s buf")
        if out is not None and out is not buf:
            sentinel_unchanged(out, dtype, n, f"{key}: reduce wrote non-root rank {RANK}'s out")
        return None

    if coll == "allgather":
        mine = data(RANK)
        if inplace:
            recv = fill_block(dtype, rk, P * n, RANK, n, mine)
            send = blk(recv, RANK, n)
        else:
            send = make_buf(sk, dtype, mine)
            recv = make_out(rk, dtype, P * n)
        res = comm.allgather(send, recv, **kw)
        assert res is recv, f"{key}: allgather returned {type(res).__name__}, not recvbuf"
        if not inplace:
            unchanged(send, sk, dtype, mine, f"{key}: allgather changed sendbuf")
        return recv

    if coll == "reduce_scatter":
        mine = data(RANK)                        # P * n elements
        send = make_buf(sk, dtype, mine)
        recv = blk(send, RANK, n) if inplace else make_out(rk, dtype, n)
        res = comm.reduce_scatter(send, recv, op=op, **kw)
        assert res is recv, f"{key}: reduce_scatter returned {type(res).__name__}, " \
                            f"not recvbuf"
        if not inplace:
            unchanged(send, sk, dtype, mine, f"{key}: reduce_scatter changed sendbuf")
        return recv

    if coll == "alltoall":
        mine = data(RANK)                        # P * n elements
        send = make_buf(sk, dtype, mine)
        recv = make_out(rk, dtype, P * n)
        res = comm.alltoall(send, recv, **kw)
        assert res is recv, f"{key}: alltoall returned {type(res).__name__}, not recvbuf"
        unchanged(send, sk, dtype, mine, f"{key}: alltoall changed sendbuf")
        return recv

    if coll == "gather":
        mine = data(RANK)
        if RANK == root:
            if inplace:
                recv = fill_block(dtype, rk, P * n, root, n, mine)
                send = blk(recv, root, n)
            else:
                send = make_buf(sk, dtype, mine)
                recv = make_out(rk, dtype, P * n)
            res = comm.gather(send, recv, root=root, **kw)
            assert res is recv, f"{key}: gather returned {type(res).__name__} at the root, " \
                                f"not recvbuf"
        else:
            send = make_buf(sk, dtype, mine)
            recv = None
            comm.gather(send, root=root, **kw)
        if not (inplace and RANK == root):
            unchanged(send, sk, dtype, mine, f"{key}: gather changed sendbuf")
        return recv

    if coll == "scatter":
        if RANK == root:
            full = data(root)                    # P * n elements
            send = make_buf(sk, dtype, full)
            recv = blk(send, root, n) if inplace else make_out(rk, dtype, n)
            res = comm.scatter(send, recv, root=root, **kw)
            if not inplace:
                unchanged(send, sk, dtype, full, f"{key}: scatter changed the root's sendbuf")
            else:
                # the other blocks of the root's sendbuf stay as they were
                for j in range(P):
                    if j != root:
                        assert_bitwise(vals(blk(send, j, n), dtype), blk(full, j, n),
                                       f"{key}: in-place scatter changed block {j} of sendbuf")
        else:
            recv = make_out(rk, dtype, n)
            res = comm.scatter(None, recv, root=root, **kw)
        assert res is recv, f"{key}: scatter returned {type(res).__name__}, not recvbuf"
        return recv

    raise ValueError(coll)


def data_blocks(coll):
    """Blocks of n elements in each rank's input."""
    return SIZE if coll in ("reduce_scatter", "alltoall", "scatter") else 1


def expected(coll, dtype, op, n, root, data):
    """(kind, value) of this rank's expected result: ("bits", array) for an
    exact comparison, ("reduce", (ref, absum)) for check_values, None when
    the rank holds no result."""
    P = SIZE
    if coll == "broadcast":
        return "bits", data(root)
    if coll == "allgather":
        return "bits", np.concatenate([data(r) for r in range(P)])
    if coll == "alltoall":
        return "bits", np.concatenate([data.block(i, RANK) for i in range(P)])
    if coll == "gather":
        return ("bits", np.concatenate([data(r) for r in range(P)])) if RANK == root else None
    if coll == "scatter":
        return "bits", data.block(root, RANK)
    if coll == "reduce":
        if RANK != root:
            return None
        return "reduce", reference(dtype, op, [data(r) for r in range(P)], P)
    if coll == "reduce_scatter":
        return "reduce", reference(dtype, op, [data.block(r, RANK) for r in range(P)], P)
    raise ValueError(coll)


def check_result(dtype, op, result, exp, key):
    """Copies bitwise; reductions by check_values (exact for integers and
    min/max, error-bounded for float sum/prod/avg)."""
    kind, val = exp
    got = vals(result, dtype)
    if kind == "bits":
        assert_bitwise(got, val, key)
    else:
        ref, absum = val
        check_values(dtype, op, got, ref, absum, SIZE, key)


def mpi_oracle(coll, dtype, op, n, root, data):
    """This rank's result of the same collective through mpi4py (numpy), or None."""
    P = SIZE
    st = storage_dtype(dtype) if dtype != "bool" else np.dtype(bool)
    mine = np.array(data(RANK), dtype=st, copy=True) if coll != "scatter" or RANK == root \
        else None
    if coll == "broadcast":
        WORLD.Bcast(mine, root=root)
        return mine
    if coll == "allgather":
        recv = np.empty(P * n, st)
        WORLD.Allgather(mine, recv)
        return recv
    if coll == "alltoall":
        recv = np.empty(P * n, st)
        WORLD.Alltoall(mine, recv)
        return recv
    if coll == "gather":
        recv = np.empty(P * n, st) if RANK == root else None
        WORLD.Gather(mine, recv, root=root)
        return recv
    if coll == "scatter":
        recv = np.empty(n, st)
        WORLD.Scatter(mine, recv, root=root)
        return recv
    if coll == "reduce":
        recv = np.empty(n, st) if RANK == root else None
        WORLD.Reduce(mine, recv, op=MPI_OPS[op], root=root)
        return recv
    if coll == "reduce_scatter":
        recv = np.empty(n, st)
        WORLD.Reduce_scatter_block(mine, recv, op=MPI_OPS[op])
        return recv
    raise ValueError(coll)


def check_vs_mpi(coll, dtype, op, mres, results, exp, key):
    """results: {label: result container} of this rank, all for the oracle's root."""
    if mres is None:
        return 0
    n = 0
    for label, result in results.items():
        got = vals(result, dtype)
        what = f"{key}/{label} vs MPI"
        if coll not in REDUCING or dtype in INTS:
            assert_bitwise(got, mres, what)
        else:
            ref, absum = exp[1]
            sel = np.isfinite(ref)       # MPI leaves NaN handling of min/max open
            mref = mres.astype(np.float64)
            if op == "avg":
                mref = mref / SIZE
            check_values(dtype, op, got[sel], mref[sel], absum[sel], SIZE, what, factor=2.0)
        n += 1
    return n


# ---------------------------------------------------------------------------
# sweep
# ---------------------------------------------------------------------------

def sweep(comm, a):
    colls = a.colls.split(",")
    counts = [parse_count(c) for c in a.counts.split(",")]
    roots_all = list(range(SIZE)) if a.roots == "all" else \
        [int(r) for r in a.roots.split(",") if int(r) < SIZE]
    ncases = 0
    used, wanted = {}, {}
    for coll in colls:
        table = ringcomm.algorithms(coll)
        assert isinstance(table, (list, tuple)) and len(table) > 0 and \
            all(isinstance(x, str) for x in table), f"algorithms({coll!r}) = {table!r}"
        assert "auto" not in table, f"algorithms({coll!r}) lists auto: {table}"
        algos = list(table) + ["auto"] if a.algos == "all" else \
            [x for x in a.algos.split(",") if x in table or x == "auto"]
        assert algos, f"{coll}: none of --algos {a.algos} in {table}"
        roots = roots_all if coll in ROOTED else [0]
        variants = variants_for(coll, a.variants.split(","))
        assert variants, f"{coll}: no applicable variant in {a.variants}"
        dtypes = [d for d in a.dtypes.split(",") if d != "bool" or coll not in REDUCING]
        rr = itertools.count()       # per collective: every algo x root pair recurs
        wanted[coll] = (set(algos), set(roots), set(variants))
        for di, dtype in enumerate(dtypes):
            if coll in REDUCING:
                ops = ops_for(dtype) if a.ops == "all" else \
                    [o for o in a.ops.split(",") if o in ops_for(dtype)]
                if a.ops_per_dtype:
                    k = min(a.ops_per_dtype, len(ops))
                    ops = [ops[(di * k + j) % len(ops)] for j in range(k)]
            else:
                ops = [None]
            for op, n in itertools.product(ops, counts):
                seed = case_seed(a.seed, coll, dtype, op, n, SIZE)
                data = Data(dtype, op, n, seed, data_blocks(coll))
                case = f"{coll}/{dtype}/{op or '-'}/n={n}"
                i0 = next(rr)
                A, R, V = len(algos), len(roots), len(variants)
                if a.plan == "rotate":
                    # blocks of L = max(A, R) cases: each block runs every
                    # algorithm and every root; the root shifts by one per
                    # block, so every pair recurs every R blocks
                    L = max(A, R)
                    j, b = i0 % L, i0 // L
                    plan = [(algos[j % A], roots[(j + b) % R], variants[i0 % V])]
                elif a.plan == "full":
                    plan = [(al, ro, variants[(i0 + j) % V])
                            for j, (al, ro) in enumerate(itertools.product(algos, roots))]
                else:   # cover: every algorithm at root r0, every other root once
                    r0 = roots[i0 % R]
                    pairs = [(al, r0) for al in algos] + \
                        [(algos[(i0 + j) % A], ro) for j, ro in enumerate(roots) if ro != r0]
                    plan = [(al, ro, variants[(i0 + j) % V]) for j, (al, ro) in enumerate(pairs)]
                for algo, root, var in plan:
                    used.setdefault(coll, set()).add((algo, root, var))
                exps = {}
                bytes_by = {}            # (root, algo) -> result bytes on this rank
                results_at = {}          # root -> {label: result}
                float_red = coll in REDUCING and dtype in FLOATS and \
                    op in ("sum", "prod", "avg")
                for algo, root, var in plan:
                    key = f"{case}/{algo}/root={root}/{var}"
                    result = run_one(comm, coll, dtype, op, n, algo, root, var, data, key)
                    ncases += 1
                    again = None
                    if float_red:    # same call again, on every rank: same bytes
                        again = run_one(comm, coll, dtype, op, n, algo, root, var, data,
                                        key + "/again")
                        ncases += 1
                    if root not in exps:
                        exps[root] = expected(coll, dtype, op, n, root, data)
                    exp = exps[root]
                    if exp is None:
                        assert result is None and again is None
                        continue
                    if SIZE == 1:
                        # one rank: every collective is a copy of its own input
                        assert_bitwise(vals(result, dtype), data(0),
                                       f"{key}: size-1 result is not the input")
                    check_result(dtype, op, result, exp, key)
                    if again is not None:
                        assert_bitwise(vals(again, dtype), vals(result, dtype),
                                       f"{key}: two identical calls differ (not deterministic)")
                    bytes_by[(root, algo)] = vals(result, dtype).tobytes()
                    results_at.setdefault(root, {})[f"{algo}/{var}"] = result
                # auto gives the bytes of one of the named algorithms
                for root in roots:
                    named = {al: b for (ro, al), b in bytes_by.items()
                             if ro == root and al != "auto"}
                    if (root, "auto") in bytes_by and len(named) == len(table):
                        assert bytes_by[(root, "auto")] in named.values(), \
                            f"{case}/auto/root={root}: result equals none of {sorted(named)}"
                # second oracle: MPI's collective at one root of the plan
                if not a.no_mpi and (dtype in MPI_DTYPES or
                                     (dtype == "bool" and coll not in REDUCING)):
                    mroot = plan[i0 % len(plan)][1]
                    mres = mpi_oracle(coll, dtype, op, n, mroot, data)
                    if exps.get(mroot) is not None:
                        ncases += check_vs_mpi(coll, dtype, op, mres,
                                               results_at.get(mroot, {}), exps[mroot], case)
    # the plan ran what this job claims to cover
    for coll, (algos, roots, variants) in wanted.items():
        u = used.get(coll, set())
        for what, want, got in (("algorithms", algos, {x[0] for x in u}),
                                ("roots", roots, {x[1] for x in u}),
                                ("variants", variants, {x[2] for x in u})):
            assert got == want, f"{coll}: the plan ran {what} {sorted(got)}, not {sorted(want)}"
    return ncases


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

def bad_calls(comm):
    """(description, exception types, words one of which the message must
    contain, callable).  Each is bad on this rank alone and must raise
    before communicating."""
    torch = get_torch()
    P, n = SIZE, 10
    x = np.arange(n, dtype=np.float32) + 0.5
    xi = np.arange(n, dtype=np.int32)
    big = np.arange(P * n, dtype=np.float32)
    bigi = np.arange(P * n, dtype=np.int32)
    ro = np.arange(P * n, dtype=np.float32)
    ro.flags.writeable = False
    me = RANK
    other = (RANK + 1) % P
    V, T = ValueError, TypeError
    calls = [
        # root out of range
        ("broadcast root=P", V, ("root",), lambda: comm.broadcast(x.copy(), root=P)),
        ("broadcast root=-1", V, ("root",), lambda: comm.broadcast(x.copy(), root=-1)),
        ("reduce root=P", V, ("root",), lambda: comm.reduce(x.copy(), root=P)),
        ("reduce root=-1", V, ("root",), lambda: comm.reduce(x.copy(), root=-1)),
        ("gather root=P+3", V, ("root",),
         lambda: comm.gather(x, np.empty(P * n, np.float32), root=P + 3)),
        ("scatter root=-1", V, ("root",), lambda: comm.scatter(big, x.copy(), root=-1)),
        # sizes
        ("allgather recvbuf P*n+1", V, ("recvbuf",),
         lambda: comm.allgather(x, np.empty(P * n + 1, np.float32))),
        ("allgather recvbuf P*n-1", V, ("recvbuf",),
         lambda: comm.allgather(x, np.empty(P * n - 1, np.float32))),
        ("reduce_scatter sendbuf P*n+1", V, ("sendbuf", "recvbuf"),
         lambda: comm.reduce_scatter(np.arange(P * n + 1, dtype=np.float32),
                                     np.empty(n, np.float32))),
        ("reduce_scatter recvbuf n+1", V, ("sendbuf", "recvbuf"),
         lambda: comm.reduce_scatter(big, np.empty(n + 1, np.float32))),
        ("alltoall recvbuf P*n+1", V, ("recvbuf",),
         lambda: comm.alltoall(big, np.empty(P * n + 1, np.float32))),
        ("alltoall sendbuf P*n+1", V, ("sendbuf", "recvbuf"),
         lambda: comm.alltoall(np.arange(P * n + 1, dtype=np.float32),
                               np.empty(P * n, np.float32))),
        ("gather root recvbuf P*n+1", V, ("recvbuf",),
         lambda: comm.gather(x, np.empty(P * n + 1, np.float32), root=me)),
        ("gather root recvbuf None", (V, T), ("recvbuf",),
         lambda: comm.gather(x, None, root=me)),
        ("scatter root sendbuf P*n+1", V, ("sendbuf", "recvbuf"),
         lambda: comm.scatter(np.arange(P * n + 1, dtype=np.float32), x.copy(), root=me)),
        ("scatter root sendbuf None", (V, T), ("sendbuf",),
         lambda: comm.scatter(None, x.copy(), root=me)),
        ("scatter recvbuf None", (V, T), ("recvbuf",),
         lambda: comm.scatter(big, None, root=me)),
        ("reduce root out n+1", V, ("out",),
         lambda: comm.reduce(x.copy(), out=np.empty(n + 1, np.float32), root=me)),
        # dtypes that differ (either buffer may be named)
        ("allgather recvbuf float64", (V, T), ("sendbuf", "recvbuf"),
         lambda: comm.allgather(x, np.empty(P * n, np.float64))),
        ("alltoall recvbuf int32", (V, T), ("sendbuf", "recvbuf"),
         lambda: comm.alltoall(big, np.empty(P * n, np.int32))),
        ("reduce_scatter recvbuf bfloat16", (V, T), ("sendbuf", "recvbuf"),
         lambda: comm.reduce_scatter(big, torch.empty(n, dtype=torch.bfloat16))),
        ("gather root recvbuf int32", (V, T), ("sendbuf", "recvbuf"),
         lambda: comm.gather(x, np.empty(P * n, np.int32), root=me)),
        ("scatter root recvbuf float64", (V, T), ("sendbuf", "recvbuf"),
         lambda: comm.scatter(big, np.empty(n, np.float64), root=me)),
        ("reduce root out int32", (V, T), ("out", "buf"),
         lambda: comm.reduce(x.copy(), out=np.empty(n, np.int32), root=me)),
        # ops
        ("reduce band on float32", V, ("op",), lambda: comm.reduce(x.copy(), op="band")),
        ("reduce avg on int32", V, ("op",), lambda: comm.reduce(xi.copy(), op="avg")),
        ("reduce unknown op", V, ("op",), lambda: comm.reduce(x.copy(), op="median")),
        ("reduce_scatter bxor on float32", V, ("op",),
         lambda: comm.reduce_scatter(big, np.empty(n, np.float32), op="bxor")),
        ("reduce_scatter avg on int32", V, ("op",),
         lambda: comm.reduce_scatter(bigi, np.empty(n, np.int32), op="avg")),
        ("reduce bool", T, ("bool",), lambda: comm.reduce(np.ones(n, bool), root=me)),
        ("reduce_scatter bool", T, ("bool",),
         lambda: comm.reduce_scatter(np.ones(P * n, bool), np.empty(n, bool))),
        ("reduce torch bool", T, ("bool",),
         lambda: comm.reduce(torch.ones(n, dtype=torch.bool), op="max")),
        # algorithms
        ("broadcast unknown algorithm", V, ("algorithm",),
         lambda: comm.broadcast(x.copy(), algorithm="butterfly")),
        ("allgather unknown algorithm", V, ("algorithm",),
         lambda: comm.allgather(x, np.empty(P * n, np.float32), algorithm="butterfly")),
        # buffers
        ("allgather read-only recvbuf", V, ("recvbuf",), lambda: comm.allgather(x, ro)),
        ("alltoall read-only recvbuf", V, ("recvbuf",), lambda: comm.alltoall(big, ro)),
        ("allgather non-contiguous recvbuf", V, ("recvbuf",),
         lambda: comm.allgather(x, np.empty(2 * P * n, np.float32)[::2])),
        ("reduce_scatter non-contiguous sendbuf", V, ("sendbuf",),
         lambda: comm.reduce_scatter(np.arange(2 * P * n, dtype=np.float32)[::2],
                                     np.empty(n, np.float32))),
        ("broadcast torch non-contiguous", V, ("buf",),
         lambda: comm.broadcast(torch.ones(n, 4, dtype=torch.bfloat16).t(), root=me)),
        ("alltoall in place", V, ("sendbuf", "recvbuf"),
         lambda: (lambda b: comm.alltoall(b, b))(big.copy())),
    ]
    # an algorithm of another collective that this one does not have
    for coll, call in (("broadcast", lambda al: comm.broadcast(x.copy(), algorithm=al)),
                       ("reduce", lambda al: comm.reduce(x.copy(), algorithm=al)),
                       ("allgather", lambda al: comm.allgather(
                           x, np.empty(P * n, np.float32), algorithm=al)),
                       ("reduce_scatter", lambda al: comm.reduce_scatter(
                           big, np.empty(n, np.float32), algorithm=al)),
                       ("alltoall", lambda al: comm.alltoall(
                           big, np.empty(P * n, np.float32), algorithm=al)),
                       ("gather", lambda al: comm.gather(
                           x, np.empty(P * n, np.float32), root=me, algorithm=al)),
                       ("scatter", lambda al: comm.scatter(big, x.copy(), root=me,
                                                           algorithm=al))):
        mine = set(ringcomm.algorithms(coll))
        foreign = sorted({al for c in COLLS for al in ringcomm.algorithms(c)} - mine)
        if foreign:
            al = foreign[RANK % len(foreign)]
            calls.append((f"{coll} algorithm={al} (another collective's)", V, ("algorithm",),
                          lambda call=call, al=al: call(al)))
    if P > 1:
        calls += [
            # overlaps other than the documented in-place forms
            ("allgather sendbuf is another rank's block", V, ("sendbuf", "recvbuf"),
             lambda: (lambda r: comm.allgather(blk(r, other, n), r))(
                 np.zeros(P * n, np.float32))),
            ("reduce_scatter recvbuf is another rank's block", V, ("sendbuf", "recvbuf"),
             lambda: (lambda s: comm.reduce_scatter(s, blk(s, other, n)))(big.copy())),
            ("gather sendbuf is another block of the root's recvbuf", V,
             ("sendbuf", "recvbuf"),
             lambda: (lambda r: comm.gather(blk(r, other, n), r, root=me))(
                 np.zeros(P * n, np.float32))),
            ("scatter recvbuf is another block of the root's sendbuf", V,
             ("sendbuf", "recvbuf"),
             lambda: (lambda s: comm.scatter(s, blk(s, other, n), root=me))(big.copy())),
            ("broadcast read-only buf on a non-root", V, ("buf",),
             lambda: comm.broadcast(ro[:n], root=other)),
        ]
    return calls


def good_round(comm, tag):
    """Every collective once with known results: the communicator still works."""
    P, n = SIZE, 1001
    base = np.arange(n, dtype=np.int64) * 7 + 3
    mine = base + RANK * 1000003
    root = P - 1
    b = mine.copy()
    comm.broadcast(b, root=root)
    assert np.array_equal(b, base + root * 1000003), f"{tag}: broadcast wrong"
    out = np.zeros(n, np.int64)
    comm.reduce(mine.copy(), out=out, root=root)
    if RANK == root:
        assert np.array_equal(out, P * base + 1000003 * (P * (P - 1) // 2)), f"{tag}: reduce wrong"
    ag = np.zeros(P * n, np.int64)
    comm.allgather(mine, ag)
    assert np.array_equal(ag, np.concatenate([base + r * 1000003 for r in range(P)])), \
        f"{tag}: allgather wrong"
    rs = np.zeros(n, np.int64)
    comm.reduce_scatter(np.tile(mine, P), rs)
    assert np.array_equal(rs, P * base + 1000003 * (P * (P - 1) // 2)), \
        f"{tag}: reduce_scatter wrong"
    a2a = np.zeros(P * n, np.int64)
    comm.alltoall(np.concatenate([mine + j for j in range(P)]), a2a)
    assert np.array_equal(a2a, np.concatenate([base + i * 1000003 + RANK for i in range(P)])), \
        f"{tag}: alltoall wrong"
    g = np.zeros(P * n, np.int64) if RANK == 0 else None
    comm.gather(mine, g, root=0)
    if RANK == 0:
        assert np.array_equal(g, ag), f"{tag}: gather wrong"
    s = np.zeros(n, np.int64)
    comm.scatter(ag if RANK == root else None, s, root=root)
    assert np.array_equal(s, mine), f"{tag}: scatter wrong"
    comm.barrier()
    return 8


class BadCallsMisbehaved(AssertionError):
    """Bad calls that did not raise as required; the good rounds passed."""


def errors(comm, a):
    """Every failure is collected, then all are reported at once."""
    ncases = 0
    failures = []
    for culprit in list(range(SIZE)) + ["all"]:
        if culprit == "all" or culprit == RANK:
            for desc, exc, words, call in bad_calls(comm):
                try:
                    call()
                except exc as e:
                    msg = str(e)
                    if not any(w in msg for w in words):
                        failures.append(f"{desc}: {type(e).__name__} message does not name "
                                        f"{' or '.join(words)}: {msg!r}")
                    ncases += 1
                except Exception as e:
                    failures.append(f"{desc}: expected {exc}, got {type(e).__name__}: {e}")
                else:
                    failures.append(f"{desc}: no exception raised")
        ncases += good_round(comm, f"after rank {culprit}'s bad calls")
    if failures:
        uniq = list(dict.fromkeys(failures))
        raise BadCallsMisbehaved(f"rank {RANK}: {len(uniq)} bad calls misbehaved:\n  " +
                             "\n  ".join(uniq))
    return ncases


# ---------------------------------------------------------------------------
# async
# ---------------------------------------------------------------------------

def post_all(comm, dtype, n, seed, root):
    """Post every collective with async_op=True.  Returns a list of
    (name, request, check) where check() verifies the result."""
    P = SIZE
    d = {c: Data(dtype, "sum" if c in REDUCING else None, n,
                 case_seed(seed, c, dtype, n, P), data_blocks(c)) for c in COLLS}
    kind = "torch" if dtype == "bfloat16" else "numpy"
    posted = []

    def post(name, req, check):
        assert isinstance(req, ringcomm.Request), \
            f"{name}: async_op=True returned {type(req).__name__}, not a ringcomm.Request"
        posted.append((name, req, check))

    bc = make_buf(kind, dtype, d["broadcast"](RANK))
    post("broadcast", comm.broadcast(bc, root=root, async_op=True),
         lambda: assert_bitwise(vals(bc, dtype), d["broadcast"](root), "async broadcast"))

    ag = fill_block(dtype, kind, P * n, RANK, n, d["allgather"](RANK))   # in place
    post("allgather", comm.allgather(blk(ag, RANK, n), ag, async_op=True),
         lambda: assert_bitwise(vals(ag, dtype),
                                np.concatenate([d["allgather"](r) for r in range(P)]),
                                "async allgather (in place)"))

    rs_send = make_buf(kind, dtype, d["reduce_scatter"](RANK))
    rs = make_out(kind, dtype, n)
    post("reduce_scatter", comm.reduce_scatter(rs_send, rs, async_op=True),
         lambda: check_result(dtype, "sum", rs, expected("reduce_scatter", dtype, "sum", n, 0,
                                                         d["reduce_scatter"]),
                              "async reduce_scatter"))

    # a blocking call between posted ones runs after them, in order
    ag2 = make_out(kind, dtype, P * n)
    comm.allgather(make_buf(kind, dtype, d["gather"](RANK)), ag2)
    assert_bitwise(vals(ag2, dtype), np.concatenate([d["gather"](r) for r in range(P)]),
                   "blocking allgather between async calls")

    red = make_buf(kind, dtype, d["reduce"](RANK))
    post("reduce", comm.reduce(red, op="sum", root=root, async_op=True),
         lambda: (check_result(dtype, "sum", red,
                               expected("reduce", dtype, "sum", n, root, d["reduce"]),
                               "async reduce") if RANK == root else
                  assert_bitwise(vals(red, dtype), d["reduce"](RANK),
                                 "async reduce changed a non-root buf")))

    post("barrier", comm.barrier(async_op=True), lambda: None)

    a2a = make_out(kind, dtype, P * n)
    post("alltoall", comm.alltoall(make_buf(kind, dtype, d["alltoall"](RANK)), a2a,
                                   async_op=True),
         lambda: assert_bitwise(vals(a2a, dtype),
                                np.concatenate([d["alltoall"].block(i, RANK)
                                                for i in range(P)]), "async alltoall"))

    g = make_out(kind, dtype, P * n) if RANK == root else None
    post("gather", comm.gather(make_buf(kind, dtype, d["gather"](RANK)), g, root=root,
                               async_op=True),
         lambda: RANK != root or assert_bitwise(
             vals(g, dtype), np.concatenate([d["gather"](r) for r in range(P)]),
             "async gather"))

    ar = make_buf(kind, dtype, d["reduce"](RANK))
    post("allreduce", comm.allreduce(ar, op="max", async_op=True),
         lambda: check_result(dtype, "max", ar,
                              ("reduce", reference(dtype, "max",
                                                   [d["reduce"](r) for r in range(P)], P)),
                              "async allreduce"))

    sc = make_out(kind, dtype, n)
    post("scatter", comm.scatter(make_buf(kind, dtype, d["scatter"](root))
                                 if RANK == root else None, sc, root=root, async_op=True),
         lambda: assert_bitwise(vals(sc, dtype), d["scatter"].block(root, RANK),
                                "async scatter"))
    return posted


def async_mode(comm, a):
    ncases = 0
    rounds = [("float32", 1000), ("int64", 100003), ("bfloat16", 4099), ("uint8", 0),
              ("float64", SIZE - 1), ("int8", 20011), ("bool", 777)]
    for rnd, (dtype, n) in enumerate(rounds):
        root = (rnd + 1) % SIZE
        posted = post_many(comm, n, a.seed + rnd) if dtype == "bool" else \
            post_all(comm, dtype, n, a.seed + rnd, root)
        # a wait order that differs per round and per rank
        order = list(range(len(posted)))
        np.random.default_rng([rnd, RANK]).shuffle(order)
        if order == sorted(order):
            order.reverse()
        for j, idx in enumerate(order):
            name, req, check = posted[idx]
            what = f"round {rnd} ({dtype}, n={n}) {name}"
            if j % 3 == 1:
                # complete by polling test() only
                deadline = time.monotonic() + 120
                while not req.test():
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{what}: test() not True after 120 s")
                    time.sleep(0.0005)
            else:
                req.wait()
            assert req.test() is True, f"{what}: test() is not True after completion"
            check()
            ncases += 1
        # every request has completed: test() stays True, wait() returns at once
        for name, req, _ in posted:
            assert req.test() is True, f"round {rnd} {name}: test() False after completion"
            req.wait()
    return ncases


def post_many(comm, n, seed):
    """Twenty all-gathers of bool tensors/arrays in flight at once."""
    P = SIZE
    posted = []
    for k in range(20):
        d = Data("bool", None, n + k, case_seed(seed, k))
        kind = "torch" if k % 2 else "numpy"
        recv = make_out(kind, "bool", P * (n + k))
        req = comm.allgather(make_buf(kind, "bool", d(RANK)), recv, async_op=True)
        assert isinstance(req, ringcomm.Request), type(req)
        posted.append((f"allgather #{k}", req,
                       lambda recv=recv, d=d, k=k: assert_bitwise(
                           vals(recv, "bool"), np.concatenate([d(r) for r in range(P)]),
                           f"async bool allgather #{k}")))
    return posted


def main():
    a = parse()
    if "bfloat16" in a.dtypes.split(",") or "torch" in a.variants or a.mode != "sweep":
        get_torch()  # bfloat16 buffers are torch tensors (import once, up front)
    failed = []
    with ringcomm.Communicator.from_mpi(WORLD) as comm:
        assert (comm.rank, comm.size) == (RANK, SIZE)
        if a.expect_chunk_bytes:
            assert comm.chunk_bytes == a.expect_chunk_bytes, \
                f"chunk_bytes {comm.chunk_bytes}, expected {a.expect_chunk_bytes}"
        ncases = 0
        for mode in a.mode.split(","):
            t0 = time.perf_counter()
            try:
                n = {"sweep": sweep, "errors": errors, "async": async_mode}[mode](comm, a)
            except BadCallsMisbehaved as e:
                # bad calls raised locally (or not at all) and the good rounds
                # passed: the next mode can still run before failing the job
                failed.append(e)
                continue
            if RANK == 0:
                log(f"{mode}: {n} checks in {time.perf_counter() - t0:.1f} s")
            ncases += n
    if failed:
        raise failed[0]
    finish(f"coll_sweep-{a.mode}", ncases)


if __name__ == "__main__":
    main()
