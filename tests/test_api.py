"""Single-process Python API: size-1 communicators, argument checks, lifecycle.

Communicators here have one rank: from ringcomm.init() without a launcher and
from Communicator.from_mpi(MPI.COMM_SELF).  A size-1 allreduce is the
identity for every dtype and op (avg divides by 1).  Every bad argument must
raise ValueError/TypeError whose message names the argument.
"""

import array
import enum
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from mpi4py import MPI

import ringcomm

NP_DTYPES = ["float32", "float64", "float16", "int8", "uint8", "int32", "int64"]
FLOATS = ["float32", "float64", "float16", "bfloat16"]
ALL_OPS = ["sum", "prod", "min", "max", "avg", "band", "bor", "bxor"]
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
                "bfloat16": torch.bfloat16, "int8": torch.int8, "uint8": torch.uint8,
                "int32": torch.int32, "int64": torch.int64}


def valid_ops(dtype):
    if dtype in FLOATS:
        return ["sum", "prod", "min", "max", "avg"]
    return ["sum", "prod", "min", "max", "band", "bor", "bxor"]


def sample(dtype, n=37, seed=3):
    rng = np.random.default_rng(seed)
    if dtype in FLOATS:
        x = rng.standard_normal(n) * 100
        x[:3] = [np.nan, np.inf, -0.0] if n >= 3 else x[:3]
        if dtype == "bfloat16":
            return torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)


def raw(x):
    if isinstance(x, torch.Tensor):
        return x.contiguous().view(torch.uint8).numpy().tobytes()
    return memoryview(x).tobytes()


def clone(x):
    return x.clone() if isinstance(x, torch.Tensor) else x.copy()


@pytest.fixture(params=["init", "comm_self"])
def comm(request):
    """A size-1 communicator, closed after the test."""
    if request.param == "init":
        c = ringcomm.init()
    else:
        c = ringcomm.Communicator.from_mpi(MPI.COMM_SELF)
    yield c
    c.close()


# ---------------------------------------------------------------- basics

def test_rank_and_size(comm):
    """A single-process communicator has rank 0 and size 1."""
    assert (comm.rank, comm.size) == (0, 1)


def test_init_without_launcher_in_fresh_process():
    """ringcomm.init() in a plain python process (no mpirun, no mpi4py) gives size 1."""
    code = ("import ringcomm\n"
            "c = ringcomm.init()\n"
            "import numpy as np\n"
            "x = np.arange(5, dtype=np.float32)\n"
            "assert c.allreduce(x, op='avg') is x and x.tolist() == [0, 1, 2, 3, 4]\n"
            "print('RESULT', c.rank, c.size)\n"
            "c.close()\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_"))
           and k not in ("RANK", "WORLD_SIZE")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=120)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out
    assert "RESULT 0 1" in out, out


@pytest.mark.parametrize("dtype", NP_DTYPES)
def test_size1_allreduce_identity_numpy(comm, dtype):
    """Size-1 allreduce leaves numpy data bitwise unchanged for every valid op, in and out of place."""
    x0 = sample(dtype)
    for op in valid_ops(dtype):
        x = clone(x0)
        assert comm.allreduce(x, op=op) is x
        assert raw(x) == raw(x0), f"{dtype} {op} in place"
        out = np.full_like(x0, 1)
        assert comm.allreduce(x, out=out, op=op) is out
        assert raw(out) == raw(x0), f"{dtype} {op} out of place"
        assert raw(x) == raw(x0), f"{dtype} {op}: out-of-place modified the input"


@pytest.mark.parametrize("dtype", list(TORCH_DTYPES))
def test_size1_allreduce_identity_torch(comm, dtype):
    """Size-1 allreduce leaves torch CPU tensors (incl. bfloat16) unchanged for every valid op."""
    x0 = sample(dtype)
    if not isinstance(x0, torch.Tensor):
        x0 = torch.from_numpy(x0)
    for op in valid_ops(dtype):
        x = x0.clone()
        assert comm.allreduce(x, op=op) is x
        assert raw(x) == raw(x0), f"{dtype} {op} in place"
        out = torch.zeros_like(x0)
        assert comm.allreduce(x, out=out, op=op, algorithm="ring") is out
        assert raw(out) == raw(x0), f"{dtype} {op} out of place"


