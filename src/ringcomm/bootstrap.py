"""Bootstrap: who is who, and the exchange of address blobs.

The C core hands out one address blob per rank and connects with every
rank's blob (two-phase connect, as gloo does).  This module moves the blobs:
through mpi4py under mpirun, through a torch.distributed Store under torchrun,
or nowhere for a single process.  C never calls back into Python.
"""
import os
import secrets

from ringcomm import _core

# Environment variables that MPI launchers set in every rank.
_MPI_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
            "HYDRA_CONTROL_FD", "PMI_FD")


def launched_by_mpi():
    """True when this process was started by mpirun/mpiexec (or MPI is already initialised)."""
    if any(v in os.environ for v in _MPI_ENV):
        return True
    import sys
    mpi = sys.modules.get("mpi4py.MPI")
    return bool(mpi is not None and mpi.Is_initialized())


def _connect(rank, size, token, timeout, bcast_errors, allgather, mpi_comm=None):
    """Run the two phases; every rank raises if any rank failed.  mpi_comm:
    the mpi4py communicator whose ranks these are (the MPI transport talks
    on a duplicate of it)."""
    comm, err, addr, sock, ctl = None, None, b"", None, None
    try:
        comm = _core.Communicator._create(rank, size, token, timeout)
        if mpi_comm is not None and _core.HAVE_MPI:
            comm._set_mpi(mpi_comm.py2f())
        addr = comm._address()
        if size > 1:
            # the control socket shrink() finds the survivors through (shrink.py)
            from ringcomm import shrink
            sock, ctl = shrink.listen()
            comm._ft = {"sock": sock}
    except Exception as e:  # reported to every rank below
        err = _describe(rank, e)
    try:
        results = allgather((err, addr, ctl))
        errors = [r[0] for r in results if r[0]]
        if not errors:
            try:
                comm._connect(b"".join(r[1] for r in results))
            except Exception as e:
                err = _describe(rank, e)
            errors = [e for e in bcast_errors(err) if e]
    except BaseException:
        if comm is not None:
            comm.close()
        raise
    if errors:
        if comm is not None:
            comm.close()
        raise _core.RingcommError(errors[0][0], "communicator setup failed: " + _summary(errors))
    if sock is not None:
        comm._ft = {"sock": sock, "peers": [r[2] for r in results], "token": token}
    if size > 1 and comm.straggler_period > 0:
        # RINGCOMM_STRAGGLER (rank 0's, so every rank does this): host names
        # and clock offsets for the periodic line
        from ringcomm import stragglers
        stragglers.setup(comm)
    return comm


def _summary(errors, shown=7, clip=200):
    """The first failing rank's text in full, then the others' first `clip`
    characters (they usually repeat the first's cause), at most `shown` of
    them: one line stays readable at 128 ranks."""
    parts = [errors[0][1]]
    for _, text in errors[1:1 + shown]:
        parts.append(text if len(text) <= clip else text[:clip] + "...")
    if len(errors) > 1 + shown:
        parts.append("and %d more ranks" % (len(errors) - 1 - shown))
    return "; ".join(parts)


def _describe(rank, exc):
    status = getattr(exc, "status", -8)  # RC_ERR_INTERNAL for non-ringcomm errors
    return (status, "rank %d: %s" % (rank, exc))


_RC_ERR_TIMEOUT = -5  # rc_status_t (csrc/include/ringcomm.h)

_mpi_comms = None  # weakref.WeakSet of the communicators handed an MPI communicator


def _close_mpi_comms():
    """At exit, before mpi4py finalizes MPI: close the communicators that may
    hold MPI requests (MPI_Finalize with them open works, but MPI may warn)."""
    for comm in list(_mpi_comms or ()):
        comm.close()


