# cython: language_level=3, boundscheck=False, wraparound=False, embedsignature=True
"""Thin binding over the C core (csrc/): buffer -> (pointer, count, dtype),
status -> exception, every communicating call made with the GIL released.
Argument checks run here, under the GIL, before any communication."""

cimport cython
from cpython.buffer cimport (PyObject_CheckBuffer, PyObject_GetBuffer, PyBuffer_Release, PyBuffer_IsContiguous,
                             PyBUF_RECORDS_RO)
from libc.stdint cimport uint32_t, uint64_t, uintptr_t
from libc.string cimport memset

cimport ringcomm.libringcomm as lib

import array
import enum
import sys

__version__ = "%d.%d.%d" % (lib.RC_VERSION_MAJOR, lib.RC_VERSION_MINOR, lib.RC_VERSION_PATCH)
ADDRESS_BYTES = lib.RC_ADDRESS_BYTES
# The build has the MPI transport (an MPI compiler wrapper was found).
HAVE_MPI = bool(lib.rc_have_mpi())


class RingcommError(RuntimeError):
    """A communication failure reported by the C core.

    ``status`` is the numeric rc_status_t (negative), ``status_name`` its name
    (e.g. ``"RC_ERR_MISMATCH"``); the message names the call and the ranks."""

    def __init__(self, status, message):
        self.status = int(status)
        self.status_name = lib.rc_status_string(<lib.rc_status_t>status).decode()
        super().__init__("%s: %s" % (self.status_name, message))


cdef int _raise(lib.rc_status_t st) except -1:
    raise RingcommError(st, lib.rc_last_error().decode("utf-8", "replace"))


cdef inline int _check(lib.rc_status_t st) except -1 nogil:
    if st != lib.RC_OK:
        with gil:
            _raise(st)
    return 0


class ReduceOp(str, enum.Enum):
    """Reduction operators; plain strings are accepted wherever these are."""
    SUM = "sum"
    PROD = "prod"
    MIN = "min"
    MAX = "max"
    AVG = "avg"
    BAND = "band"
    BOR = "bor"
    BXOR = "bxor"


cdef dict _OPS = {"sum": lib.RC_SUM, "prod": lib.RC_PROD, "min": lib.RC_MIN, "max": lib.RC_MAX,
                  "avg": lib.RC_AVG, "band": lib.RC_BAND, "bor": lib.RC_BOR,
                  "bxor": lib.RC_BXOR}
cdef dict _ALGOS = {lib.rc_algo_name(<lib.rc_algo_t>a).decode(): a
                    for a in range(lib.RC_NUM_ALGOS)}

cdef dict _COLLS = {lib.rc_coll_name(c).decode(): c
                    for c in range(lib.RC_COLL_ALLREDUCE, lib.RC_COLL_SEND)}

ANY_SOURCE = lib.RC_ANY_SOURCE
TAG_UB = (1 << 30) - 1   # tags above are ringcomm's own (split)


cdef int _check_tag(int tag, bint reserved) except -1:
    if tag < 0 or (tag > TAG_UB and not reserved):
        raise ValueError("tag: expected a tag in [0, %d], got %d" % (TAG_UB, tag))
    return 0


def algorithms(collective="allreduce"):
    """Names of the algorithms `collective` has (besides "auto"), e.g.
    ``algorithms("broadcast")``."""
    if collective not in _COLLS:
        raise ValueError("collective: expected one of %s, got %r"
                         % (", ".join(_COLLS), collective))
    cdef int i = 0
    names = []
    cdef const char *n = lib.rc_coll_algo_name(<lib.rc_coll_t>_COLLS[collective], 0)
    while n != NULL:
        names.append(n.decode())
        i += 1
        n = lib.rc_coll_algo_name(<lib.rc_coll_t>_COLLS[collective], i)
    return names


def reduce_isa():
    """The reduction kernel set in use: "avx2" or "generic"."""
    return lib.rc_reduce_isa().decode()


cdef object _S_SUM = "sum", _S_AUTO = "auto"


cdef lib.rc_op_t _op(object op) except *:
    if op is _S_SUM:  # the default, and any interned "sum": no dict lookup
        return lib.RC_SUM
    try:
        return _OPS[op]
    except (KeyError, TypeError):
        pass
    name = getattr(op, "value", None)  # enums whose value is the name
    if isinstance(name, str) and name in _OPS:
        return _OPS[name]
    raise ValueError("op: expected one of %s, got %r" % (", ".join(_OPS), op))


cdef dict _COLL_ALGOS = {}     # collective -> {name: id}, "auto" first


