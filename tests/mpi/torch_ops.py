"""The torch.distributed backend "ringcomm" against gloo, in the same processes.

    mpirun -n P python -m mpi4py tests/mpi/torch_ops.py            # every check
    torchrun --standalone --nproc-per-node 2 tests/mpi/torch_ops.py --torchrun

The default group is ringcomm's (init_process_group("ringcomm"), under mpirun
with the environment that importing ringcomm.torch fills from MPI); a gloo
group over the same ranks (dist.new_group(backend="gloo")) computes the
reference of every operation on the same inputs.  Inputs are seeded per
(case, rank); floating inputs are small integers, so every sum and product is
exact and results must equal gloo's bit for bit (AVG and PREMUL_SUM, which
divide or scale, within a rounding of the dtype; one case of random float32
within tolerance).  Non-contiguous tensors, all-to-all with unequal splits,
async work with futures and callbacks, sub-groups, DDP (bitwise parameters
at 2 ranks), the DDP hooks and the errors are checked too.  Any failure
raises, which aborts the whole job (python -m mpi4py).
"""
import argparse
import hashlib
import os
import sys
import zlib

import torch
import torch.distributed as dist

import ringcomm
import ringcomm.torch as rt

torch.set_num_threads(1)
R = dist.ReduceOp
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
INTS = (torch.int8, torch.uint8, torch.int32, torch.int64)
DTYPES = FLOATS + INTS + (torch.bool,)
FLOAT_OPS = (R.SUM, R.PRODUCT, R.MIN, R.MAX, R.AVG)
INT_OPS = (R.SUM, R.PRODUCT, R.MIN, R.MAX, R.BAND, R.BOR, R.BXOR)
TOL = {torch.float32: 1e-6, torch.float64: 1e-12, torch.float16: 1e-3, torch.bfloat16: 8e-3}

CASES = [0]
RANK = SIZE = None
G = None          # the gloo group beside the default ringcomm group


def log(*a):
    print(f"[rank {RANK}/{SIZE}]", *a, file=sys.stderr, flush=True)


def ops_for(dt):
    return FLOAT_OPS if dt in FLOATS else INT_OPS


def data(dt, shape, *key, rank=None):
    """Seeded input of `rank` (default: this rank): small integers for
    floating types, full-range values for integer types, random bools."""
    g = torch.Generator().manual_seed(zlib.crc32(repr((key, shape, str(dt))).encode()) * 8
                                      + (RANK if rank is None else rank))
    if dt is torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dt in INTS:
        info = torch.iinfo(dt)
        return torch.randint(info.min, info.max, shape, generator=g, dtype=torch.int64).to(dt)
    x = torch.randint(-3, 4, shape, generator=g).to(dt)
    return torch.where(x == 0, torch.ones((), dtype=dt), x)   # no zeros (prod, division)


def check(got, ref, what, exact=True):
    CASES[0] += 1
    if got.dtype != ref.dtype or got.shape != ref.shape:
        raise AssertionError(f"{what}: got {got.dtype}{tuple(got.shape)}, gloo "
                             f"{ref.dtype}{tuple(ref.shape)}")
    if exact or got.dtype not in TOL:
        if not torch.equal(got, ref):
            bad = (got != ref).reshape(-1).nonzero()[:5].reshape(-1)
            raise AssertionError(f"{what}: differs from gloo at {bad.tolist()}: got "
                                 f"{got.reshape(-1)[bad].tolist()} gloo "
                                 f"{ref.reshape(-1)[bad].tolist()}")
    else:
        tol = TOL[got.dtype]
        torch.testing.assert_close(got.double(), ref.double(), rtol=tol, atol=tol, msg=what)


def noncontig(x):
    """A non-contiguous tensor holding x's values (every other element of a bigger one)."""
    big = torch.zeros(x.numel() * 2, dtype=x.dtype)
    v = big[::2].view(x.shape) if x.dim() else big[:1].view(())
    v.copy_(x)
    assert x.numel() <= 1 or not v.is_contiguous()
    return v


def both(fn, *tensors):
    """Run fn(group, *copies) on ringcomm's default group and on gloo's; return both copies."""
    mine = [t.clone() for t in tensors]
    ref = [t.clone() for t in tensors]
    fn(None, *mine)
    fn(G, *ref)
    return mine, ref


