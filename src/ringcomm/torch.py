"""The torch.distributed backend "ringcomm" (CPU tensors).

    import ringcomm.torch                      # registers the backend
    torch.distributed.init_process_group("ringcomm")

Works under torchrun (rendezvous through the Store torch hands the backend)
and under mpirun: when this module is imported in a process started by an
MPI launcher and RANK / WORLD_SIZE are not set, it fills RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT from MPI (rank 0
picks a free port; one mpi4py broadcast), so torch's default ``env://``
rendezvous works unchanged.  The import is then collective: every rank must
import this module.

Every operation runs through ringcomm's C collectives on the tensors' own
memory (a contiguous copy for non-contiguous tensors, copied back).

Completion model (docs/design.md, "torch backend"): collectives complete
inside the call, with the GIL released, also when ``async_op=True``; the
returned Work is already complete and its future already holds the result.
So every error - argument errors before anything is sent, and communication
errors (mismatch, timeout, lost peer) - is raised by the call itself, and a
future is never completed with an exception (which kills a DDP process in
torch 2.13).  Point-to-point operations (send, recv, recv_anysource,
batch_isend_irecv) are truly asynchronous, as they must be (two ranks that
both send first would otherwise wait for each other): their Work wraps a
ringcomm Request; wait() waits for it, get_future() hands it to one watcher
thread per group that completes the future.

DDP communication hooks: allreduce_hook, bf16_allreduce_hook,
fp16_allreduce_hook (the 16-bit ones all-reduce in 16 bits; ringcomm's 16-bit
kernels accumulate each addition in float32).
"""
import math
import os
import queue
import threading
from datetime import timedelta

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import AllreduceOptions, ReduceOp
from torch.futures import Future

from ringcomm import _core, bootstrap

__all__ = ["ProcessGroupRingcomm", "allreduce_hook", "bf16_allreduce_hook", "fp16_allreduce_hook",
           "BACKEND", "stragglers", "communicator"]

BACKEND = "ringcomm"

_R = ReduceOp.RedOpType
_PREMUL = _R.PREMUL_SUM
_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_INTS = (torch.int8, torch.uint8, torch.int32, torch.int64)
_SUPPORTED = _FLOATS + _INTS + (torch.bool,)
_SUPPORTED_TEXT = "float32, float64, float16, bfloat16, int8, uint8, int32, int64, bool"

# (dtype, RedOpType) -> ringcomm op name.  bool reduces as uint8 0/1:
# sum/max/bor are a logical or, product/min/band a logical and (gloo's results).
_OPS = {}
for _dt in _FLOATS:
    _OPS.update({(_dt, _R.SUM): "sum", (_dt, _R.PRODUCT): "prod", (_dt, _R.MIN): "min",
                 (_dt, _R.MAX): "max", (_dt, _R.AVG): "avg", (_dt, _PREMUL): "sum"})
for _dt in _INTS:
    _OPS.update({(_dt, _R.SUM): "sum", (_dt, _R.PRODUCT): "prod", (_dt, _R.MIN): "min",
                 (_dt, _R.MAX): "max", (_dt, _R.BAND): "band", (_dt, _R.BOR): "bor",
                 (_dt, _R.BXOR): "bxor"})
_OPS.update({(torch.bool, _R.SUM): "max", (torch.bool, _R.MAX): "max",
             (torch.bool, _R.BOR): "max", (torch.bool, _R.PRODUCT): "min",
             (torch.bool, _R.MIN): "min", (torch.bool, _R.BAND): "min",
             (torch.bool, _R.BXOR): "bxor"})
del _dt
# The hot path's table: dtype -> {RedOpType value (int) -> name}.  pybind11
# enums compare slowly and are new objects on every access, ints are not.
_OPS_BY_DTYPE = {}
for (_dt, _rop), _name in _OPS.items():
    _OPS_BY_DTYPE.setdefault(_dt, {})[_rop.value] = _name
del _dt, _rop, _name
_PREMUL_VALUE = _PREMUL.value
_NO_OPS = {}
_BOOL = torch.bool
_UINT8 = torch.uint8