cdef lib.rc_algo_t _algo(object algorithm, str collective="allreduce") except *:
    """The algorithm id, if `collective` has that algorithm ("auto" always).
    One dict lookup: on a tiny all-reduce the old list scan cost about as
    much as the data exchange."""
    if algorithm is _S_AUTO:
        return lib.RC_ALGO_AUTO
    ids = <dict>_COLL_ALGOS.get(collective)
    if ids is None:
        ids = _COLL_ALGOS[collective] = {n: _ALGOS[n]
                                         for n in ["auto"] + list(algorithms(collective))}
    if isinstance(algorithm, str):
        algo_id = ids.get(algorithm)
        if algo_id is not None:
            return algo_id
    raise ValueError("algorithm: %s has %s, got %r"
                     % (collective, ", ".join(ids), algorithm))


# ---------------------------------------------------------------- buffers

cdef bint _LITTLE = sys.byteorder == "little"
cdef object _torch = None          # the torch module once imported by the user
cdef dict _TORCH_DTYPES = None


cdef dict _torch_dtypes():
    global _TORCH_DTYPES
    if _TORCH_DTYPES is None:
        t = _torch
        _TORCH_DTYPES = {t.float32: lib.RC_FLOAT32, t.float64: lib.RC_FLOAT64,
                         t.float16: lib.RC_FLOAT16, t.bfloat16: lib.RC_BFLOAT16,
                         t.int8: lib.RC_INT8, t.uint8: lib.RC_UINT8, t.int32: lib.RC_INT32,
                         t.int64: lib.RC_INT64, t.bool: lib.RC_BOOL}
    return _TORCH_DTYPES


cdef int _format_dtype(const char *fmt, Py_ssize_t itemsize, lib.rc_dtype_t *dt):
    """Buffer-protocol format -> dtype; -1 when unsupported."""
    cdef char c
    if fmt == NULL:
        c = b'B'
    else:
        # native or explicit little-endian only ('>' and '!' are big-endian)
        while (fmt[0] in (b'@', b'=') or (fmt[0] == b'<' and _LITTLE)) and fmt[1] != 0:
            fmt += 1
        if fmt[0] == 0 or fmt[1] != 0:
            return -1
        c = fmt[0]
    if c == b'f' and itemsize == 4: dt[0] = lib.RC_FLOAT32
    elif c == b'd' and itemsize == 8: dt[0] = lib.RC_FLOAT64
    elif c == b'e' and itemsize == 2: dt[0] = lib.RC_FLOAT16
    elif c == b'b' and itemsize == 1: dt[0] = lib.RC_INT8
    elif c == b'B' and itemsize == 1: dt[0] = lib.RC_UINT8
    elif c == b'?' and itemsize == 1: dt[0] = lib.RC_BOOL
    elif c in (b'i', b'l', b'q') and itemsize == 4: dt[0] = lib.RC_INT32
    elif c in (b'i', b'l', b'q') and itemsize == 8: dt[0] = lib.RC_INT64
    else:
        return -1
    return 0


@cython.freelist(8)
cdef class _Buf:
    """A borrowed view of a contiguous CPU buffer: pointer, count, dtype."""
    cdef Py_buffer view
    cdef bint has_view
    cdef object keep
    cdef void *ptr
    cdef uint64_t count
    cdef lib.rc_dtype_t dt

    def __dealloc__(self):
        if self.has_view:
            PyBuffer_Release(&self.view)
            self.has_view = False


cdef _Buf _get_buf(object obj, str name, bint writable):
    global _torch
    cdef _Buf b = _Buf.__new__(_Buf)
    if obj is None:
        raise TypeError("%s: expected a numpy array, a torch CPU tensor or a buffer, got None"
                        % name)
    # torch tensors do not export the buffer protocol: anything that does
    # (numpy, bytearray, memoryview) skips the torch checks
    if PyObject_CheckBuffer(obj):
        return _get_view(b, obj, name, writable)
    if _torch is None and "torch" in sys.modules:
        _torch = sys.modules["torch"]
    if _torch is not None and isinstance(obj, _torch.Tensor):
        if obj.device.type != "cpu":
            raise ValueError("%s: expected a CPU tensor, got a tensor on %s" % (name, obj.device))
        if not obj.is_contiguous():
            raise ValueError("%s: expected a contiguous tensor, got one with strides %s "
                             "(call .contiguous())" % (name, tuple(obj.stride())))
        dt = _torch_dtypes().get(obj.dtype)
        if dt is None:
            raise TypeError("%s: unsupported dtype %s (supported: float32, float64, float16, "
                            "bfloat16, int8, uint8, int32, int64, bool)" % (name, obj.dtype))
        b.dt = dt
        b.count = obj.numel()
        b.ptr = <void *><uintptr_t>obj.data_ptr()
        b.keep = obj
        return b
    return _get_view(b, obj, name, writable)