# ------------------------------------------------------------------ collectives

def check_allreduce():
    for dt in DTYPES:
        for op in ops_for(dt):
            for n in (0, 1, 7, 1000):
                for nc in (False, True):
                    x = data(dt, (n,), "ar", str(op))
                    x = noncontig(x) if nc else x
                    m, r = x.clone() if not nc else noncontig(x), x.clone()
                    dist.all_reduce(m, op=op)
                    dist.all_reduce(r, op=op, group=G)
                    check(m, r, f"all_reduce {dt} {op} n={n} noncontig={nc}",
                          exact=op != R.AVG)
    # random float32 data: sums in another order, within rounding
    x = torch.randn(100003, generator=torch.Generator().manual_seed(RANK))
    (m,), (r,) = both(lambda g, t: dist.all_reduce(t, group=g), x)
    check(m, r, "all_reduce random float32", exact=False)
    # 2-D, transposed (non-contiguous) and 0-dim
    x = data(torch.float32, (5, 6), "2d").t()
    m = x.clone().t().contiguous().t()      # same strides as x (transposed)
    assert not m.is_contiguous()
    dist.all_reduce(m)
    r = x.contiguous()
    dist.all_reduce(r, group=G)
    check(m, r, "all_reduce transposed")
    (m,), (r,) = both(lambda g, t: dist.all_reduce(t, op=R.MAX, group=g),
                      data(torch.int64, (), "0d"))
    check(m, r, "all_reduce 0-dim")
    # PREMUL_SUM: scale by the factor, then sum (gloo has no PREMUL_SUM: sum of x * f)
    for dt in FLOATS:
        for factor in (0.5, torch.tensor([3.0], dtype=dt)):
            x = data(dt, (33,), "premul")
            m = x.clone()
            dist.all_reduce(m, op=torch._C._distributed_c10d._make_nccl_premul_sum(factor))
            f = factor if isinstance(factor, float) else factor.item()
            r = x * f
            dist.all_reduce(r, group=G)
            check(m, r, f"all_reduce PREMUL_SUM {dt} factor={factor}", exact=False)
    # coalesced, with a non-contiguous member
    ts = [data(torch.float32, (10,), "co0"), noncontig(data(torch.float32, (3,), "co1")),
          data(torch.float32, (2, 2), "co2")]
    mine = [t.clone() if t.is_contiguous() else noncontig(t) for t in ts]
    ref = [t.clone() for t in ts]
    dist.all_reduce_coalesced(mine, op=R.MAX)
    dist.all_reduce_coalesced(ref, op=R.MAX, group=G)
    for k, (a, b) in enumerate(zip(mine, ref)):
        check(a, b, f"all_reduce_coalesced tensor {k}")
    # the group method itself takes mixed dtypes (one all-reduce per dtype)
    ts = [data(torch.int32, (5,), "co3"), data(torch.bfloat16, (4,), "co4"),
          data(torch.int32, (2,), "co5")]
    mine = [t.clone() for t in ts]
    dist.group.WORLD.allreduce_coalesced(mine, dist.AllreduceCoalescedOptions()).wait()
    for k, t in enumerate(ts):
        r = t.clone()
        dist.all_reduce(r, group=G)
        check(mine[k], r, f"allreduce_coalesced mixed dtypes tensor {k}")


def check_broadcast_reduce():
    for dt in (torch.float32, torch.bfloat16, torch.int8, torch.bool, torch.float64):
        for root in range(SIZE):
            for nc in (False, True):
                x = data(dt, (9,), "bc", root)
                m = noncontig(x) if nc else x.clone()
                r = x.clone()
                dist.broadcast(m, src=root)
                dist.broadcast(r, src=root, group=G)
                check(m, r, f"broadcast {dt} root={root} noncontig={nc}")
    for dt in (torch.float32, torch.float16, torch.int32, torch.uint8, torch.bool):
        for op in ops_for(dt):
            for root in range(SIZE):
                x = data(dt, (11,), "red", str(op), root)
                m = noncontig(x) if root % 2 else x.clone()
                r = x.clone()
                dist.reduce(m, dst=root, op=op)
                dist.reduce(r, dst=root, op=op, group=G)
                if RANK == root:
                    check(m, r, f"reduce {dt} {op} root={root}", exact=op != R.AVG)
                else:
                    CASES[0] += 1


