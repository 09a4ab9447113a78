"""Shared memory at scale: does the communicator fit in /dev/shm, and how much
of it does it use?

Modes:

collectives (default)
  Make the world communicator.  If that raises RingcommError (a /dev/shm too
  small for the segment must be an error at init, never a SIGBUS later), print
  ``SHM-FIT-INIT-ERROR rank=R status=S: <message>`` and exit normally (the
  test reads the lines of every rank).  Otherwise, on seeded int32 data of
  --bytes per rank, check against numpy: alltoall (pairwise and auto, so
  every channel of every pair carries data), allreduce (every algorithm
  forced by name, plus auto), broadcast, reduce, allgather, reduce_scatter,
  gather, scatter, barrier and a ring shift of --bytes by send/recv (the
  point-to-point lane); mpi4py's Alltoall and Allreduce as a second oracle.
  Then traffic that fills every slot of every channel (see fill()), so a
  segment whose pages do not all exist fails here rather than by luck later.
  Prints ``SHM-FIT-OK rank=R`` and the usual RINGCOMM-WORKER-OK line.

footprint
  The bytes of /dev/shm that the ringcomm communicator maps, measured from
  /proc/self/maps (every mapping of a ``/dev/shm/ringcomm-*`` file, which
  shows as ``(deleted)`` once the segment is unlinked after connect): per
  file the largest extent any local rank maps (offset + length), summed over
  the distinct files all ranks map.  Measured right after connect and again
  after every collective with every algorithm and a send to every peer (so a
  transport that connects channels lazily is measured at its largest).
  Rank 0 prints ``SHM-FOOTPRINT ranks=P local=L chunk_bytes=C after_init=A
  after_calls=B per_local_rank=B/L``; the test compares B with its bound.

Both modes print ``SHM-FIT-DF total=T free=F`` of /dev/shm as seen by rank 0
before connecting (inside the test's private tmpfs when it made one).

Usage: shm_fit.py [collectives|footprint] [--bytes N] [--seed N]
"""

import argparse
import os
import sys

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, finish

SHM_PREFIX = "/dev/shm/ringcomm-"
MiB = 1 << 20


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("mode", nargs="?", default="collectives", choices=("collectives", "footprint"))
    p.add_argument("--bytes", type=int, default=1 << 20, help="bytes per rank of each call")
    p.add_argument("--seed", type=int, default=2027)
    return p.parse_args()


def df_shm():
    st = os.statvfs("/dev/shm")
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def ringcomm_mappings():
    """{path: largest extent (offset + length) this process maps} for every
    /dev/shm/ringcomm-* file in /proc/self/maps."""
    out = {}
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(None, 5)
            if len(fields) < 6 or not fields[5].startswith(SHM_PREFIX):
                continue
            path = fields[5].strip().replace(" (deleted)", "")
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            extent = int(fields[2], 16) + (hi - lo)
            out[path] = max(out.get(path, 0), extent)
    return out


def host_footprint():
    """Bytes of /dev/shm/ringcomm-* mapped by the ranks of this host (collective)."""
    host = os.uname().nodename
    every = WORLD.allgather((host, ringcomm_mappings()))
    files = {}
    for h, maps in every:
        if h != host:
            continue
        for path, extent in maps.items():
            files[path] = max(files.get(path, 0), extent)
    local = sum(1 for h, _ in every if h == host)
    return sum(files.values()), local, len(files)


def rank_data(seed, r, n):
    rng = np.random.default_rng([seed, r])
    return rng.integers(-2**31, 2**31 - 1, size=n, dtype=np.int32, endpoint=True)


def expect_equal(got, want, what):
    if not np.array_equal(got, want):
        bad = np.flatnonzero(got != want)
        raise AssertionError(f"rank {RANK}: {what}: {bad.size} wrong elements of {want.size}, "
                             f"first at {bad[:5]}: got {got[bad[:5]]} expected {want[bad[:5]]}")