def from_mpi(mpi_comm, timeout=None):
    """A ringcomm communicator over the ranks of an mpi4py communicator (the
    MPI transport, when built, talks on a duplicate of it)."""
    _core._check_timeout(timeout)
    rank, size = mpi_comm.Get_rank(), mpi_comm.Get_size()
    token = mpi_comm.bcast(secrets.token_hex(12) if rank == 0 else None, root=0)
    comm = _connect(rank, size, token, timeout, mpi_comm.allgather, mpi_comm.allgather,
                    mpi_comm=mpi_comm)
    comm._mpi4py = mpi_comm
    _track_mpi(comm)
    return comm


def _track_mpi(comm):
    global _mpi_comms
    if _core.HAVE_MPI:
        if _mpi_comms is None:
            import atexit
            import weakref
            _mpi_comms = weakref.WeakSet()
            # registered after mpi4py.MPI was imported: runs before its finalizer
            atexit.register(_close_mpi_comms)
        _mpi_comms.add(comm)


_store_comms = 0


def from_store(store, rank, size, timeout=None, prefix="ringcomm", *, key=None):
    """A communicator bootstrapped through a torch.distributed Store.

    The keys live under `prefix` plus a per-process counter, so one store can
    bootstrap several communicators when every rank creates them in the same
    order.  `key` replaces both when the store is already private to this
    communicator's ranks (torch's PrefixStore per process group): ranks that
    took part in different groups before then still agree on the keys."""
    global _store_comms
    _core._check_timeout(timeout)
    if key is None:
        _store_comms += 1
        key = "%s/%d" % (prefix, _store_comms)
    if rank == 0:
        store.set(key + "/token", secrets.token_hex(12))
    token = store.get(key + "/token").decode()
    rounds = [0]

    def allgather(obj):
        import pickle
        rounds[0] += 1
        k = "%s/ag%d" % (key, rounds[0])
        store.set("%s/%d" % (k, rank), pickle.dumps(obj))
        return [pickle.loads(store.get("%s/%d" % (k, r))) for r in range(size)]

    try:
        comm = _connect(rank, size, token, timeout, allgather, allgather)
    except _core.RingcommError:
        # every rank got the same errors: let them all read them first
        _store_done(store, key, rank, size, timeout, failed=True)
        raise
    try:
        _store_done(store, key, rank, size, timeout)
    except BaseException:
        comm.close()
        raise
    return comm


def _store_done(store, key, rank, size, timeout, failed=False):
    """The last round of a store bootstrap: every rank checks in after it has
    read its last key, and rank 0 returns only when all have (torch's
    init_process_group ends with such a barrier too, _store_based_barrier).
    Rank 0 may host the store's server (init() without torchrun's agent
    store), and the server goes when rank 0 drops it: returning first cut
    the others off in the middle of the last round ("Failed to recv, got 0
    bytes").  The others need not wait: nobody reads the store after
    checking in.  After a failed setup (`failed`) a rank that never checks in
    is not reported: the setup error is the one raised."""
    from datetime import timedelta
    store.set("%s/done/%d" % (key, rank), b"1")
    if rank != 0:
        return
    keys = ["%s/done/%d" % (key, r) for r in range(size)]
    try:
        if timeout:
            store.wait(keys, timedelta(seconds=timeout))
        else:
            store.wait(keys)  # the store's own timeout
    except Exception as e:
        if failed:
            return
        missing = [r for r in range(size) if not store.check([keys[r]])]
        raise _core.RingcommError(
            _RC_ERR_TIMEOUT, "rank 0: communicator setup through the store: rank(s) %s "
            "connected but never checked in after the last round (%s)"
            % (", ".join(map(str, missing)) or "?", e)) from None