def check_gather_family():
    p = SIZE
    for dt in (torch.float32, torch.bfloat16, torch.int64, torch.bool):
        for n in (0, 1, 13):
            x = data(dt, (n,), "ag")
            # all_gather into a list (one output non-contiguous)
            outs_m = [torch.empty(n, dtype=dt) for _ in range(p)]
            outs_m[-1] = noncontig(torch.zeros(n, dtype=dt))
            outs_r = [torch.empty(n, dtype=dt) for _ in range(p)]
            dist.all_gather(outs_m, noncontig(x) if n > 1 else x)
            dist.all_gather(outs_r, x, group=G)
            for i in range(p):
                check(outs_m[i], outs_r[i], f"all_gather {dt} n={n} block {i}")
            # all_gather_into_tensor (= all_gather_single)
            om, orf = torch.empty(p * n, dtype=dt), torch.empty(p * n, dtype=dt)
            dist.all_gather_into_tensor(om, x)
            dist.all_gather_into_tensor(orf, x, group=G)
            check(om, orf, f"all_gather_into_tensor {dt} n={n}")
            # in place: the input is this rank's block of the output
            ip = torch.zeros(p * n, dtype=dt)
            ip[RANK * n:(RANK + 1) * n] = x
            dist.all_gather_into_tensor(ip, ip[RANK * n:(RANK + 1) * n])
            check(ip, orf, f"all_gather_into_tensor in place {dt} n={n}")
            # gather to every root
            for root in range(p):
                gm = [torch.empty(n, dtype=dt) for _ in range(p)] if RANK == root else None
                gr = [torch.empty(n, dtype=dt) for _ in range(p)] if RANK == root else None
                dist.gather(x, gm, dst=root)
                dist.gather(x, gr, dst=root, group=G)
                if RANK == root:
                    for i in range(p):
                        check(gm[i], gr[i], f"gather {dt} n={n} root={root} block {i}")
                else:
                    CASES[0] += 1
                # scatter from every root
                src = [data(dt, (n,), "sc", root, i) for i in range(p)] if RANK == root else None
                sm, sr = noncontig(torch.zeros(n, dtype=dt)), torch.zeros(n, dtype=dt)
                dist.scatter(sm, src, src=root)
                dist.scatter(sr, src, src=root, group=G)
                check(sm, sr, f"scatter {dt} n={n} root={root}")
    # all_gather_coalesced (deprecated API, still dispatched to the group)
    xs = [data(torch.float32, (4,), "agc0"), data(torch.float32, (2, 3), "agc1")]
    om = [[torch.empty_like(x) for x in xs] for _ in range(p)]
    orf = [[torch.empty_like(x) for x in xs] for _ in range(p)]
    dist.all_gather_coalesced(om, xs)
    dist.all_gather_coalesced(orf, xs, group=G)
    for k in range(len(xs)):
        for i in range(p):
            check(om[i][k], orf[i][k], f"all_gather_coalesced tensor {k} block {i}")
    # coalescing manager: all_gather_single / reduce_scatter_single batched
    from torch.distributed.distributed_c10d import _coalescing_manager
    xs = [data(torch.float32, (3,), "cm0"), data(torch.float32, (5,), "cm1")]
    outs = {}
    for g in (None, G):
        o = [torch.empty(p * x.numel()) for x in xs]
        with _coalescing_manager(group=g):
            for oo, x in zip(o, xs):
                dist.all_gather_into_tensor(oo, x, group=g)
        outs[g] = o
    for k in range(len(xs)):
        check(outs[None][k], outs[G][k], f"coalesced all_gather_into_tensor {k}")