def every_call(comm, nbytes, seed, check=True):
    """Every collective with every algorithm, and a ring shift by send/recv,
    on int32 data of nbytes per rank; results checked against numpy."""
    P = SIZE
    n = max(P, nbytes // 4)
    blk = n // P
    n = blk * P
    datas = [rank_data(seed, r, n) for r in range(P)]
    mine = datas[RANK]
    with np.errstate(over="ignore"):
        total = np.sum(np.stack(datas), axis=0, dtype=np.int32)
    cases = 0

    def done(got, want, what):
        nonlocal cases
        if check:
            expect_equal(got, want, what)
        cases += 1

    # alltoall: block j of rank r goes to rank j
    want_a2a = np.concatenate([datas[r][RANK * blk:(RANK + 1) * blk] for r in range(P)])
    for algo in list(ringcomm.algorithms("alltoall")) + ["auto"]:
        recv = np.full(n, 7, np.int32)
        comm.alltoall(mine, recv, algorithm=algo)
        done(recv, want_a2a, f"alltoall {algo} of {n * 4} bytes")
    for algo in list(ringcomm.algorithms()) + ["auto"]:
        buf = mine.copy()
        comm.allreduce(buf, algorithm=algo)
        done(buf, total, f"allreduce {algo} of {n * 4} bytes")
    small = mine[:2].copy()       # the one-line path
    comm.allreduce(small)
    done(small, total[:2], "allreduce of 8 bytes")
    for algo in list(ringcomm.algorithms("broadcast")) + ["auto"]:
        buf = mine.copy()
        comm.broadcast(buf, root=P - 1, algorithm=algo)
        done(buf, datas[P - 1], f"broadcast {algo} from {P - 1}")
    for algo in list(ringcomm.algorithms("reduce")) + ["auto"]:
        out = np.full(n, 7, np.int32)
        comm.reduce(mine, out=out, root=0, algorithm=algo)
        if RANK == 0:
            done(out, total, f"reduce {algo} to 0")
        else:
            cases += 1
    for algo in list(ringcomm.algorithms("allgather")) + ["auto"]:
        recv = np.full(blk * P, 7, np.int32)
        comm.allgather(mine[:blk], recv, algorithm=algo)
        done(recv, np.concatenate([d[:blk] for d in datas]), f"allgather {algo}")
    for algo in list(ringcomm.algorithms("reduce_scatter")) + ["auto"]:
        recv = np.full(blk, 7, np.int32)
        comm.reduce_scatter(mine, recv, algorithm=algo)
        done(recv, total[RANK * blk:(RANK + 1) * blk], f"reduce_scatter {algo}")
    recv = np.full(n, 7, np.int32) if RANK == 0 else None
    comm.gather(mine[:blk], recv, root=0)
    if RANK == 0:
        done(recv, np.concatenate([d[:blk] for d in datas]), "gather to 0")
    recv = np.full(blk, 7, np.int32)
    comm.scatter(datas[0] if RANK == 0 else None, recv, root=0)
    done(recv, datas[0][RANK * blk:(RANK + 1) * blk], "scatter from 0")
    comm.barrier()
    # point to point: a ring shift, then every peer (so every pair's p2p channel is used)
    right, left = (RANK + 1) % P, (RANK - 1) % P
    req = comm.isend(mine, right, tag=5)
    got = np.full(n, 7, np.int32)
    comm.recv(got, left, tag=5)
    req.wait()
    done(got, datas[left], f"send/recv of {n * 4} bytes from {left}")
    reqs = [comm.isend(mine[:blk], d, tag=6) for d in range(P) if d != RANK]
    for s in range(P):
        if s != RANK:
            got = np.full(blk, 7, np.int32)
            comm.recv(got, s, tag=6)
            done(got, datas[s][:blk], f"send/recv from {s}")
    for r in reqs:
        r.wait()
    comm.barrier()
    return cases, datas, total, want_a2a


def pattern(src, dst, n, salt):
    """Closed-form data of the message src -> dst (cheap at any size; a block
    delivered to the wrong rank or offset shows)."""
    return (np.arange(n, dtype=np.int64) * (src * SIZE + dst + 1) + salt).astype(np.int32)


def fill(comm):
    """Traffic that touches every slot of every channel of today's layout:
    an alltoall (pairwise: through the slots, not single copy) of 4 chunks
    (the default slot count) per block, and on the point-to-point lane five
    messages to every peer, each below the single-copy threshold (64 KiB)."""
    P, cases = SIZE, 0
    blk = min(4 * comm.chunk_bytes, 2 * MiB) // 4
    send = np.concatenate([pattern(RANK, d, blk, 1) for d in range(P)])
    recv = np.full(P * blk, 7, np.int32)
    comm.alltoall(send, recv, algorithm="pairwise")
    for s in range(P):
        expect_equal(recv[s * blk:(s + 1) * blk], pattern(s, RANK, blk, 1),
                     f"alltoall pairwise of {blk * 4} bytes per block, block from {s}")
        cases += 1
    n = min(comm.chunk_bytes, 60 * 1024) // 4
    msgs = [(d, k, pattern(RANK, d, n, 10 + k)) for k in range(5) for d in range(P) if d != RANK]
    reqs = [comm.isend(x, d, tag=20 + k) for d, k, x in msgs]
    for k in range(5):
        for s in range(P):
            if s != RANK:
                got = np.full(n, 7, np.int32)
                comm.recv(got, s, tag=20 + k)
                expect_equal(got, pattern(s, RANK, n, 10 + k), f"p2p message {k} from {s}")
                cases += 1
    for r in reqs:
        r.wait()
    comm.barrier()
    return cases


def connect_or_report():
    """The world communicator, or None.  Every rank's RingcommError text is
    gathered (through MPI) and printed by rank 0, one line per rank: lines of
    a kilobyte written by several ranks at once through mpirun's forwarding
    came out interleaved or not at all."""
    comm, line = None, None
    try:
        comm = ringcomm.Communicator.from_mpi(WORLD)
    except ringcomm.RingcommError as e:
        text = " ".join(str(e).split())
        line = f"SHM-FIT-INIT-ERROR rank={RANK} status={e.status_name}: {text}"
    lines = WORLD.gather(line, root=0)
    if RANK == 0:
        for text in lines:
            if text:
                print(text, flush=True)
    return comm


def main():
    a = parse()
    if RANK == 0:
        total, free = df_shm()
        print(f"SHM-FIT-DF total={total} free={free}", flush=True)
    WORLD.Barrier()
    comm = connect_or_report()
    got_comm = WORLD.allgather(comm is not None)
    if not all(got_comm):
        if comm is not None:
            comm.close()
        if RANK == 0:
            print(f"SHM-FIT-SUMMARY connected={sum(got_comm)} of {SIZE}", flush=True)
        WORLD.Barrier()
        return
    with comm:
        if a.mode == "footprint":
            after_init, local, nfiles = host_footprint()
            n, *_ = every_call(comm, a.bytes, a.seed, check=True)
            n += fill(comm)
            after_calls, _, nfiles2 = host_footprint()
            if RANK == 0:
                print(f"SHM-FOOTPRINT ranks={SIZE} local={local} chunk_bytes={comm.chunk_bytes} "
                      f"files={max(nfiles, nfiles2)} after_init={after_init} "
                      f"after_calls={after_calls} "
                      f"per_local_rank={max(after_init, after_calls) / local:.0f}", flush=True)
            assert max(after_init, after_calls) > 0 or SIZE == 1, \
                f"rank {RANK}: no {SHM_PREFIX}* mapping found in /proc/self/maps"
            finish("shm_fit-footprint", n + 1)
            return
        n, datas, total, want_a2a = every_call(comm, a.bytes, a.seed)
        n += fill(comm)
        # second oracle: MPI's own Alltoall and Allreduce on the same data
        mine = datas[RANK]
        recv = np.empty_like(mine)
        WORLD.Alltoall(mine, recv)
        expect_equal(recv, want_a2a, "MPI.Alltoall (oracle)")
        WORLD.Allreduce(mine, recv)
        expect_equal(recv, total, "MPI.Allreduce (oracle)")
        print(f"SHM-FIT-OK rank={RANK} checks={n} chunk_bytes={comm.chunk_bytes}", flush=True)
    finish("shm_fit", n + 2)


if __name__ == "__main__":
    sys.exit(main())