@pytest.mark.parametrize("algo", ["auto", "ring", "tree", "direct"])
def test_size1_every_algorithm(comm, algo):
    """Every algorithm name (and auto) works at size 1, including counts 0 and 1."""
    for n in (0, 1, 1000003):
        x0 = sample("float32", n)
        x = x0.copy()
        comm.allreduce(x, algorithm=algo, op="avg")
        assert raw(x) == raw(x0), (algo, n)


def test_size1_buffer_protocol_objects(comm):
    """bytearray, array.array and memoryview are reduced (identity at size 1) and returned."""
    objs = [bytearray(b"\x01\x02\xff"), array.array("f", [1.5, -2.0]),
            array.array("d", [3.25]), array.array("b", [-5, 7]), array.array("q", [2 ** 40]),
            array.array("i", [-7, 9]), memoryview(np.arange(6, dtype=np.int64)),
            memoryview(np.arange(4, dtype=np.float16))]
    for obj in objs:
        before = bytes(memoryview(obj))
        assert comm.allreduce(obj, op="max") is obj
        assert bytes(memoryview(obj)) == before, type(obj)


def test_size1_out_is_buf(comm):
    """out=buf (the same object) is an in-place allreduce."""
    x = np.arange(10, dtype=np.float32)
    assert comm.allreduce(x, out=x) is x
    assert x.tolist() == list(range(10))


def test_size1_mixed_containers(comm):
    """A numpy input may go into a torch output of the same dtype and size, and back."""
    x = np.arange(9, dtype=np.int32)
    out = torch.zeros(9, dtype=torch.int32)
    assert comm.allreduce(x, out=out) is out
    assert out.tolist() == list(range(9))
    out2 = np.zeros(9, np.int32)
    comm.allreduce(out, out=out2)
    assert out2.tolist() == list(range(9))


def test_multidimensional_contiguous(comm):
    """A C-contiguous 2-D array is reduced as a whole; out may have another shape of equal size."""
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    out = np.zeros(12)
    comm.allreduce(x, out=out)
    assert out.tolist() == list(range(12))


def test_barrier_size1(comm):
    """barrier() on one rank returns None at once."""
    assert comm.barrier() is None


def test_reduce_op_enum(comm):
    """ReduceOp is a str enum of the eight op names, accepted in place of strings."""
    assert issubclass(ringcomm.ReduceOp, enum.Enum), "ReduceOp should be an Enum"
    assert issubclass(ringcomm.ReduceOp, str), "ReduceOp members should be strings"
    assert sorted(m.value for m in ringcomm.ReduceOp) == sorted(ALL_OPS)
    assert ringcomm.ReduceOp.SUM == "sum"
    assert ringcomm.ReduceOp("max") is ringcomm.ReduceOp.MAX
    x = np.arange(5, dtype=np.int8)
    for m in ringcomm.ReduceOp:
        if m.value != "avg":
            comm.allreduce(x, op=m)
    assert x.tolist() == list(range(5))


def test_reduce_op_constants_accepted(comm):
    """ReduceOp.SUM .. BXOR compare equal to their names and are accepted by allreduce."""
    x = np.arange(5, dtype=np.int64)
    for name in ALL_OPS:
        member = getattr(ringcomm.ReduceOp, name.upper())
        assert member == name
        if name != "avg":
            comm.allreduce(x, op=member)
    assert x.tolist() == list(range(5))


def test_algorithms_list():
    """algorithms() lists at least ring and tree, as strings, without auto."""
    names = ringcomm.algorithms()
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)
    assert {"ring", "tree"} <= set(names)
    assert "auto" not in names


def test_error_class():
    """RingcommError is a RuntimeError subclass."""
    assert issubclass(ringcomm.RingcommError, RuntimeError)


# ---------------------------------------------------------------- lifecycle

def test_close_twice_and_use_after_close(comm):
    """close() is idempotent; allreduce and barrier after close raise RingcommError with a status."""
    comm.close()
    comm.close()
    x = np.ones(4, np.float32)
    with pytest.raises(ringcomm.RingcommError) as ei:
        comm.allreduce(x)
    assert isinstance(ei.value.status, int) and ei.value.status < 0
    assert isinstance(ei.value.status_name, str) and ei.value.status_name.startswith("RC_ERR_")
    with pytest.raises(ringcomm.RingcommError):
        comm.barrier()
    assert x.tolist() == [1, 1, 1, 1]