def check_reduce_scatter():
    p = SIZE
    for dt in (torch.float32, torch.float16, torch.int32, torch.int8, torch.bool):
        for op in ops_for(dt):
            for n in (0, 1, 6):
                ins = [data(dt, (n,), "rs", str(op), i) for i in range(p)]
                m, r = noncontig(torch.zeros(n, dtype=dt)), torch.zeros(n, dtype=dt)
                dist.reduce_scatter(m, [x.clone() for x in ins], op=op)
                dist.reduce_scatter(r, [x.clone() for x in ins], op=op, group=G)
                check(m, r, f"reduce_scatter {dt} {op} n={n}", exact=op != R.AVG)
                flat = torch.cat(ins)
                m, r = torch.zeros(n, dtype=dt), torch.zeros(n, dtype=dt)
                dist.reduce_scatter_tensor(m, flat, op=op)
                dist.reduce_scatter_tensor(r, flat, op=op, group=G)
                check(m, r, f"reduce_scatter_tensor {dt} {op} n={n}", exact=op != R.AVG)
    x = data(torch.float32, (p * 4,), "rs-premul")
    m = torch.empty(4)
    dist.reduce_scatter_tensor(m, x, op=torch._C._distributed_c10d._make_nccl_premul_sum(0.25))
    r = torch.empty(4)
    dist.reduce_scatter_tensor(r, x * 0.25, group=G)
    check(m, r, "reduce_scatter_tensor PREMUL_SUM", exact=False)


def check_alltoall():
    p = SIZE
    for dt in (torch.float32, torch.bfloat16, torch.int64, torch.bool):
        # equal splits, 2-D rows
        x = data(dt, (2 * p, 3), "a2a")
        m, r = torch.empty_like(x), torch.empty_like(x)
        dist.all_to_all_single(m, x)
        dist.all_to_all_single(r, x, group=G)
        check(m, r, f"all_to_all_single equal {dt}")
        m = noncontig(torch.zeros_like(x))
        dist.all_to_all_single(m, noncontig(x))
        check(m, r, f"all_to_all_single equal non-contiguous {dt}")
        # unequal splits: rank r sends (r + j) % 3 rows to rank j (zero rows too)
        isz = [(RANK + j) % 3 for j in range(p)]
        osz = [(i + RANK) % 3 for i in range(p)]
        x = data(dt, (sum(isz), 2), "a2av")
        m = torch.full((sum(osz), 2), 1, dtype=dt)
        r = torch.full((sum(osz), 2), 1, dtype=dt)
        dist.all_to_all_single(m, x, osz, isz)
        dist.all_to_all_single(r, x, osz, isz, group=G)
        check(m, r, f"all_to_all_single unequal {dt} splits in={isz} out={osz}")
        m = noncontig(torch.zeros((sum(osz), 2), dtype=dt))
        dist.all_to_all_single(m, noncontig(x), osz, isz)
        check(m, r, f"all_to_all_single unequal non-contiguous {dt}")
        # all_to_all with lists, equal and unequal sizes
        for sizes in ([3] * p, None):
            ins = [data(dt, ((RANK + j) % 3 if sizes is None else 3,), "a2al", j)
                   for j in range(p)]
            outs_m = [torch.zeros(((i + RANK) % 3 if sizes is None else 3,), dtype=dt)
                      for i in range(p)]
            dist.all_to_all(outs_m, ins)
            if sizes is not None:
                outs_r = [o.clone() for o in outs_m]
                dist.all_to_all(outs_r, ins, group=G)
            else:   # gloo's all_to_all takes equal sizes only: what rank i sent us
                outs_r = [data(dt, ((i + RANK) % 3,), "a2al", RANK, rank=i) for i in range(p)]
            for i in range(p):
                check(outs_m[i], outs_r[i], f"all_to_all {dt} sizes={sizes} block {i}")


