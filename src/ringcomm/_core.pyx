# cython: language_level=3, boundscheck=False, wraparound=False, embedsignature=True
"""Thin binding over the C core (csrc/): buffer -> (pointer, count, dtype),
status -> exception, every communicating call made with the GIL released.
Argument checks run here, under the GIL, before any communication."""

from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBuffer_IsContiguous,
                             PyBUF_RECORDS_RO)
from libc.stdint cimport uint64_t, uintptr_t
from libc.string cimport memset

cimport ringcomm.libringcomm as lib

import enum
import sys

__version__ = "%d.%d.%d" % (lib.RC_VERSION_MAJOR, lib.RC_VERSION_MINOR, lib.RC_VERSION_PATCH)
ADDRESS_BYTES = lib.RC_ADDRESS_BYTES


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
cdef dict _ALGOS = {"auto": lib.RC_ALGO_AUTO, "ring": lib.RC_ALGO_RING,
                    "tree": lib.RC_ALGO_TREE, "direct": lib.RC_ALGO_DIRECT,
                    "binomial": lib.RC_ALGO_BINOMIAL}


def algorithms():
    """Names of the all-reduce algorithms (besides "auto")."""
    return [a for a in _ALGOS if a != "auto"]


def reduce_isa():
    """The reduction kernel set in use: "avx2" or "generic"."""
    return lib.rc_reduce_isa().decode()


cdef lib.rc_op_t _op(object op) except *:
    try:
        return _OPS[op]
    except (KeyError, TypeError):
        pass
    name = getattr(op, "value", None)  # enums whose value is the name
    if isinstance(name, str) and name in _OPS:
        return _OPS[name]
    raise ValueError("op: expected one of %s, got %r" % (", ".join(_OPS), op))


cdef lib.rc_algo_t _algo(object algorithm) except *:
    try:
        return _ALGOS[algorithm]
    except (KeyError, TypeError):
        raise ValueError("algorithm: expected one of %s, got %r"
                         % (", ".join(_ALGOS), algorithm)) from None


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
    cdef int flags = PyBUF_RECORDS_RO
    if obj is None:
        raise TypeError("%s: expected a numpy array, a torch CPU tensor or a buffer, got None"
                        % name)
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
    try:
        PyObject_GetBuffer(obj, &b.view, flags)
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
        return self

    def _address(self):
        cdef char blob[512]
        memset(blob, 0, sizeof(blob))
        _check(lib.rc_comm_address(self._ptr(), blob, lib.RC_ADDRESS_BYTES))
        return blob[:lib.RC_ADDRESS_BYTES]

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

    def select_algorithm(self, uint64_t count, dtype="float32"):
        """The algorithm "auto" picks for an all-reduce of `count` elements."""
        cdef dict names = {lib.rc_dtype_name(<lib.rc_dtype_t>i).decode(): i
                           for i in range(lib.RC_NUM_DTYPES)}
        if dtype not in names:
            raise ValueError("dtype: expected one of %s, got %r" % (", ".join(names), dtype))
        return lib.rc_algo_name(lib.rc_allreduce_select(self._ptr(), count,
                                                        <lib.rc_dtype_t>names[dtype])).decode()

    def allreduce(self, buf, out=None, op="sum", algorithm="auto"):
        """Reduce `buf` over all ranks; the result lands in `out`, or in `buf`
        when `out` is None (in place).  Returns the result buffer."""
        cdef lib.rc_comm_t *c = self._ptr()
        cdef lib.rc_op_t cop = _op(op)
        cdef lib.rc_algo_t calgo = _algo(algorithm)
        cdef _Buf bi = _get_buf(buf, "buf", out is None)
        cdef _Buf bo = bi
        if out is not None:
            bo = _get_buf(out, "out", True)
            if bo.dt != bi.dt:
                raise ValueError("out: expected dtype %s like buf, got %s"
                                 % (_dtname(bi.dt), _dtname(bo.dt)))
            if bo.count != bi.count:
                raise ValueError("out: expected %d elements like buf, got %d"
                                 % (bi.count, bo.count))
            if bo.ptr != bi.ptr and bi.count and _overlap(bi, bo):
                raise ValueError("out: overlaps buf without being the same memory; pass "
                                 "out=None for in place or a separate buffer")
        _check_op(bi.dt, cop, op)
        with nogil:
            _check(lib.rc_allreduce(c, bi.ptr, bo.ptr, bi.count, bi.dt, cop, calgo))
        return buf if out is None else out

    def barrier(self):
        """Return once every rank has entered the barrier."""
        cdef lib.rc_comm_t *c = self._ptr()
        with nogil:
            _check(lib.rc_barrier(c))

    def close(self):
        """Release the communicator (idempotent)."""
        if self.c != NULL:
            lib.rc_comm_destroy(self.c)
            self.c = NULL

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