def test_context_manager():
    """`with comm as c` yields comm and closes it on exit, also when the block raises."""
    comm = ringcomm.Communicator.from_mpi(MPI.COMM_SELF)
    with comm as c:
        assert c is comm
        c.allreduce(np.ones(3, np.float32))
    with pytest.raises(ringcomm.RingcommError):
        comm.allreduce(np.ones(3, np.float32))
    comm2 = ringcomm.init()
    with pytest.raises(KeyError):
        with comm2:
            raise KeyError("boom")
    with pytest.raises(ringcomm.RingcommError):
        comm2.barrier()


def test_many_communicators_created_and_closed():
    """Creating and closing many communicators leaks nothing (see the /dev/shm check)."""
    for i in range(50):
        with ringcomm.Communicator.from_mpi(MPI.COMM_SELF) as c:
            x = np.full(8, i, np.int32)
            c.allreduce(x)
            assert x.tolist() == [i] * 8


def test_timeout_argument():
    """init/from_mpi accept a positive timeout."""
    with ringcomm.init(timeout=30) as c:
        assert c.size == 1
    with ringcomm.Communicator.from_mpi(MPI.COMM_SELF, timeout=2.5) as c:
        assert c.size == 1


# ---------------------------------------------------------------- bad input

def _expect(comm, exc, words, *args, **kwargs):
    with pytest.raises(exc) as ei:
        comm.allreduce(*args, **kwargs)
    msg = str(ei.value)
    for w in words:
        assert w in msg, f"message {msg!r} should mention {w!r}"
    return msg


def test_noncontiguous_buf(comm):
    """A strided numpy buf raises ValueError naming buf."""
    x = np.arange(20, dtype=np.float32)
    _expect(comm, ValueError, ["buf"], x[::2])
    _expect(comm, ValueError, ["buf"], np.arange(16.0).reshape(4, 4)[:, :2])
    _expect(comm, ValueError, ["buf"], np.asfortranarray(np.ones((3, 4))))
    assert x.tolist() == list(range(20))


def test_noncontiguous_out(comm):
    """A strided out raises ValueError naming out."""
    _expect(comm, ValueError, ["out"], np.ones(5, np.float32),
            out=np.zeros(10, np.float32)[::2])


def test_noncontiguous_torch(comm):
    """Non-contiguous torch tensors (transposed, strided) raise ValueError naming buf / out."""
    t = torch.ones(4, 6, dtype=torch.bfloat16)
    _expect(comm, ValueError, ["buf"], t.t())
    _expect(comm, ValueError, ["buf"], torch.ones(10)[::3])
    _expect(comm, ValueError, ["out"], torch.ones(3), out=torch.zeros(6)[::2])


def test_readonly_buf(comm):
    """A read-only buffer for an in-place allreduce raises ValueError naming buf."""
    x = np.ones(4, np.float32)
    x.flags.writeable = False
    _expect(comm, ValueError, ["buf"], x)
    _expect(comm, ValueError, ["buf"], b"\x00\x01\x02")
    _expect(comm, ValueError, ["buf"], memoryview(bytearray(4)).toreadonly())


def test_readonly_out(comm):
    """A read-only out raises ValueError naming out."""
    out = np.zeros(4, np.float32)
    out.flags.writeable = False
    _expect(comm, ValueError, ["out"], np.ones(4, np.float32), out=out)


@pytest.mark.parametrize("dtype", ["complex64", "complex128", "uint16", "uint32", "uint64",
                                   "int16", "longdouble", ">f4", ">i8"])
def test_unsupported_numpy_dtype(comm, dtype):
    """Unsupported numpy dtypes (incl. non-native byte order) raise TypeError naming buf."""
    x = np.zeros(4, dtype)
    _expect(comm, TypeError, ["buf"], x)