def check_p2p():
    p = SIZE
    if p == 1:
        return
    right, left = (RANK + 1) % p, (RANK - 1) % p
    for dt in (torch.float32, torch.bfloat16, torch.int8, torch.bool):
        for n in (0, 5, 300000):        # 300000 float32 > 64 KiB: single-copy path
            x = data(dt, (n,), "p2p", rank=RANK)
            got = torch.zeros(n, dtype=dt)
            req = dist.isend(x, right, tag=3)
            dist.recv(got, left, tag=3)
            req.wait()
            check(got, data(dt, (n,), "p2p", rank=left), f"isend/recv {dt} n={n}")
    # non-contiguous send and receive, batch_isend_irecv both ways
    x = data(torch.float32, (64,), "bat", rank=RANK)
    a, b = noncontig(torch.zeros(64)), torch.zeros(64)
    ops = [dist.P2POp(dist.irecv, a, left), dist.P2POp(dist.irecv, b, right, tag=1),
           dist.P2POp(dist.isend, noncontig(x), right), dist.P2POp(dist.isend, x, left, tag=1)]
    for w in dist.batch_isend_irecv(ops):
        w.wait()
    check(a, data(torch.float32, (64,), "bat", rank=left), "batch_isend_irecv from left")
    check(b, data(torch.float32, (64,), "bat", rank=right), "batch_isend_irecv from right")
    # any source: rank 0 receives one message from every other rank
    if RANK == 0:
        seen = set()
        for _ in range(p - 1):
            buf = torch.zeros(2, dtype=torch.int64)
            src = dist.recv(buf, tag=9)
            assert buf.tolist() == [src, src * 10], (src, buf)
            seen.add(src)
        assert seen == set(range(1, p)), seen
    else:
        dist.send(torch.tensor([RANK, RANK * 10]), 0, tag=9)
    CASES[0] += 1
    # a future on a pending receive completes with its callback, on the watcher thread
    got = torch.zeros(3)
    w = dist.irecv(got, left, tag=4)
    fut = w.get_future().then(lambda f: f.value()[0].sum().item())
    dist.send(torch.full((3,), float(RANK)), right, tag=4)
    assert fut.wait() == 3.0 * left, (fut.wait(), left)
    assert w.is_completed() and w.is_success()
    CASES[0] += 1


def check_async():
    x = data(torch.float32, (100,), "async")
    r = x.clone()
    dist.all_reduce(r, group=G)
    seen = []
    m = x.clone()
    w = dist.all_reduce(m, async_op=True)
    fut = w.get_future()
    chained = fut.then(lambda f: seen.append(f.value()[0].clone()) or f.value()[0] * 2)
    assert w.wait() is True and w.is_completed() and w.is_success() and w.exception() is None
    check(m, r, "async all_reduce")
    check(chained.wait(), r * 2, "async all_reduce: chained future")
    check(seen[0], r, "async all_reduce: callback ran")
    works = [dist.broadcast(t, src=0, async_op=True) for t in (m.clone(), torch.zeros(4))]
    works += [dist.all_gather_into_tensor(torch.empty(SIZE * 100), x, async_op=True),
              dist.barrier(async_op=True)]
    torch.futures.wait_all([w.get_future() for w in works])
    assert all(w.is_completed() for w in works)
    CASES[0] += 1


def check_groups():
    """Sub-groups created in an order that differs by member (ranks that are in
    different groups before must still agree on the new group's store keys)."""
    p = SIZE
    evens = list(range(0, p, 2))
    odds = list(range(1, p, 2))
    ge, go = dist.new_group(evens), dist.new_group(odds) if odds else None
    gle, glo = dist.new_group(evens, backend="gloo"), \
        dist.new_group(odds, backend="gloo") if odds else None
    tail = list(range(1, p)) if p > 1 else [0]
    gt, glt = dist.new_group(tail), dist.new_group(tail, backend="gloo")
    mine, ref = (ge, gle) if RANK % 2 == 0 else (go, glo)
    x = data(torch.int64, (17,), "grp")
    m, r = x.clone(), x.clone()
    dist.all_reduce(m, group=mine)
    dist.all_reduce(r, group=ref)
    check(m, r, "sub-group all_reduce")
    assert mine.size() == len(evens if RANK % 2 == 0 else odds)
    assert mine.group_name and mine.group_name != dist.group.WORLD.group_name
    assert dist.get_backend(mine) == "ringcomm"
    if RANK in tail:
        m, r = x.clone(), x.clone()
        dist.broadcast(m, src=tail[-1], group=gt)
        dist.broadcast(r, src=tail[-1], group=glt)
        check(m, r, "sub-group broadcast (global root)")
        outs_m = [torch.empty(17, dtype=torch.int64) for _ in tail]
        outs_r = [torch.empty(17, dtype=torch.int64) for _ in tail]
        dist.all_gather(outs_m, x, group=gt)
        dist.all_gather(outs_r, x, group=glt)
        for a, b in zip(outs_m, outs_r):
            check(a, b, "sub-group all_gather")
    # functional collectives find the group by its name
    import torch.distributed._functional_collectives as funcol
    y = funcol.all_reduce(x.clone(), "sum", mine)
    y = funcol.wait_tensor(y) if hasattr(funcol, "wait_tensor") else y
    r = x.clone()
    dist.all_reduce(r, group=ref)
    check(y, r, "functional all_reduce on a sub-group")
    for g in (ge, go, gt):
        if g is not None and g != dist.GroupMember.NON_GROUP_MEMBER:
            dist.destroy_process_group(g)