# Reserved ringcomm tag for the point-to-point messages of unequal all-to-all
# (above the user range [0, TAG_UB] and clear of split's tags from 2**30).
_ALLTOALLV_TAG = (1 << 30) + (1 << 29)

_NO_TIMEOUT = timedelta(0)


# ---------------------------------------------------------------- errors

_ARG_NAMES = (("sendbuf:", "input:"), ("recvbuf:", "output:"), ("buf:", "tensor:"))


def _rename(op, exc):
    """A binding argument error, re-raised with the torch-level names."""
    text = str(exc)
    for a, b in _ARG_NAMES:
        if text.startswith(a):
            text = b + text[len(a):]
            break
    return type(exc)("ringcomm %s: %s" % (op, text))


def _bad_dtype(op, t):
    if not isinstance(t, torch.Tensor):
        return TypeError("ringcomm %s: expected a torch.Tensor, got %s" % (op, type(t).__name__))
    if t.device.type != "cpu":
        return ValueError("ringcomm %s: expected a CPU tensor, got one on %s (ringcomm is a CPU "
                          "backend; use nccl for CUDA)" % (op, t.device))
    return TypeError("ringcomm %s: unsupported dtype %s (supported: %s)"
                     % (op, t.dtype, _SUPPORTED_TEXT))


def _op_name(op, t, redop):
    """ringcomm's name of the reduction of `redop` on t's dtype (ValueError if none)."""
    name = _OPS.get((t.dtype, redop.op))
    if name is None:
        if t.dtype not in _SUPPORTED:
            raise _bad_dtype(op, t)
        raise ValueError("ringcomm %s: reduce op %s is not supported on %s (floating types: "
                         "SUM, PRODUCT, MIN, MAX, AVG, PREMUL_SUM; integer types: SUM, PRODUCT, "
                         "MIN, MAX, BAND, BOR, BXOR; bool: SUM, PRODUCT, MIN, MAX, BAND, BOR, BXOR)"
                         % (op, redop.op.name, t.dtype))
    return name


def _one(tensors, op):
    if len(tensors) != 1:
        raise ValueError("ringcomm %s: expected a list of exactly one tensor (one CPU tensor per "
                         "process), got %d" % (op, len(tensors)))
    return tensors[0]


def _raw(t):
    """The tensor ringcomm sees: bool as uint8 (same bytes)."""
    return t.view(torch.uint8) if t.dtype is torch.bool else t


def _check_tensor(op, t):
    if not isinstance(t, torch.Tensor) or t.dtype not in _SUPPORTED or t.device.type != "cpu":
        raise _bad_dtype(op, t)


def _rows(t):
    """A contiguous tensor as a 2-D view: its first dimension by the rest."""
    if t.dim() == 0:
        return t.view(1, 1)
    return t.view(t.shape[0], math.prod(t.shape[1:]))


def _premul(t, redop):
    """PREMUL_SUM: the contribution scaled by the op's factor (a number or a tensor)."""
    f = redop.factor
    if isinstance(f, torch.Tensor):
        f = f.to(torch.float64).item()
    return f


# ---------------------------------------------------------------- Work

class _Work(dist.Work):
    """A completed operation: wait() returns at once, the future holds `result`."""

    def __init__(self, result):
        super().__init__()
        self._result = result
        self._fut = None

    def wait(self, timeout=_NO_TIMEOUT):
        return True

    def is_completed(self):
        return True

    def is_success(self):
        return True

    def exception(self):
        return None

    def result(self):
        return self._result

    def synchronize(self):
        pass

    def get_future(self):
        if self._fut is None:
            self._fut = Future()
            self._fut.set_result(self._result)
        return self._fut

    def get_future_result(self):
        return self.get_future()