@pytest.mark.parametrize("dtype", [torch.int16, torch.complex64, torch.uint16])
def test_unsupported_torch_dtype(comm, dtype):
    """Unsupported torch dtypes raise TypeError naming buf and the dtype."""
    x = torch.zeros(4, dtype=dtype)
    _expect(comm, TypeError, ["buf", str(dtype).replace("torch.", "")], x)


def test_object_and_none_rejected(comm):
    """Objects without the buffer protocol and None raise TypeError naming buf."""
    _expect(comm, TypeError, ["buf"], [1.0, 2.0])
    _expect(comm, TypeError, ["buf"], None)
    _expect(comm, TypeError, ["buf"], np.array([1, "a"], dtype=object))


def test_bool_rejected(comm):
    """bool buffers (numpy and torch) raise TypeError for allreduce."""
    _expect(comm, TypeError, ["bool"], np.ones(3, bool))
    _expect(comm, TypeError, ["bool"], torch.ones(3, dtype=torch.bool))


def test_out_wrong_size(comm):
    """out with a different element count raises ValueError naming out and both sizes."""
    _expect(comm, ValueError, ["out", "10", "11"], np.ones(10, np.float32),
            out=np.zeros(11, np.float32))
    _expect(comm, ValueError, ["out"], np.ones(10, np.float32), out=np.zeros(0, np.float32))


def test_out_wrong_dtype(comm):
    """out with a different dtype (even of equal byte size) raises ValueError naming out."""
    _expect(comm, ValueError, ["out", "float32", "int32"], np.ones(10, np.float32),
            out=np.zeros(10, np.int32))
    _expect(comm, ValueError, ["out"], np.ones(10, np.float32), out=np.zeros(5, np.float64))
    _expect(comm, ValueError, ["out"], torch.ones(4, dtype=torch.bfloat16),
            out=torch.zeros(4, dtype=torch.float16))


@pytest.mark.parametrize("op", ["median", "SUM ", "", None, 3])
def test_unknown_op(comm, op):
    """An unknown op raises ValueError naming op and the given value."""
    _expect(comm, ValueError, ["op", repr(op)], np.ones(3, np.float32), op=op)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "int64"])
def test_avg_on_integers(comm, dtype):
    """op=avg on integer dtypes raises ValueError naming op."""
    x = np.ones(3, dtype)
    _expect(comm, ValueError, ["op", "avg"], x, op="avg")
    _expect(comm, ValueError, ["op"], x, op=ringcomm.ReduceOp.AVG)
    assert x.tolist() == [1, 1, 1]


@pytest.mark.parametrize("op", ["band", "bor", "bxor"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_bitwise_on_floats(comm, op, dtype):
    """band/bor/bxor on floating dtypes raise ValueError naming op."""
    x = torch.ones(3, dtype=TORCH_DTYPES[dtype])
    _expect(comm, ValueError, ["op", op], x, op=op)


@pytest.mark.parametrize("algo", ["butterfly", "RING", "", None, 1])
def test_unknown_algorithm(comm, algo):
    """An unknown algorithm raises ValueError naming algorithm and the given value."""
    _expect(comm, ValueError, ["algorithm", repr(algo)], np.ones(3, np.float32),
            algorithm=algo)


def test_overlapping_out_rejected(comm):
    """out partially overlapping buf (but not the same memory) raises ValueError naming out."""
    x = np.arange(20, dtype=np.float32)
    _expect(comm, ValueError, ["out"], x[0:10], out=x[5:15])
    assert x.tolist() == list(range(20))


def test_bad_input_leaves_buffers_untouched(comm):
    """A rejected call writes nothing to buf or out."""
    x = np.arange(6, dtype=np.float32)
    out = np.full(6, 9, np.float32)
    with pytest.raises(ValueError):
        comm.allreduce(x, out=out, op="nope")
    with pytest.raises(ValueError):
        comm.allreduce(x, out=out, algorithm="nope")
    assert x.tolist() == list(range(6)) and out.tolist() == [9] * 6


@pytest.mark.parametrize("timeout", [0, -1])
def test_nonpositive_timeout_rejected(timeout):
    """A zero or negative timeout raises ValueError naming timeout."""
    with pytest.raises(ValueError, match="timeout"):
        ringcomm.Communicator.from_mpi(MPI.COMM_SELF, timeout=timeout)