def init(timeout=None):
    """The world communicator: from MPI.COMM_WORLD under mpirun; from RANK,
    WORLD_SIZE, MASTER_ADDR and MASTER_PORT under torchrun; else one rank."""
    _core._check_timeout(timeout)
    if launched_by_mpi():
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise ImportError("ringcomm.init(): started by an MPI launcher but mpi4py is not "
                              "installed (pip install mpi4py)") from e
        return from_mpi(MPI.COMM_WORLD, timeout=timeout)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1:
        rank = int(os.environ["RANK"])
        from datetime import timedelta

        import torch.distributed as dist
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        store = dist.TCPStore(os.environ.get("MASTER_ADDR", "127.0.0.1"),
                              int(os.environ["MASTER_PORT"]), size,
                              is_master=(rank == 0 and not agent_store),
                              timeout=timedelta(seconds=timeout or 300))
        return from_store(store, rank, size, timeout=timeout)
    return _connect(0, 1, secrets.token_hex(12), timeout, lambda e: [e], lambda o: [o])


# Tags from 2**30 up are ringcomm's own (split's address exchange).
_SPLIT_TAG = 1 << 30


def split(parent, color, key=0, timeout=None):
    """MPI_Comm_split over a ringcomm communicator: ranks passing the same
    color form a new communicator, ordered by (key, parent rank), with its
    own shared-memory resources.  Collective over `parent`; color None (or
    negative) joins none and returns None.  The members exchange their
    address blobs with tagged point-to-point messages over `parent`, so
    groups do not wait for each other."""
    import numpy as np
    if color is not None and not isinstance(color, (int, np.integer)):
        raise TypeError("color: expected an int or None, got %r" % (color,))
    if not isinstance(key, (int, np.integer)):
        raise TypeError("key: expected an int, got %r" % (key,))
    _core._check_timeout(timeout)
    c = -1 if color is None or color < 0 else int(color)
    pairs = np.empty(2 * parent.size, np.int64)
    parent.allgather(np.array([c, key], np.int64), pairs)
    parent._nsplit = getattr(parent, "_nsplit", 0) + 1
    pairs = pairs.reshape(-1, 2)
    members = [r for _, r in sorted((int(pairs[r, 1]), r) for r in range(parent.size)
                                    if pairs[r, 0] == c)]
    me = parent.rank
    # A communicator made from MPI keeps MPI: its MPI communicator is split
    # alongside (every parent rank takes part), so the members can use the
    # MPI transport between hosts too.  Key: the position in `members`
    # (ringcomm's keys are 64-bit, MPI's are int; the order is the same).
    sub_mpi = None
    if parent._mpi4py is not None and _core.HAVE_MPI:
        from mpi4py import MPI
        sub_mpi = parent._mpi4py.Split(c if c >= 0 else MPI.UNDEFINED,
                                       members.index(me) if c >= 0 else 0)
    if c < 0:
        return None
    try:
        comm = _split_connect(parent, members, me, timeout, sub_mpi)
    except BaseException:
        if sub_mpi is not None:
            sub_mpi.Free()
        raise
    if sub_mpi is not None:
        comm._mpi4py, comm._mpi4py_own = sub_mpi, True
        _track_mpi(comm)
    return comm


def _split_connect(parent, members, me, timeout, sub_mpi):
    """split's connect: the members' address exchange over `parent`."""
    import pickle

    import numpy as np
    rounds = [0]
    base = _SPLIT_TAG + (parent._nsplit % (1 << 20)) * 4

    def allgather(obj):
        tag = base + rounds[0]
        rounds[0] += 1
        data = np.frombuffer(pickle.dumps(obj), np.uint8)
        length = np.array([data.size], np.int64)
        sends = []
        for m in members:
            if m != me:
                sends.append(parent.isend(length, m, tag, _reserved=True))
                sends.append(parent.isend(data, m, tag, _reserved=True))
        out = []
        for m in members:
            if m == me:
                out.append(obj)
                continue
            n = np.empty(1, np.int64)
            parent.recv(n, m, tag, _reserved=True)
            buf = np.empty(int(n[0]), np.uint8)
            parent.recv(buf, m, tag, _reserved=True)
            out.append(pickle.loads(buf.tobytes()))
        for s in sends:
            s.wait()
        return out

    token = allgather(secrets.token_hex(12))[0]
    return _connect(members.index(me), len(members), token, timeout, allgather, allgather,
                    mpi_comm=sub_mpi)