cdef _Buf _get_view(_Buf b, object obj, str name, bint writable):
    try:
        PyObject_GetBuffer(obj, &b.view, PyBUF_RECORDS_RO)
    except (TypeError, BufferError) as e:
        raise TypeError("%s: expected a numpy array, a torch CPU tensor or a buffer, got %s (%s)"
                        % (name, type(obj).__name__, e)) from None
    b.has_view = True
    if writable and b.view.readonly:
        raise ValueError("%s: the buffer is read-only; a writable buffer is needed" % name)
    if not PyBuffer_IsContiguous(&b.view, b'C'):
        raise ValueError("%s: expected a C-contiguous buffer, got strides %s (use "
                         "numpy.ascontiguousarray)"
                         % (name, tuple(b.view.strides[i] for i in range(b.view.ndim))))
    if _format_dtype(b.view.format, b.view.itemsize, &b.dt) < 0:
        fmt = b.view.format.decode() if b.view.format != NULL else "B"
        dtype = getattr(obj, "dtype", fmt)
        raise TypeError("%s: unsupported dtype %s (supported: float32, float64, float16, "
                        "int8, uint8, int32, int64, bool; bfloat16 through torch)"
                        % (name, dtype))
    b.count = <uint64_t>(b.view.len // b.view.itemsize) if b.view.itemsize else 0
    b.ptr = b.view.buf
    return b


cdef bint _overlap(_Buf a, _Buf b):
    cdef size_t es = lib.rc_dtype_size(a.dt)
    cdef uintptr_t pa = <uintptr_t>a.ptr, pb = <uintptr_t>b.ptr
    return pa < pb + b.count * es and pb < pa + a.count * es


cdef str _dtname(lib.rc_dtype_t dt):
    return lib.rc_dtype_name(dt).decode()


cdef int _check_op(lib.rc_dtype_t dt, lib.rc_op_t op, object opname) except -1:
    if dt == lib.RC_BOOL:
        raise TypeError("buf: dtype bool cannot be reduced (op %r)" % (opname,))
    if not lib.rc_op_valid_for(dt, op):
        raise ValueError("op: %r is not defined for dtype %s (avg needs a floating type; "
                         "band/bor/bxor an integer type)" % (opname, _dtname(dt)))
    return 0


def reduce_local(a, b, out, op="sum"):
    """out[i] = a[i] op b[i] with the library's kernels (avg acts as sum)."""
    cdef lib.rc_op_t cop = _op(op)
    cdef _Buf ba = _get_buf(a, "a", False), bb = _get_buf(b, "b", False)
    cdef _Buf bo = _get_buf(out, "out", True)
    if ba.dt != bb.dt or ba.dt != bo.dt:
        raise TypeError("a, b, out: dtypes differ (%s, %s, %s)"
                        % (_dtname(ba.dt), _dtname(bb.dt), _dtname(bo.dt)))
    if ba.count != bb.count or ba.count != bo.count:
        raise ValueError("a, b, out: sizes differ (%d, %d, %d)" % (ba.count, bb.count, bo.count))
    _check_op(ba.dt, cop, op)
    with nogil:
        _check(lib.rc_reduce_local(bo.ptr, ba.ptr, bb.ptr, <size_t>ba.count, ba.dt, cop))
    return out


def scale_local(buf, double divisor):
    """buf[i] /= divisor in place (floating dtypes), as avg does."""
    cdef _Buf bb = _get_buf(buf, "buf", True)
    if bb.dt not in (lib.RC_FLOAT32, lib.RC_FLOAT64, lib.RC_FLOAT16, lib.RC_BFLOAT16):
        raise TypeError("buf: scale_local needs a floating dtype, got %s" % _dtname(bb.dt))
    with nogil:
        _check(lib.rc_scale_local(bb.ptr, <size_t>bb.count, bb.dt, divisor))
    return buf


def _fuzz_check(int kind, bytes data):
    """Feed `data` to one of the checks that bytes from other processes pass
    (kind: 0 addresses, 1 shared-memory header, 2 collective descriptor,
    3 point-to-point descriptor; see rc_fuzz_check).  Returns the verdict's
    status name.  For tests/test_fuzz.py."""
    cdef const char *p = data
    return lib.rc_status_string(lib.rc_fuzz_check(kind, p, len(data))).decode()


# ---------------------------------------------------------------- communicator

def _check_timeout(timeout):
    """Validate a timeout argument (seconds, positive) before any communication."""
    if timeout is None:
        return
    try:
        t = float(timeout)
    except (TypeError, ValueError):
        raise TypeError("timeout: expected a number of seconds, got %r" % (timeout,)) from None
    if not t > 0:
        raise ValueError("timeout: expected a positive number of seconds, got %r" % (timeout,))


cdef class Communicator:
    """A group of ranks that run collectives together.

    Create one with ``ringcomm.init()`` or ``Communicator.from_mpi(comm)``;
    close it with ``close()`` or a ``with`` block.  Calls on one
    communicator must not overlap from several threads."""
    cdef lib.rc_comm_t *c
    cdef readonly int rank
    cdef readonly int size
    cdef object _closed_reason
    cdef public object _timeout
    cdef public int _nsplit
    cdef public object _mpi4py   # the mpi4py communicator split() splits (None: not from MPI)
    cdef public bint _mpi4py_own # _mpi4py is ringcomm's (a split's): close() frees it
    cdef public object _strag     # stragglers.py's state (window start, hosts, offset)
    cdef public object _ft        # shrink.py's state (control socket, peers' addresses)
    cdef object __weakref__      # bootstrap.py closes MPI-backed ones before MPI_Finalize

    def __cinit__(self):
        self.c = NULL
        self.rank = -1
        self.size = 0

    def __dealloc__(self):
        if self.c != NULL:
            lib.rc_comm_destroy(self.c)
            self.c = NULL

    @staticmethod
    def _create(int rank, int size, str token, timeout=None):
        """Phase 1 of the two-phase connect (bootstrap.py drives it; the
        public entry points have validated timeout)."""
        cdef Communicator self = Communicator.__new__(Communicator)
        cdef bytes tok = token.encode()
        cdef const char *ctok = tok
        cdef double t = float(timeout) if timeout is not None else 0.0
        with nogil:
            _check(lib.rc_comm_create(rank, size, ctok, t, &self.c))
        self.rank = rank
        self.size = size
        self._timeout = timeout
        return self

    def _address(self):
        cdef char blob[1024]
        if lib.RC_ADDRESS_BYTES > sizeof(blob):
            raise RuntimeError("RC_ADDRESS_BYTES grew beyond the binding's buffer")
        memset(blob, 0, sizeof(blob))
        _check(lib.rc_comm_address(self._ptr(), blob, lib.RC_ADDRESS_BYTES))
        return blob[:lib.RC_ADDRESS_BYTES]

    def _set_mpi(self, long long fhandle):
        """Between _create and _connect: the MPI communicator (Fortran handle,
        mpi4py's py2f()) whose ranks are this communicator's; the MPI
        transport talks on a duplicate of it."""
        _check(lib.rc_comm_set_mpi(self._ptr(), fhandle))

    def _connect(self, bytes blobs):
        cdef const char *p = blobs
        cdef size_t n = len(blobs)
        cdef lib.rc_comm_t *c = self._ptr()
        with nogil:
            _check(lib.rc_comm_connect(c, p, n))

    @staticmethod
    def from_mpi(mpi_comm, timeout=None):
        """A communicator over the ranks of an mpi4py communicator (collective)."""
        from ringcomm.bootstrap import from_mpi
        return from_mpi(mpi_comm, timeout=timeout)

    cdef lib.rc_comm_t *_ptr(self) except NULL:
        if self.c == NULL:
            raise RingcommError(lib.RC_ERR_INVALID_ARG, "the communicator is closed")
        return self.c

    @property
    def chunk_bytes(self):
        """Bytes per pipeline chunk (shared-memory slot) on this communicator."""
        return lib.rc_comm_chunk_bytes(self._ptr())

    def thresholds(self, bint origins=False):
        """The byte thresholds "auto" selects by (rank 0's, the same on every
        rank): {name: bytes}, or {name: (bytes, origin)} with origins=True,
        origin one of "default", "file", "env".  See tune_source and
        `python -m ringcomm.tune`."""
        cdef lib.rc_comm_t *c = self._ptr()
        cdef const char *name
        cdef const char *origin
        cdef uint64_t value
        cdef int i = 0
        out = {}
        while lib.rc_comm_threshold(c, i, &name, &value, &origin) == lib.RC_OK:
            out[name.decode()] = (value, origin.decode()) if origins else value
            i += 1
        return out

    def _topology(self):
        """The topology order rings and trees follow (docs/topology.md):
        {"order": [rank at ring position 0, 1, ...], "domains": [(host,
        package, numa, l3) of rank 0, 1, ...]} (-1: none, or several)."""
        cdef lib.rc_comm_t *c = self._ptr()
        cdef int p = lib.rc_comm_size(c)
        order = array.array("i", [0]) * p
        ids = array.array("i", [0]) * (4 * p)
        cdef int[::1] ov = order
        cdef int[::1] iv = ids
        _check(lib.rc_comm_topology(c, &ov[0], &iv[0]))
        return {"order": order.tolist(),
                "domains": [tuple(ids[4 * r:4 * r + 4]) for r in range(p)]}

    @property
    def tune_source(self):
        """Where the thresholds came from: "file PATH" or "built-in defaults (...)",
        with ", N from the environment" when variables overrode some."""
        return lib.rc_comm_tune_source(self._ptr()).decode()

    def select_algorithm(self, uint64_t count, dtype="float32", collective="allreduce"):
        """The algorithm "auto" picks for `collective` of `count` elements
        (per-rank block for the gather/scatter family)."""
        cdef dict names = {lib.rc_dtype_name(<lib.rc_dtype_t>i).decode(): i
                           for i in range(lib.RC_NUM_DTYPES)}
        if dtype not in names:
            raise ValueError("dtype: expected one of %s, got %r" % (", ".join(names), dtype))
        if collective not in _COLLS:
            raise ValueError("collective: expected one of %s, got %r"
                             % (", ".join(_COLLS), collective))
        return lib.rc_algo_name(lib.rc_select(self._ptr(), <lib.rc_coll_t>_COLLS[collective],
                                              count, <lib.rc_dtype_t>names[dtype])).decode()

    cdef inline object _result(self, lib.rc_request_t *req, object k1, object k2, object result):
        """The call's return value: `result`, or a Request when posted (which
        keeps the buffers k1, k2 alive until it completes)."""
        if req == NULL:
            return result
        cdef Request r = Request.__new__(Request)
        r.r = req
        r.keep = (k1, k2)
        r.result = result
        r.comm = self
        return r

    cdef _Buf _like(self, object obj, str name, _Buf ref, uint64_t count, bint writable):
        """A buffer that must have ref's dtype and `count` elements."""
        cdef _Buf b = _get_buf(obj, name, writable)
        if b.dt != ref.dt:
            raise ValueError("%s: expected dtype %s, got %s" % (name, _dtname(ref.dt),
                                                                _dtname(b.dt)))
        if b.count != count:
            raise ValueError("%s: expected %d elements, got %d" % (name, count, b.count))
        return b

    cdef int _blocks_overlap(self, _Buf small, _Buf big, str small_name, bint in_place_ok) except -1:
        """The small buffer may be this rank's block of the big one (in
        place) when in_place_ok; any other overlap is an error."""
        cdef size_t es = lib.rc_dtype_size(big.dt)
        cdef uintptr_t own = <uintptr_t>big.ptr + <uintptr_t>(self.rank * small.count * es)
        if small.count == 0 or not _overlap(small, big):
            return 0
        if in_place_ok and <uintptr_t>small.ptr == own:
            return 0
        raise ValueError("%s: overlaps the other buffer%s" % (small_name,
                         " (in place means it is exactly this rank's block of it)"
                         if in_place_ok else ""))

    cdef int _root(self, int root, str name="root") except -1:
        if root < 0 or root >= self.size:
            raise ValueError("%s: expected a rank in [0, %d), got %d" % (name, self.size, root))
        return 0

    def allreduce(self, buf, out=None, op="sum", algorithm="auto", bint async_op=False):
        """Reduce `buf` over all ranks; the result lands in `out`, or in `buf`
        when `out` is None (in place).  Returns the result buffer (a Request
        when async_op)."""
        cdef lib.rc_comm_t *c = self._ptr()
        cdef lib.rc_op_t cop = _op(op)
        cdef lib.rc_algo_t calgo = _algo(algorithm)
        cdef _Buf bi = _get_buf(buf, "buf", out is None)
        cdef _Buf bo = bi
        cdef lib.rc_request_t *req = NULL
        cdef lib.rc_request_t **preq = &req if async_op else NULL
        if out is not None:
            bo = self._like(out, "out", bi, bi.count, True)
            if bo.ptr != bi.ptr and bi.count and _overlap(bi, bo):
                raise ValueError("out: overlaps buf without being the same memory; pass "
                                 "out=None for in place or a separate buffer")
        _check_op(bi.dt, cop, op)
        with nogil:
            _check(lib.rc_allreduce(c, bi.ptr, bo.ptr, bi.count, bi.dt, cop, calgo, preq))
        return self._result(req, bi, bo, buf if out is None else out)

    def broadcast(self, buf, int root=0, algorithm="auto", bint async_op=False):
        """Copy `buf` of rank `root` into `buf` of every rank."""
        cdef lib.rc_comm_t *c = self._ptr()
        cdef lib.rc_algo_t calgo = _algo(algorithm, "broadcast")
        self._root(root)
        cdef _Buf b = _get_buf(buf, "buf", True)
        cdef lib.rc_request_t *req = NULL
        cdef lib.rc_request_t **preq = &req if async_op else NULL
        with nogil:
            _check(lib.rc_broadcast(c, b.ptr, b.count, b.dt, root, calgo, preq))
        return self._result(req, b, None, buf)

    def reduce(self, buf, out=None, op="sum", int root=0, algorithm="auto",
               bint async_op=False):
        """Reduce `buf` over all ranks into `out` (or `buf` when out is None)
        on rank `root`; other ranks' buffers are left unchanged."""
        cdef lib.rc_comm_t *c = self._ptr()
        cdef lib.rc_op_t cop = _op(op)
        cdef lib.rc_algo_t calgo = _algo(algorithm, "reduce")
        self._root(root)
        cdef bint at_root = self.rank == root
        cdef _Buf bi = _get_buf(buf, "buf", out is None and at_root)
        cdef _Buf bo = bi
        cdef lib.rc_request_t *req = NULL
        cdef lib.rc_request_t **preq = &req if async_op else NULL
        if out is not None:
            bo = self._like(out, "out", bi, bi.count, True)
            if bo.ptr != bi.ptr and bi.count and _overlap(bi, bo):
                raise ValueError("out: overlaps buf without being the same memory")
        _check_op(bi.dt, cop, op)
        with nogil:
            _check(lib.rc_reduce(c, bi.ptr, bo.ptr, bi.count, bi.dt, cop, root, calgo, preq))
        return self._result(req, bi, bo, buf if out is None else out)

    def allgather(self, sendbuf, recvbuf, algorithm="auto", bint async_op=False):
        """recvbuf (size x len(sendbuf) elements) receives every rank's
        sendbuf in rank order.  In place when sendbuf is recvbuf's block
        `rank`."""
        cdef lib.rc_comm_t *c = self._ptr()
        cdef lib.rc_algo_t calgo = _algo(algorithm, "allgather")
        cdef _Buf bs = _get_buf(sendbuf, "sendbuf", False)
        cdef _Buf br = self._like(recvbuf, "recvbuf", bs, bs.count * self.size, True)
        self._blocks_overlap(bs, br, "sendbuf", True)
        cdef lib.rc_request_t *req = NULL
        cdef lib.rc_request_t **preq = &req if async_op else NULL
        with nogil:
            _check(lib.rc_allgather(c, bs.ptr, br.ptr, bs.count, bs.dt, calgo, preq))
        return self._result(req, bs, br, recvbuf)

    def reduce_scatter(self, sendbuf, recvbuf, op="sum", algorithm="auto",
                       bint async_op=False):
        """Reduce sendbuf (size x len(recvbuf) elements) over all ranks; rank
        r receives block r of the result in recvbuf."""
        cdef lib.rc_comm_t *c = self._ptr()
        cdef lib.rc_op_t cop = _op(op)
        cdef lib.rc_algo_t calgo = _algo(algorithm, "reduce_scatter")
        cdef _Buf br = _get_buf(recvbuf, "recvbuf", True)
        cdef _Buf bs = self._like(sendbuf, "sendbuf", br, br.count * self.size, False)
        self._blocks_overlap(br, bs, "recvbuf", True)
        _check_op(bs.dt, cop, op)
        cdef lib.rc_request_t *req = NULL
        cdef lib.rc_request_t **preq = &req if async_op else NULL
        with nogil:
            _check(lib.rc_reduce_scatter(c, bs.ptr, br.ptr, br.count, br.dt, cop, calgo, preq))
        return self._result(req, bs, br, recvbuf)

    def alltoall(self, sendbuf, recvbuf, algorithm="auto", bint async_op=False):
        """Block j of sendbuf goes to rank j; block i of recvbuf comes from
        rank i (both size x block elements)."""
        cdef lib.rc_comm_t *c = self._ptr()
        cdef lib.rc_algo_t calgo = _algo(algorithm, "alltoall")
        cdef _Buf bs = _get_buf(sendbuf, "sendbuf", False)
        if bs.count % self.size:
            raise ValueError("sendbuf: expected a multiple of size=%d elements, got %d"
                             % (self.size, bs.count))
        cdef _Buf br = self._like(recvbuf, "recvbuf", bs, bs.count, True)
        if bs.count and _overlap(bs, br):
            raise ValueError("recvbuf: overlaps sendbuf (all-to-all is never in place)")
        cdef uint64_t blk = bs.count // self.size
        cdef lib.rc_request_t *req = NULL
        cdef lib.rc_request_t **preq = &req if async_op else NULL
        with nogil:
            _check(lib.rc_alltoall(c, bs.ptr, br.ptr, blk, bs.dt, calgo, preq))
        return self._result(req, bs, br, recvbuf)

    def gather(self, sendbuf, recvbuf=None, int root=0, algorithm="auto", bint async_op=False):
        """recvbuf (size x len(sendbuf) elements, on `root` only) receives
        every rank's sendbuf in rank order."""
        cdef lib.rc_comm_t *c = self._ptr()
        cdef lib.rc_algo_t calgo = _algo(algorithm, "gather")
        self._root(root)
        cdef _Buf bs = _get_buf(sendbuf, "sendbuf", False)
        cdef _Buf br = None
        cdef void *rp = NULL
        if self.rank == root:
            if recvbuf is None:
                raise TypeError("recvbuf: the root needs a buffer of %d elements, got None"
                                % (bs.count * self.size))
            br = self._like(recvbuf, "recvbuf", bs, bs.count * self.size, True)
            self._blocks_overlap(bs, br, "sendbuf", True)
            rp = br.ptr
        cdef lib.rc_request_t *req = NULL
        cdef lib.rc_request_t **preq = &req if async_op else NULL
        with nogil:
            _check(lib.rc_gather(c, bs.ptr, rp, bs.count, bs.dt, root, calgo, preq))
        return self._result(req, bs, br, recvbuf)

    def scatter(self, sendbuf, recvbuf, int root=0, algorithm="auto", bint async_op=False):
        """Block i of sendbuf (size x len(recvbuf) elements, on `root` only)
        goes to rank i's recvbuf."""
        cdef lib.rc_comm_t *c = self._ptr()
        cdef lib.rc_algo_t calgo = _algo(algorithm, "scatter")
        self._root(root)
        cdef _Buf br = _get_buf(recvbuf, "recvbuf", True)
        cdef _Buf bs = None
        cdef const void *sp = NULL
        if self.rank == root:
            if sendbuf is None:
                raise TypeError("sendbuf: the root needs a buffer of %d elements, got None"
                                % (br.count * self.size))
            bs = self._like(sendbuf, "sendbuf", br, br.count * self.size, False)
            self._blocks_overlap(br, bs, "recvbuf", True)
            sp = bs.ptr
        cdef lib.rc_request_t *req = NULL
        cdef lib.rc_request_t **preq = &req if async_op else NULL
        with nogil:
            _check(lib.rc_scatter(c, sp, br.ptr, br.count, br.dt, root, calgo, preq))
        return self._result(req, bs, br, recvbuf)

    def barrier(self, bint async_op=False):
        """Return once every rank has entered the barrier."""
        cdef lib.rc_comm_t *c = self._ptr()
        cdef lib.rc_request_t *req = NULL
        cdef lib.rc_request_t **preq = &req if async_op else NULL
        with nogil:
            _check(lib.rc_barrier(c, preq))
        return self._result(req, None, None, None)

    cdef int _peer(self, int peer, str name, bint any_ok) except -1:
        if (peer < 0 or peer >= self.size) and not (any_ok and peer == lib.RC_ANY_SOURCE):
            raise ValueError("%s: expected a rank in [0, %d)%s, got %d"
                             % (name, self.size, " or ANY_SOURCE" if any_ok else "", peer))
        return 0

    def send(self, buf, int dest, int tag=0, *, _reserved=False):
        """Send `buf` to rank `dest`.  Returns once buf may be reused: small
        messages once they are in the transport, large ones (single copy)
        once the receiver has read them."""
        self.isend(buf, dest, tag, _blocking=True, _reserved=_reserved)

    def isend(self, buf, int dest, int tag=0, *, _blocking=False, _reserved=False):
        """Post a send; returns a Request.  Do not modify buf until it completes."""
        cdef lib.rc_comm_t *c = self._ptr()
        self._peer(dest, "dest", False)
        _check_tag(tag, _reserved)
        cdef _Buf b = _get_buf(buf, "buf", False)
        cdef lib.rc_request_t *req = NULL
        cdef lib.rc_request_t **preq = NULL if _blocking else &req
        with nogil:
            _check(lib.rc_send(c, b.ptr, b.count, b.dt, dest, tag, preq))
        return self._result(req, b, None, None)

    def recv(self, buf, int source, int tag=0, *, _reserved=False):
        """Receive a message from `source` (or ANY_SOURCE) with `tag` into
        `buf` (same count and dtype as sent); returns the sender's rank."""
        cdef lib.rc_comm_t *c = self._ptr()
        self._peer(source, "source", True)
        _check_tag(tag, _reserved)
        cdef _Buf b = _get_buf(buf, "buf", True)
        cdef int src = -1
        with nogil:
            _check(lib.rc_recv(c, b.ptr, b.count, b.dt, source, tag, &src, NULL))
        return src

    def irecv(self, buf, int source, int tag=0, *, _reserved=False):
        """Post a receive; returns a Request (its .source is the sender once done)."""
        cdef lib.rc_comm_t *c = self._ptr()
        self._peer(source, "source", True)
        _check_tag(tag, _reserved)
        cdef _Buf b = _get_buf(buf, "buf", True)
        cdef lib.rc_request_t *req = NULL
        with nogil:
            _check(lib.rc_recv(c, b.ptr, b.count, b.dt, source, tag, NULL, &req))
        cdef Request r = self._result(req, b, None, buf)
        r.is_recv = True
        return r

    # ---- stragglers (the report is src/ringcomm/stragglers.py) ----

    def stragglers(self, reset=False):
        """Who the others waited for, over the collective calls since the last
        reset (at most the last 4096): collective, every rank gets the same
        StragglerReport (str() is a table, .as_dict() for tools).  reset=True
        starts a new window after this report."""
        from ringcomm.stragglers import report
        return report(self, reset)

    def _seq(self):
        """The sequence number of the next collective call."""
        return lib.rc_comm_seq(self._ptr())

    def _arrivals(self, uint32_t first, uint32_t n):
        """This rank's arrival times (CLOCK_MONOTONIC s) of calls first..first+n-1
        (NaN: not recorded, overwritten or quiet), as a float64 numpy array."""
        import numpy as np
        out = np.empty(n, np.float64)
        cdef double[::1] v = out
        cdef double *p = &v[0] if n else NULL
        _check(lib.rc_comm_arrivals(self._ptr(), first, n, p))
        return out

    def _set_quiet(self, bint quiet):
        """Collectives posted while set are the report's own: not recorded."""
        _check(lib.rc_comm_set_quiet(self._ptr(), quiet))

    def _set_clock_offset(self, double offset):
        _check(lib.rc_comm_set_clock_offset(self._ptr(), offset))

    @property
    def straggler_period(self):
        """RINGCOMM_STRAGGLER as rank 0 set it (seconds; 0.0: off)."""
        return lib.rc_comm_straggler_period(self._ptr())

    # ---- surviving a lost rank (src/ringcomm/shrink.py) ----

    def _failure(self):
        """(status, text) of the sticky failure; (0, "") while healthy."""
        cdef const char *msg = NULL
        cdef lib.rc_status_t st = lib.rc_comm_failure(self._ptr(), &msg)
        return int(st), msg.decode("utf-8", "replace") if msg != NULL else ""

    def shrink(self, timeout=None):
        """After a failure (RC_ERR_PEER_LOST, or a timeout): a new
        Communicator of the ranks still alive, in their old order, once the
        survivors agree on that set (collective over the survivors).  This
        communicator stays failed; close() it."""
        from ringcomm.shrink import shrink
        return shrink(self, timeout)

    def failed_ranks(self):
        """The ranks of this communicator known to be lost (after shrink: the
        ones it left out; before: those whose process is gone)."""
        from ringcomm.shrink import failed_ranks
        return failed_ranks(self)

    def split(self, color, int key=0, timeout=None):
        """A new communicator over the ranks that pass the same `color`
        (ordered by key, then rank), as MPI_Comm_split; collective over this
        communicator.  color None (or negative) joins none: returns None."""
        from ringcomm.bootstrap import split
        return split(self, color, key, timeout if timeout is not None else self._timeout)

    def close(self):
        """Release the communicator (idempotent).  Requests still queued fail;
        a call still running on it raises (and its peers with it)."""
        cdef lib.rc_comm_t *c = self.c
        self.c = NULL
        if self._ft is not None:
            sock = self._ft.get("sock")
            if sock is not None:
                sock.close()
        if c != NULL:
            with nogil:
                lib.rc_comm_destroy(c)
        m, self._mpi4py = self._mpi4py, None
        if m is not None and self._mpi4py_own:
            from mpi4py import MPI
            if not MPI.Is_finalized():
                m.Free()

    @property
    def closed(self):
        return self.c == NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        state = "closed" if self.c == NULL else "open"
        return "<ringcomm.Communicator rank %d of %d, %s>" % (self.rank, self.size, state)


cdef class Request:
    """An operation posted with async_op=True (or isend/irecv).

    The buffers belong to the library until the request completes: do not
    read or write them before wait() returns or test() returns True.
    Operations on one communicator run in the order they were posted."""
    cdef lib.rc_request_t *r
    cdef object keep
    cdef object result
    cdef object comm
    cdef bint is_recv

    def __dealloc__(self):
        cdef lib.rc_request_t *r = self.r
        self.r = NULL
        if r != NULL:
            with nogil:
                lib.rc_request_free(r)   # waits first if still running

    def wait(self, timeout=None):
        """Wait for completion; returns what the blocking call returns (the
        result buffer; the sender's rank for irecv).  Raises TimeoutError when
        `timeout` seconds pass first (the request stays valid) and
        RingcommError when the operation failed."""
        cdef double t = -1.0
        cdef lib.rc_status_t st
        if timeout is not None:
            _check_timeout(timeout)
            t = float(timeout)
        with nogil:
            st = lib.rc_request_wait(self.r, t)
        if st != lib.RC_OK:
            if st == lib.RC_ERR_TIMEOUT and not self.done:
                raise TimeoutError(lib.rc_last_error().decode("utf-8", "replace"))
            _raise(st)
        return self._value()

    cdef object _value(self):
        if self.is_recv:
            return lib.rc_request_source(self.r)
        return self.result

    def test(self):
        """True once complete (raises RingcommError if the operation failed)."""
        cdef int done = 0
        _check(lib.rc_request_test(self.r, &done))
        return bool(done)

    @property
    def done(self):
        cdef int d = 0
        lib.rc_request_test(self.r, &d)
        return bool(d)

    @property
    def source(self):
        """The sender's rank of a completed irecv (-1 before)."""
        return lib.rc_request_source(self.r)

    def __repr__(self):
        return "<ringcomm.Request %s>" % ("done" if self.done else "pending")
