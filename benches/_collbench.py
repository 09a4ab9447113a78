"""Shared body of the per-collective benches (test_bench_<collective>.py).

Buffers, inputs and the closed-form check come from ``ringcomm.bench``'s
``COLLECTIVES`` table, so these benches and ``python -m ringcomm.bench``
time the same calls on the same data, with the nccl-tests size and busbw
definitions (see that module's docstring).  Each benchmark is one
collective, one size, float32, with ringcomm (one row per algorithm, plus
auto) and mpi4py side by side in one group; after timing, the output of
the last call is checked against the closed form on the ranks that receive
one, and a wrong element fails the benchmark (and aborts every rank).
"""

from types import SimpleNamespace

import pytest

from ringcomm.bench import COLLECTIVES, Bufs, alloc, count_wrong, copy_into, format_size, parse_size

DTYPE, ITEMSIZE, OP = "float32", 4, "sum"


def label(size):
    text = format_size(size)
    return text + ("iB" if text[-1] in "KMG" else "B")


def coll_sizes(config):
    return [parse_size(s) for s in config.getoption("--coll-sizes").split(",") if s.strip()]


def coll_algorithms(config, name):
    """ringcomm columns of collective `name`: --coll-algorithms, 'all' = its algorithms + auto."""
    import ringcomm
    coll = COLLECTIVES[name]
    if coll.algorithms is None:
        return [None]
    arg = config.getoption("--coll-algorithms")
    try:
        known = list(ringcomm.algorithms(coll.algorithms))
    except Exception:        # a binding without per-collective algorithm lists
        known = None
    if arg.strip().lower() == "all":
        return [a for a in (known or []) if a != "auto"] + ["auto"]
    wanted = [a.strip() for a in arg.split(",") if a.strip()]
    keep = [a for a in wanted if known is None or a == "auto" or a in known]
    return keep or ["auto"]


def generate(metafunc, name):
    """pytest_generate_tests body: size (and algorithm, if the collective has a choice)."""
    if "size" in metafunc.fixturenames:
        sizes = coll_sizes(metafunc.config)
        metafunc.parametrize("size", sizes, ids=[label(s) for s in sizes])
    if "algorithm" in metafunc.fixturenames:
        algos = coll_algorithms(metafunc.config, name)
        metafunc.parametrize("algorithm", algos, ids=[a or "ringcomm" for a in algos])


def plan(size):
    """(rounds, iterations per round): the same on every rank; ~<= 1 s per benchmark."""
    iterations = max(1, min(100, (1 << 20) // max(size, 1)))
    rounds = 10 if size < (4 << 20) else 5
    return rounds, iterations


def _context(mpi_comm, rc_comm):
    # what ringcomm.bench's runners use of its Context (no gloo here)
    return SimpleNamespace(mpi=mpi_comm, rc=rc_comm, rank=mpi_comm.Get_rank(), size=mpi_comm.Get_size())


def run(benchmark, name, kind, mpi_comm, rc_comm, size, algorithm=None, root=0, group=None):
    """Benchmark collective `name` through `kind` ("ringcomm" or "mpi") at `size` bytes."""
    coll = COLLECTIVES[name]
    ctx = _context(mpi_comm, rc_comm)
    p, rank = ctx.size, ctx.rank
    if p < coll.min_ranks:
        pytest.skip(f"{name} needs at least {coll.min_ranks} ranks")
    count, nsend, nrecv = coll.counts(size, ITEMSIZE, p)
    bufs = Bufs(send=alloc(nsend, DTYPE), recv=alloc(nrecv, DTYPE), count=count)
    expected = coll.fill(bufs, rank, p, OP, DTYPE, root)
    fn = coll.runners[kind if kind == "ringcomm" else "mpi"](ctx, bufs, OP, algorithm or "", root)
    if kind in coll.in_place:
        copy_into(bufs.recv, bufs.send)      # works in place: its input is the output buffer
    else:
        bufs.recv.fill(0)                    # a sentinel no correct element equals

    nbytes = coll.size_of(count, ITEMSIZE, p)
    where = f" root {root}" if coll.rooted else ""
    benchmark.group = group or f"{name} {label(nbytes)} {DTYPE}{where}, {p} ranks"
    benchmark.extra_info.update(algorithm=algorithm if kind == "ringcomm" else f"mpi4py {coll.peer_calls['mpi']}",
                                collective=name)
    rounds, iterations = plan(size)
    benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=1)

    wrong = count_wrong(bufs.recv, expected) if coll.checked(rank, p, root) else 0
    assert wrong == 0, f"{name} via {kind} {algorithm or ''}: {wrong} wrong elements on rank {rank}"
    t = benchmark.stats.stats.median if benchmark.stats is not None else None
    if t:
        if coll.time_scale != 1.0:           # ping-pong: a call is a round trip
            benchmark.extra_info["round_trip_us"] = t * 1e6
        t *= coll.time_scale
        algbw = nbytes / t / 1e9
        benchmark.extra_info.update(
            size_bytes=nbytes, count=count, ranks=p, time_us=t * 1e6,
            algbw_GBps=algbw, busbw_GBps=algbw * coll.busbw_factor(p))
    return bufs