# ------------------------------------------------------------------ DDP

def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(),
                               torch.nn.Linear(32, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))


def train(group, steps, hook=None):
    model = make_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model, process_group=group,
                                                    bucket_cap_mb=0.002)  # several buckets
    if hook is not None:
        ddp.register_comm_hook(group, hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(100 + RANK)
    for _ in range(steps):
        x, y = torch.randn(8, 16, generator=g), torch.randn(8, 1, generator=g)
        opt.zero_grad()
        torch.nn.functional.mse_loss(ddp(x), y).backward()
        opt.step()
    return torch.cat([q.detach().reshape(-1) for q in model.parameters()])


def same_on_all_ranks(t, what, group=None):
    h = torch.tensor(list(hashlib.sha1(t.numpy().tobytes()).digest()[:8]), dtype=torch.uint8)
    hs = [torch.empty_like(h) for _ in range(SIZE)]
    dist.all_gather(hs, h, group=G)
    assert all(torch.equal(h, x) for x in hs), f"{what}: parameters differ across ranks"
    CASES[0] += 1


def check_ddp(steps):
    ours = train(None, steps)
    gloo = train(G, steps)
    same_on_all_ranks(ours, "DDP over ringcomm")
    if SIZE <= 2:
        # a + b is the same in any order: bitwise the same parameters
        check(ours, gloo, f"DDP parameters after {steps} steps vs gloo")
    else:
        # other summation orders than gloo's ring: within float32 rounding
        CASES[0] += 1
        log(f"DDP parameters after {steps} steps bitwise equal to gloo's: "
            f"{torch.equal(ours, gloo)} (max difference {(ours - gloo).abs().max().item():.3g})")
        torch.testing.assert_close(ours, gloo, rtol=1e-4, atol=1e-5)
    hooked = train(None, steps, rt.allreduce_hook)
    same_on_all_ranks(hooked, "DDP with allreduce_hook")
    torch.testing.assert_close(hooked, gloo, rtol=1e-4, atol=1e-5)
    for hook, dt, tol in ((rt.bf16_allreduce_hook, torch.bfloat16, 0.05),
                          (rt.fp16_allreduce_hook, torch.float16, 0.01)):
        p16 = train(None, steps, hook)
        same_on_all_ranks(p16, f"DDP with {hook.__name__}")
        torch.testing.assert_close(p16, gloo, rtol=tol, atol=tol)
        assert not torch.equal(p16, ours), f"{hook.__name__}: no 16-bit rounding visible"
        CASES[0] += 1
    # one backward with the bf16 hook: the averaged gradient is a 16-bit value
    model = make_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ddp.register_comm_hook(None, rt.bf16_allreduce_hook)
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(7 + RANK))
    ddp(x).sum().backward()
    for q in model.parameters():
        assert torch.equal(q.grad, q.grad.to(torch.bfloat16).float()), "grad not bf16-valued"
    CASES[0] += 1


# ------------------------------------------------------------------ errors

def expect(exc, words, fn):
    try:
        fn()
    except exc as e:
        text = str(e)
        for w in words:
            assert w in text, f"message {text!r} lacks {w!r}"
        CASES[0] += 1
        return
    raise AssertionError(f"expected {exc.__name__} containing {words}")