class _P2PWork(dist.Work):
    """A pending send or receive: a ringcomm Request, finished by wait() or
    by the group's watcher thread (when someone asked for the future)."""

    def __init__(self, pg, req, result, post=None):
        super().__init__()
        self._pg = pg
        self._req = req
        self._result = result
        self._post = post            # copy-back of a non-contiguous receive
        self._lock = threading.Lock()
        self._done = False
        self._exc = None
        self._fut = None
        self._source = -1

    def _finish(self, timeout=None):
        if self._done:
            if self._exc is not None:
                raise self._exc
            return
        try:
            src = self._req.wait(timeout)
        except TimeoutError:
            raise
        except BaseException as e:
            with self._lock:
                if not self._done:
                    self._exc, self._done = e, True
            raise
        with self._lock:
            if not self._done:
                if isinstance(src, int):
                    self._source = src
                if self._post is not None:
                    self._post()
                self._done = True

    def wait(self, timeout=_NO_TIMEOUT):
        secs = None
        if timeout is not None and timeout != _NO_TIMEOUT:
            secs = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        self._finish(secs)
        return True

    def is_completed(self):
        if not self._done and self._req.done:
            try:
                self._finish()          # done: no wait; runs the copy-back
            except Exception:
                pass                    # recorded: is_success() / exception()
        return self._done

    def is_success(self):
        return self._done and self._exc is None

    def exception(self):
        return self._exc

    def result(self):
        return self._result

    def synchronize(self):
        pass

    def _source_rank(self):
        self._finish()
        return self._source

    def source_rank(self):
        return self._source_rank()

    def get_future(self):
        with self._lock:
            if self._fut is None:
                self._fut = Future()
                if self._done and self._exc is None:
                    self._fut.set_result(self._result)
                else:
                    self._pg._watch(self)
        return self._fut

    def _complete_future(self):
        """Watcher thread: finish, then set the future (its callbacks run here)."""
        try:
            self._finish()
        except BaseException as e:
            self._fut.set_exception(e)
        else:
            self._fut.set_result(self._result)


# What the group's methods return when the caller asked for a blocking call
# (opts.asyncOp False, as the torch.distributed functions set it without
# async_op): they only call wait().
_DONE = _Work(None)
_DEFAULT_AR = AllreduceOptions()


# ---------------------------------------------------------------- the group

class ProcessGroupRingcomm(dist.ProcessGroup):
    """A torch.distributed process group over one ringcomm Communicator."""

    def __init__(self, comm, group_name=None):
        super().__init__(comm.rank, comm.size)
        self._comm = comm
        self._rank = comm.rank
        self._size = comm.size
        self._watcher = None
        self._watch_q = None
        self._watch_lock = threading.Lock()
        self._group_name = group_name or ""
        self._group_desc = "undefined"

    # -- identity.  A ProcessGroup without C++ backends keeps no name itself:
    # torch's trampoline asks these (group_name, group_desc, _set_group_name,
    # _set_group_desc; functional collectives and DeviceMesh resolve groups
    # by name).
    def getGroupName(self):
        return self._group_name

    def setGroupName(self, name):
        self._group_name = name

    def getGroupDesc(self):
        return self._group_desc

    def setGroupDesc(self, desc):
        self._group_desc = desc

    def getBackendName(self):
        return BACKEND

    def name(self):
        return BACKEND

    def rank(self):
        return self._rank

    def size(self):
        return self._size

    def __repr__(self):
        return "<ProcessGroupRingcomm rank %d of %d, group %r>" % (self._rank, self._size,
                                                                   self.group_name)

    @property
    def communicator(self):
        """The underlying ringcomm.Communicator."""
        return self._comm

    def shutdown(self):
        """Close the communicator (destroy_process_group calls this)."""
        if self._watch_q is not None:
            self._watch_q.put(None)
        self._comm.close()

    def abort(self):
        self._comm.close()

    # -- helpers
    def _watch(self, work):
        with self._watch_lock:
            if self._watcher is None:
                self._watch_q = queue.SimpleQueue()
                self._watcher = threading.Thread(target=self._watch_loop, args=(self._watch_q,),
                                                 name="ringcomm-futures", daemon=True)
                self._watcher.start()
        self._watch_q.put(work)

    @staticmethod
    def _watch_loop(q):
        while True:
            work = q.get()
            if work is None:
                return
            work._complete_future()

    # -- all-reduce family
    def allreduce(self, tensors, opts=_DEFAULT_AR):
        # The hot path (DDP, dist.all_reduce): one dict lookup for dtype and
        # op, no Work object when the caller waits anyway (asyncOp False:
        # the dist.* functions only call wait()).  The device check is the
        # binding's (its error is renamed below).
        if len(tensors) != 1:
            _one(tensors, "allreduce")
        t = tensors[0]
        redop = opts.reduceOp
        rop = redop.op.value
        name = _OPS_BY_DTYPE.get(t.dtype, _NO_OPS).get(rop)
        if name is None:
            _check_tensor("allreduce", t)
            name = _op_name("allreduce", t, redop)
        if rop == _PREMUL_VALUE:
            t.mul_(_premul(t, redop))
        try:
            if t.is_contiguous():
                self._comm.allreduce(t if t.dtype is not _BOOL else t.view(_UINT8), None, name)
            else:
                c = t.contiguous()
                self._comm.allreduce(_raw(c), None, name)
                t.copy_(c)
        except (ValueError, TypeError) as e:
            raise _rename("allreduce", e) from None
        return _Work(tensors) if opts.asyncOp else _DONE

    def allreduce_coalesced(self, tensors, opts=None):
        """One all-reduce per dtype over the flattened tensors (as gloo does)."""
        redop = opts.reduceOp if opts is not None else ReduceOp.SUM
        by_dtype = {}
        for t in tensors:
            _check_tensor("allreduce_coalesced", t)
            by_dtype.setdefault(t.dtype, []).append(t)
        for ts in by_dtype.values():
            name = _op_name("allreduce_coalesced", ts[0], redop)
            flat = torch.cat([t.reshape(-1) for t in ts]) if len(ts) > 1 else \
                ts[0].reshape(-1).contiguous()
            if name == "sum" and redop.op == _PREMUL:
                flat.mul_(_premul(flat, redop))
            self._comm.allreduce(_raw(flat), op=name)
            off = 0
            for t in ts:
                n = t.numel()
                t.copy_(flat[off:off + n].view(t.shape))
                off += n
        return _Work(tensors)

    def reduce(self, tensors, opts=None):
        t = _one(tensors, "reduce")
        redop = opts.reduceOp if opts is not None else ReduceOp.SUM
        root = opts.rootRank if opts is not None else 0
        _check_tensor("reduce", t)
        name = _op_name("reduce", t, redop)
        try:
            src = t
            if name == "sum" and redop.op == _PREMUL:
                src = t * _premul(t, redop)
            elif not t.is_contiguous():
                src = t.contiguous()
            if src is t:
                self._comm.reduce(_raw(t), op=name, root=root)
            else:
                out = src if self._rank == root else None
                self._comm.reduce(_raw(src), op=name, root=root)
                if out is not None:
                    t.copy_(out)
        except (ValueError, TypeError) as e:
            raise _rename("reduce", e) from None
        return _Work(tensors)

    def broadcast(self, tensors, opts=None):
        t = _one(tensors, "broadcast")
        root = opts.rootRank if opts is not None else 0
        _check_tensor("broadcast", t)
        try:
            if t.is_contiguous():
                self._comm.broadcast(t, root=root)
            else:
                c = t.contiguous()
                self._comm.broadcast(c, root=root)
                if self._rank != root:
                    t.copy_(c)
        except (ValueError, TypeError) as e:
            raise _rename("broadcast", e) from None
        return _Work(tensors)

    # -- gather family
    def _blocks(self, op, tensors, like, what):
        """Check a list of `size` tensors shaped like `like`."""
        if len(tensors) != self._size:
            raise ValueError("ringcomm %s: %s: expected a list of %d tensors (the group size), "
                             "got %d" % (op, what, self._size, len(tensors)))
        for i, x in enumerate(tensors):
            if not isinstance(x, torch.Tensor) or x.dtype != like.dtype or \
                    x.numel() != like.numel():
                raise ValueError(
                    "ringcomm %s: %s[%d]: expected a %s tensor of %d elements (like the input), "
                    "got %s" % (op, what, i, like.dtype, like.numel(),
                                "a %s tensor of %d elements" % (x.dtype, x.numel())
                                if isinstance(x, torch.Tensor) else type(x).__name__))

    def allgather(self, output_tensors, input_tensors, opts=None):
        inp = _one(input_tensors, "allgather")
        outs = _one(output_tensors, "allgather")
        _check_tensor("allgather", inp)
        self._blocks("allgather", outs, inp, "output_tensors")
        flat = torch.empty((self._size * inp.numel(),), dtype=inp.dtype)
        try:
            self._comm.allgather(inp.contiguous(), flat)
        except (ValueError, TypeError) as e:
            raise _rename("allgather", e) from None
        for o, part in zip(outs, flat.chunk(self._size) if inp.numel() else
                           [flat] * self._size):
            o.copy_(part.view(o.shape))
        return _Work(output_tensors)

    def all_gather_single(self, output, input, opts=None):
        _check_tensor("all_gather_single", input)
        _check_tensor("all_gather_single", output)
        try:
            if output.is_contiguous():
                self._comm.allgather(input.contiguous(), output)
            else:
                c = torch.empty(output.shape, dtype=output.dtype)
                self._comm.allgather(input.contiguous(), c)
                output.copy_(c)
        except (ValueError, TypeError) as e:
            raise _rename("all_gather_single", e) from None
        return _Work([output])

    _allgather_base = all_gather_single

    def allgather_coalesced(self, output_lists, input_tensors, opts=None):
        """output_lists[r][k] receives input_tensors[k] of rank r (gloo's layout)."""
        if len(output_lists) != self._size or \
                any(len(o) != len(input_tensors) for o in output_lists):
            raise ValueError("ringcomm allgather_coalesced: expected %d output lists (the group "
                             "size) of %d tensors (one per input)"
                             % (self._size, len(input_tensors)))
        for k, inp in enumerate(input_tensors):
            self.allgather([[o[k] for o in output_lists]], [inp], opts)
        return _Work(output_lists)

    def all_gather_single_coalesced(self, outputs, inputs, opts=None):
        if len(outputs) != len(inputs):
            raise ValueError("ringcomm all_gather_single_coalesced: %d outputs for %d inputs"
                             % (len(outputs), len(inputs)))
        for o, i in zip(outputs, inputs):
            self.all_gather_single(o, i, opts)
        return _Work(outputs)

    allgather_into_tensor_coalesced = all_gather_single_coalesced

    def gather(self, output_tensors, input_tensors, opts=None):
        inp = _one(input_tensors, "gather")
        root = opts.rootRank if opts is not None else 0
        _check_tensor("gather", inp)
        flat = None
        if self._rank == root:
            outs = _one(output_tensors, "gather")
            self._blocks("gather", outs, inp, "output_tensors")
            flat = torch.empty((self._size * inp.numel(),), dtype=inp.dtype)
        elif output_tensors and any(len(o) for o in output_tensors):
            raise ValueError("ringcomm gather: output tensors are only for the root (rank %d)"
                             % root)
        try:
            self._comm.gather(inp.contiguous(), flat, root=root)
        except (ValueError, TypeError) as e:
            raise _rename("gather", e) from None
        if flat is not None:
            for o, part in zip(output_tensors[0], flat.chunk(self._size) if inp.numel() else
                               [flat] * self._size):
                o.copy_(part.view(o.shape))
        return _Work(output_tensors)

    def scatter(self, output_tensors, input_tensors, opts=None):
        out = _one(output_tensors, "scatter")
        root = opts.rootRank if opts is not None else 0
        _check_tensor("scatter", out)
        flat = None
        if self._rank == root:
            ins = _one(input_tensors, "scatter")
            self._blocks("scatter", ins, out, "input_tensors")
            flat = torch.cat([x.reshape(-1) for x in ins])
        elif input_tensors and any(len(i) for i in input_tensors):
            raise ValueError("ringcomm scatter: input tensors are only for the root (rank %d)"
                             % root)
        try:
            if out.is_contiguous():
                self._comm.scatter(flat, out, root=root)
            else:
                c = torch.empty(out.shape, dtype=out.dtype)
                self._comm.scatter(flat, c, root=root)
                out.copy_(c)
        except (ValueError, TypeError) as e:
            raise _rename("scatter", e) from None
        return _Work(output_tensors)

    # -- reduce-scatter family
    def reduce_scatter(self, output_tensors, input_tensors, opts=None):
        out = _one(output_tensors, "reduce_scatter")
        ins = _one(input_tensors, "reduce_scatter")
        redop = opts.reduceOp if opts is not None else ReduceOp.SUM
        _check_tensor("reduce_scatter", out)
        name = _op_name("reduce_scatter", out, redop)
        self._blocks("reduce_scatter", ins, out, "input_tensors")
        flat = torch.cat([x.reshape(-1) for x in ins])
        if name == "sum" and redop.op == _PREMUL:
            flat.mul_(_premul(flat, redop))
        self._reduce_scatter(out, flat, name)
        return _Work(output_tensors)

    def _reduce_scatter(self, out, flat, name):
        try:
            if out.is_contiguous():
                self._comm.reduce_scatter(_raw(flat), _raw(out), op=name)
            else:
                c = torch.empty(out.shape, dtype=out.dtype)
                self._comm.reduce_scatter(_raw(flat), _raw(c), op=name)
                out.copy_(c)
        except (ValueError, TypeError) as e:
            raise _rename("reduce_scatter", e) from None

    def reduce_scatter_single(self, output, input, opts=None):
        redop = opts.reduceOp if opts is not None else ReduceOp.SUM
        _check_tensor("reduce_scatter_single", output)
        _check_tensor("reduce_scatter_single", input)
        name = _op_name("reduce_scatter_single", output, redop)
        if name == "sum" and redop.op == _PREMUL:
            input = input * _premul(input, redop)
        self._reduce_scatter(output, input.contiguous(), name)
        return _Work([output])

    _reduce_scatter_base = reduce_scatter_single

    def reduce_scatter_single_coalesced(self, outputs, inputs, opts=None):
        if len(outputs) != len(inputs):
            raise ValueError("ringcomm reduce_scatter_single_coalesced: %d outputs for %d inputs"
                             % (len(outputs), len(inputs)))
        for o, i in zip(outputs, inputs):
            self.reduce_scatter_single(o, i, opts)
        return _Work(outputs)

    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced

    # -- all-to-all
    def alltoall(self, output_tensors, input_tensors, opts=None):
        p = self._size
        if len(output_tensors) != p or len(input_tensors) != p:
            raise ValueError("ringcomm alltoall: expected %d output and %d input tensors (the "
                             "group size), got %d and %d" % (p, p, len(output_tensors),
                                                              len(input_tensors)))
        for t in list(output_tensors) + list(input_tensors):
            _check_tensor("alltoall", t)
        dt = input_tensors[0].dtype
        if any(t.dtype != dt for t in list(output_tensors) + list(input_tensors)):
            raise TypeError("ringcomm alltoall: every input and output tensor must have one dtype")
        n = input_tensors[0].numel()
        if all(t.numel() == n for t in list(output_tensors) + list(input_tensors)):
            flat_in = torch.cat([t.reshape(-1) for t in input_tensors])
            flat_out = torch.empty_like(flat_in)
            self._comm.alltoall(flat_in, flat_out)
            for o, part in zip(output_tensors, flat_out.chunk(p) if n else [flat_out] * p):
                o.copy_(part.view(o.shape))
        else:
            outs = [o if o.is_contiguous() else torch.empty(o.shape, dtype=o.dtype)
                    for o in output_tensors]
            self._alltoallv([t.contiguous() for t in input_tensors], outs)
            for o, c in zip(output_tensors, outs):
                if o is not c:
                    o.copy_(c)
        return _Work(output_tensors)

    def _alltoallv(self, sends, recvs):
        """Block i of sends goes to rank i, block i of recvs comes from it:
        point-to-point messages on a reserved tag (all receives posted
        first), the own block copied locally.  A receive whose count
        differs from the sender's raises RC_ERR_MISMATCH on the receiver
        (and on the sender when it hears of it in time)."""
        me, comm = self._rank, self._comm
        if recvs[me].numel() != sends[me].numel():
            raise ValueError("ringcomm all_to_all: this rank sends itself %d elements but "
                             "expects %d" % (sends[me].numel(), recvs[me].numel()))
        reqs = []
        try:
            for i in range(self._size):
                if i != me:
                    reqs.append(comm.irecv(_raw(recvs[i]), i, _ALLTOALLV_TAG, _reserved=True))
            for k in range(1, self._size):
                i = (me + k) % self._size
                reqs.append(comm.isend(_raw(sends[i]), i, _ALLTOALLV_TAG, _reserved=True))
        except (ValueError, TypeError) as e:
            for r in reqs:
                r.wait()
            raise _rename("all_to_all", e) from None
        recvs[me].copy_(sends[me])
        for r in reqs:
            r.wait()

    def all_to_all_single(self, output, input, output_split_sizes, input_split_sizes,
                          opts=None):
        p = self._size
        _check_tensor("all_to_all_single", output)
        _check_tensor("all_to_all_single", input)
        if output.dtype != input.dtype:
            raise TypeError("ringcomm all_to_all_single: output dtype %s != input dtype %s"
                            % (output.dtype, input.dtype))
        if not output_split_sizes and not input_split_sizes:
            try:
                oc = output if output.is_contiguous() else torch.empty(output.shape,
                                                                       dtype=output.dtype)
                self._comm.alltoall(_raw(input.contiguous()), _raw(oc))
                if oc is not output:
                    output.copy_(oc)
            except (ValueError, TypeError) as e:
                raise _rename("all_to_all_single", e) from None
            return _Work([output])
        osz = list(output_split_sizes) or [output.shape[0] // p] * p
        isz = list(input_split_sizes) or [input.shape[0] // p] * p
        if len(osz) != p or len(isz) != p:
            raise ValueError("ringcomm all_to_all_single: split sizes need %d entries (the group "
                             "size), got %d output and %d input" % (p, len(osz), len(isz)))
        if sum(osz) != (output.shape[0] if output.dim() else 1) or \
                sum(isz) != (input.shape[0] if input.dim() else 1):
            raise ValueError("ringcomm all_to_all_single: split sizes sum to %d (output) and %d "
                             "(input) rows, the tensors have %d and %d"
                             % (sum(osz), sum(isz), output.shape[0], input.shape[0]))
        o2 = output if output.is_contiguous() else torch.empty(output.shape, dtype=output.dtype)
        i2 = input.contiguous()
        recvs = list(_rows(o2).split(osz))
        sends = list(_rows(i2).split(isz))
        self._alltoallv(sends, recvs)
        if o2 is not output:
            output.copy_(o2)
        return _Work([output])

    alltoall_base = all_to_all_single

    # -- synchronisation
    def barrier(self, opts=None):
        self._comm.barrier()
        return _Work(None)

    # -- point to point
    def _p2p_tensor(self, tensors, op):
        t = _one(tensors, op)
        _check_tensor(op, t)
        return t

    def send(self, tensors, dst, tag):
        t = self._p2p_tensor(tensors, "send")
        try:
            req = self._comm.isend(_raw(t.contiguous()), dst, tag)
        except (ValueError, TypeError) as e:
            raise _rename("send", e) from None
        return _P2PWork(self, req, tensors)

    def _irecv(self, tensors, src, tag, op):
        t = self._p2p_tensor(tensors, op)
        c = t if t.is_contiguous() else torch.empty(t.shape, dtype=t.dtype)
        try:
            req = self._comm.irecv(_raw(c), src, tag)
        except (ValueError, TypeError) as e:
            raise _rename(op, e) from None
        return _P2PWork(self, req, tensors, None if c is t else (lambda: t.copy_(c)))

    def recv(self, tensors, src, tag):
        return self._irecv(tensors, src, tag, "recv")

    def recv_anysource(self, tensors, tag):
        return self._irecv(tensors, _core.ANY_SOURCE, tag, "recv_anysource")


# ---------------------------------------------------------------- creation

def _timeout_seconds(timeout):
    """torch's timeout, unless it is torch's default (then RINGCOMM_TIMEOUT rules)."""
    if timeout is None:
        return None
    default = getattr(dist, "default_pg_timeout", None)
    if default is not None and timeout == default:
        return None
    secs = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    return secs if secs > 0 else None


def _create(backend_opts, pg_options=None):
    """Backend creator (extended API): rendezvous through the group's store."""
    store, rank, size = backend_opts.store, backend_opts.group_rank, backend_opts.group_size
    comm = bootstrap.from_store(store, rank, size, timeout=_timeout_seconds(backend_opts.timeout),
                                key="ringcomm")
    return ProcessGroupRingcomm(comm, backend_opts.group_id)


def _fill_env_from_mpi():
    """Under an MPI launcher without torchrun's variables, set RANK, WORLD_SIZE,
    LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT from MPI, so that
    init_process_group's env:// rendezvous works.  Collective over
    MPI.COMM_WORLD (one allgather, one bcast)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    if not bootstrap.launched_by_mpi():
        return
    import socket

    from mpi4py import MPI
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    host = socket.gethostname()
    hosts = world.allgather(host)
    addr = port = None
    if rank == 0:
        if all(h == host for h in hosts):
            addr = "127.0.0.1"
        else:
            addr = os.environ.get("MASTER_ADDR") or socket.getfqdn()
        port = os.environ.get("MASTER_PORT")
        if not port:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("", 0))
                port = str(s.getsockname()[1])
    addr, port = world.bcast((addr, port), root=0)
    local = [r for r, h in enumerate(hosts) if h == host]
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(size))
    os.environ.setdefault("LOCAL_RANK", str(local.index(rank)))
    os.environ.setdefault("LOCAL_WORLD_SIZE", str(len(local)))
    os.environ["MASTER_ADDR"] = addr
    os.environ["MASTER_PORT"] = port


def communicator(group=None):
    """The ringcomm.Communicator under a process group of this backend (the
    default group when group is None)."""
    pg = group if group is not None else dist.distributed_c10d._get_default_group()
    if not isinstance(pg, ProcessGroupRingcomm):
        try:
            pg = pg._get_backend(torch.device("cpu"))
        except Exception:  # not a group with backends
            pass
    if not isinstance(pg, ProcessGroupRingcomm):
        raise ValueError("group: expected a process group of the %r backend, got %r"
                         % (BACKEND, group))
    return pg.communicator


def stragglers(group=None, reset=False):
    """comm.stragglers() of the group's communicator (collective over the
    group): who the others waited for, the same report on every rank."""
    return communicator(group).stragglers(reset=reset)


def _register():
    if BACKEND.upper() not in dist.Backend._plugins:
        dist.Backend.register_backend(BACKEND, _create, extended_api=True, devices=["cpu"])


_register()
_fill_env_from_mpi()


# ---------------------------------------------------------------- DDP hooks
# (not named bf16_compress_hook: DDP refuses that name without CUDA and NCCL)

def allreduce_hook(process_group, bucket) -> Future[torch.Tensor]:
    """DDP communication hook: average the bucket with one ringcomm all-reduce
    (op AVG: sum, then divide by the group size, in the bucket's dtype)."""
    buf = bucket.buffer()
    dist.all_reduce(buf, op=dist.ReduceOp.AVG, group=process_group)
    fut = Future()
    fut.set_result(buf)
    return fut


def _allreduce_in(dtype, process_group, bucket):
    buf = bucket.buffer()
    small = buf.to(dtype)
    dist.all_reduce(small, op=dist.ReduceOp.AVG, group=process_group)
    buf.copy_(small)
    fut = Future()
    fut.set_result(buf)
    return fut


def bf16_allreduce_hook(process_group, bucket) -> Future[torch.Tensor]:
    """DDP communication hook: all-reduce the bucket in bfloat16 (half the
    bytes; every addition is computed in float32 and rounded once), average,
    and write the result back in the bucket's dtype."""
    return _allreduce_in(torch.bfloat16, process_group, bucket)


def fp16_allreduce_hook(process_group, bucket) -> Future[torch.Tensor]:
    """As bf16_allreduce_hook, in float16."""
    return _allreduce_in(torch.float16, process_group, bucket)