def check_errors():
    p = SIZE
    expect(TypeError, ["ringcomm all_reduce" if False else "ringcomm allreduce",
                       "unsupported dtype torch.int16"],
           lambda: dist.all_reduce(torch.ones(3, dtype=torch.int16)))
    expect(ValueError, ["ringcomm allreduce", "AVG", "torch.int32"],
           lambda: dist.all_reduce(torch.ones(3, dtype=torch.int32), op=R.AVG))
    expect(ValueError, ["ringcomm allreduce", "BXOR", "torch.float32"],
           lambda: dist.all_reduce(torch.ones(3), op=R.BXOR))
    expect(ValueError, ["ringcomm all_gather_single", "output", "expected %d elements" % (3 * p)],
           lambda: dist.all_gather_into_tensor(torch.empty(3 * p + 1), torch.ones(3)))
    expect(ValueError, ["ringcomm all_gather_single", "dtype"],
           lambda: dist.all_gather_into_tensor(torch.empty(3 * p, dtype=torch.float64),
                                               torch.ones(3)))
    expect(ValueError, ["ringcomm allgather", "output_tensors", "%d tensors" % p],
           lambda: dist.all_gather([torch.empty(3)] * (p + 1), torch.ones(3)))
    expect(ValueError, ["ringcomm all_to_all_single", "split sizes"],
           lambda: dist.all_to_all_single(torch.empty(4), torch.ones(4), [1] * (p + 1),
                                          [1] * (p + 1)))
    expect(ValueError, ["ringcomm send", "tag"],
           lambda: dist.isend(torch.ones(1), (RANK + 1) % p, tag=1 << 30))
    # the group still works after refused calls
    x = torch.ones(3)
    dist.all_reduce(x)
    assert torch.equal(x, torch.full((3,), float(p)))
    CASES[0] += 1
    if p == 1:
        return
    # unequal all_to_all_single whose splits disagree (rank 0 expects one row
    # more from rank 1 than rank 1 sends): the receiver raises from the call
    bad = dist.new_group()
    osz = [1] * p
    if RANK == 0:
        osz[1] = 2
    a2a = lambda: dist.all_to_all_single(torch.zeros(sum(osz)), torch.ones(p), osz, [1] * p,
                                         group=bad)
    if RANK == 0:
        expect(ringcomm.RingcommError, ["RC_ERR_MISMATCH", "count=2", "count=1"], a2a)
    else:
        # the others' part may have completed already, or they hear of the
        # failure (rank 0 reports it): either way from the call, not a hang
        try:
            a2a()
        except ringcomm.RingcommError as e:
            log(f"all_to_all_single with disagreeing splits: {e}")
        CASES[0] += 1
    dist.destroy_process_group(bad)
    # counts differ across ranks: every rank raises RC_ERR_MISMATCH from the call
    # (on a group of its own: failures are sticky)
    bad = dist.new_group()
    expect(ringcomm.RingcommError, ["RC_ERR_MISMATCH"],
           lambda: dist.all_reduce(torch.ones(10 + RANK), group=bad))
    expect(ringcomm.RingcommError, ["RC_ERR_MISMATCH"],
           lambda: dist.all_reduce(torch.ones(3), group=bad))   # sticky
    dist.destroy_process_group(bad)
    x = torch.ones(3)
    dist.all_reduce(x)                                            # the world is fine
    assert torch.equal(x, torch.full((3,), float(p)))


# ------------------------------------------------------------------ main

def main():
    global RANK, SIZE, G
    ap = argparse.ArgumentParser()
    ap.add_argument("--torchrun", action="store_true",
                    help="launched by torchrun: a shorter run, the OK line from torch's ranks")
    ap.add_argument("--ddp-steps", type=int, default=20)
    args = ap.parse_args()
    dist.init_process_group("ringcomm")
    RANK, SIZE = dist.get_rank(), dist.get_world_size()
    assert dist.get_backend() == "ringcomm"
    assert isinstance(dist.group.WORLD, rt.ProcessGroupRingcomm)
    assert dist.group.WORLD.group_name and dist.group.WORLD.group_desc == "default_pg"
    if not args.torchrun:
        assert int(os.environ["WORLD_SIZE"]) == SIZE   # filled from MPI by the import
    G = dist.new_group(backend="gloo")
    checks = [check_allreduce, check_groups, check_async, check_p2p]
    if not args.torchrun:
        checks = [check_allreduce, check_broadcast_reduce, check_gather_family,
                  check_reduce_scatter, check_alltoall, check_p2p, check_async, check_groups,
                  check_errors]
    for fn in checks:
        fn()
        log(f"{fn.__name__}: ok ({CASES[0]} cases so far)")
    check_ddp(args.ddp_steps if not args.torchrun else 5)
    log(f"check_ddp: ok ({CASES[0]} cases)")
    dist.barrier()
    name = "torch_torchrun" if args.torchrun else "torch_ops"
    print(f"RINGCOMM-WORKER-OK {name} rank={RANK} size={SIZE} cases={CASES[0]}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
