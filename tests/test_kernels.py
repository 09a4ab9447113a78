"""Reduction kernels (ringcomm.reduce_local / scale_local) against numpy and torch.

Reference semantics (csrc/include/ringcomm.h): out[i] = a[i] op b[i]; avg
reduces as sum; float16/bfloat16 compute each operation in float32 and round
once to nearest even; min/max propagate NaN like numpy.minimum/maximum; integer
arithmetic wraps like numpy.  One kernel operation is a single IEEE operation,
so results are compared exactly (NaN positions only for NaN; +-0 are equal for
min/max, whose sign of zero numpy leaves open).

The whole module runs a second time in a subprocess with RINGCOMM_ISA=generic
(test_generic_isa_subprocess), so both kernel sets are checked.
"""

import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import ringcomm

NP_FLOATS = ["float32", "float64", "float16"]
NP_INTS = ["int8", "uint8", "int32", "int64"]
ALL_DTYPES = NP_FLOATS + ["bfloat16"] + NP_INTS
FLOAT_OPS = ["sum", "prod", "min", "max", "avg"]
INT_OPS = ["sum", "prod", "min", "max", "band", "bor", "bxor"]
LENGTHS = [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129, 1000003]
CASES = [(dt, op) for dt in ALL_DTYPES for op in (FLOAT_OPS if dt in NP_FLOATS + ["bfloat16"]
                                                    else INT_OPS)]
UINT_OF = {"float16": np.uint16, "bfloat16": np.uint16, "float32": np.uint32,
           "float64": np.uint64}

NP_FN = {"sum": np.add, "avg": np.add, "prod": np.multiply, "min": np.minimum,
         "max": np.maximum, "band": np.bitwise_and, "bor": np.bitwise_or,
         "bxor": np.bitwise_xor}
TORCH_FN = {"sum": torch.add, "avg": torch.add, "prod": torch.mul, "min": torch.minimum,
            "max": torch.maximum}


def _seed(*parts):
    """A stable seed from the case parameters (hash() is salted per process)."""
    return zlib.crc32(repr(parts).encode())


def float_values(n, rng, specials=True):
    """Random float64 values over many magnitudes with NaN, +-inf, +-0 sprinkled."""
    x = rng.standard_normal(n) * 10.0 ** rng.integers(-4, 5, n)
    if specials and n:
        k = max(1, n // 8)
        idx = rng.integers(0, n, k)
        x[idx] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e300, 65504.0], k)
    return x


def make_pair(dtype, n, seed, bits=False):
    """(a, b) as numpy arrays (bfloat16: torch tensors), seeded.

    bits=True draws uniformly random bit patterns (subnormals, NaN payloads,
    infinities, huge and tiny values)."""
    rng = np.random.default_rng(seed)
    if dtype in NP_INTS:
        info = np.iinfo(dtype)
        return tuple(rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
                     for _ in range(2))
    if bits:
        u = UINT_OF[dtype]
        pair = [rng.integers(0, np.iinfo(u).max, n, dtype=u, endpoint=True) for _ in range(2)]
        if dtype == "bfloat16":
            return tuple(torch.from_numpy(p.view(np.int16)).view(torch.bfloat16) for p in pair)
        return tuple(p.view(dtype) for p in pair)
    pair = [float_values(n, rng) for _ in range(2)]
    with np.errstate(over="ignore"):      # -1e300 becomes -inf in the narrow types
        if dtype == "bfloat16":
            return tuple(torch.from_numpy(p.astype(np.float32)).to(torch.bfloat16)
                         for p in pair)
        return tuple(p.astype(dtype) for p in pair)


def reference(dtype, op, a, b):
    with np.errstate(all="ignore"):
        if dtype == "bfloat16":
            return TORCH_FN[op](a.float(), b.float()).to(torch.bfloat16)
        if dtype == "float16" and op not in ("min", "max"):
            return NP_FN[op](a.astype(np.float32), b.astype(np.float32)).astype(np.float16)
        return NP_FN[op](a, b)


def as_np(x):
    if isinstance(x, torch.Tensor):
        return x.float().numpy() if x.dtype == torch.bfloat16 else x.numpy()
    return np.asarray(x)


def raw(x):
    if isinstance(x, torch.Tensor):
        return x.view(torch.int16).numpy().view(np.uint16)
    x = np.asarray(x)
    return x.view(UINT_OF.get(str(x.dtype), x.dtype))


def assert_kernel_equal(dtype, op, got, ref, what):
    """Exact comparison: NaN positions match; other values bitwise (by value for min/max)."""
    if np.array_equal(raw(got), raw(ref)):      # fast path: bitwise identical
        return
    g, r = as_np(got), as_np(ref)
    assert g.shape == r.shape, what
    if dtype in NP_INTS:
        bad = np.flatnonzero(g != r)
    else:
        gn, rn = np.isnan(g), np.isnan(r)
        if op in ("min", "max"):
            same = (g == r)
        else:
            same = raw(got) == raw(ref)
        bad = np.flatnonzero(~np.where(rn, gn, same & ~gn))
    if bad.size:
        i = bad[:6]
        raise AssertionError(f"{what}: {bad.size} of {g.size} wrong, first at {i}: "
                             f"got {g[i]} expected {r[i]}")


def copy(x):
    return x.clone() if isinstance(x, torch.Tensor) else x.copy()


def empty_like(x):
    return torch.empty_like(x) if isinstance(x, torch.Tensor) else np.empty_like(x)


# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype,op", CASES)
def test_reduce_local_matches_reference(dtype, op, n):
    """reduce_local(a, b, out, op) equals numpy/torch for every dtype x op x length."""
    a, b = make_pair(dtype, n, _seed(dtype, op, n))
    a0, b0 = copy(a), copy(b)
    ref = reference(dtype, op, a, b)
    out = empty_like(a)
    ret = ringcomm.reduce_local(a, b, out, op)
    assert ret is out
    assert_kernel_equal(dtype, op, out, ref, f"{dtype} {op} n={n} out-of-place")
    assert_kernel_equal(dtype, "sum", a, a0, "input a modified")
    assert_kernel_equal(dtype, "sum", b, b0, "input b modified")
    # in place: out is a, then out is b
    ringcomm.reduce_local(a, b, a, op)
    assert_kernel_equal(dtype, op, a, ref, f"{dtype} {op} n={n} in place (out is a)")
    ringcomm.reduce_local(a0, b, b, op)
    assert_kernel_equal(dtype, op, b, ref, f"{dtype} {op} n={n} in place (out is b)")


@pytest.mark.parametrize("dtype,op", [(d, o) for d, o in CASES if d in ("float32", "float64",
                                                                           "float16", "bfloat16")
                                      and o != "avg"])
def test_reduce_local_random_bit_patterns(dtype, op):
    """Uniformly random bit patterns (subnormals, NaN payloads, inf, overflow) match the reference."""
    n = 200003
    a, b = make_pair(dtype, n, _seed("bits", dtype, op), bits=True)
    out = empty_like(a)
    ringcomm.reduce_local(a, b, out, op)
    assert_kernel_equal(dtype, op, out, reference(dtype, op, a, b), f"{dtype} {op} bits")


@pytest.mark.parametrize("dtype", NP_FLOATS + ["bfloat16"])
def test_min_max_nan_inf_semantics(dtype):
    """min/max propagate NaN from either side; +-inf order correctly; documented NaN behaviour."""
    nan, inf = float("nan"), float("inf")
    av = [nan, 1.0, nan, -inf, inf, -inf, 2.0, nan, 0.5, -3.0]
    bv = [1.0, nan, nan, 5.0, 5.0, inf, -inf, -inf, inf, -inf]
    exp_min = [nan, nan, nan, -inf, 5.0, -inf, -inf, nan, 0.5, -inf]
    exp_max = [nan, nan, nan, 5.0, inf, inf, 2.0, nan, inf, -3.0]
    for op, exp in (("min", exp_min), ("max", exp_max)):
        # repeat to cover SIMD bodies and tails at every position
        reps = 7
        if dtype == "bfloat16":
            a = torch.tensor(av * reps, dtype=torch.bfloat16)
            b = torch.tensor(bv * reps, dtype=torch.bfloat16)
        else:
            a, b = np.array(av * reps, dtype), np.array(bv * reps, dtype)
        out = empty_like(a)
        ringcomm.reduce_local(a, b, out, op)
        np.testing.assert_array_equal(as_np(out), np.array(exp * reps, np.float32),
                                      err_msg=f"{dtype} {op}")


@pytest.mark.parametrize("dtype", NP_FLOATS + ["bfloat16"])
def test_sum_inf_nan_semantics(dtype):
    """sum: inf + -inf is NaN, inf + finite is inf, NaN propagates, overflow gives inf."""
    big = {"float16": 65504.0, "bfloat16": 3.3e38, "float32": 3.4e38, "float64": 1.7e308}[dtype]
    nan, inf = float("nan"), float("inf")
    av = [inf, inf, -inf, nan, 1.0, big, -big]
    bv = [-inf, 1.0, -2.0, 2.0, nan, big, -big]
    exp = [nan, inf, -inf, nan, nan, inf, -inf]
    if dtype == "bfloat16":
        a, b = (torch.tensor(v * 5, dtype=torch.bfloat16) for v in (av, bv))
    else:
        a, b = (np.array(v * 5, dtype) for v in (av, bv))
    out = empty_like(a)
    ringcomm.reduce_local(a, b, out, "sum")
    np.testing.assert_array_equal(as_np(out), np.array(exp * 5, np.float64), err_msg=dtype)


@pytest.mark.parametrize("dtype", NP_FLOATS + NP_INTS)
def test_reduce_local_unaligned(dtype):
    """Kernels are correct on contiguous buffers that start off any SIMD alignment."""
    n = 1031
    for shift in (1, 3):
        a, b = make_pair(dtype, n + shift, _seed("unaligned", dtype, shift))
        a, b = a[shift:], b[shift:]
        store = np.empty(n + shift, dtype)
        out = store[shift:]
        for op in ("sum", "max"):
            ringcomm.reduce_local(a, b, out, op)
            assert_kernel_equal(dtype, op, out, reference(dtype, op, a, b),
                                f"{dtype} {op} shift {shift}")


@pytest.mark.parametrize("dtype", ["float32", "float16", "int32"])
def test_reduce_local_torch_tensors(dtype):
    """reduce_local accepts torch tensors of the numpy dtypes and matches numpy."""
    a, b = make_pair(dtype, 1001, _seed("torch", dtype))
    ta, tb = torch.from_numpy(a.copy()), torch.from_numpy(b.copy())
    out = torch.empty_like(ta)
    ringcomm.reduce_local(ta, tb, out, "sum")
    assert_kernel_equal(dtype, "sum", out.numpy(), reference(dtype, "sum", a, b), dtype)


@pytest.mark.parametrize("n", [0, 1, 7, 33, 100003])
@pytest.mark.parametrize("dtype", NP_FLOATS + ["bfloat16"])
@pytest.mark.parametrize("divisor", [1, 2, 3, 4, 7])
def test_scale_local(dtype, divisor, n):
    """scale_local divides in place (float32 math for 16-bit types), matching true division."""
    a, _ = make_pair(dtype, n, _seed("scale", dtype, n))
    buf = copy(a)
    ret = ringcomm.scale_local(buf, divisor)
    assert ret is buf
    with np.errstate(all="ignore"):
        if dtype == "bfloat16":
            ref = (a.float() / divisor).to(torch.bfloat16)
        elif dtype == "float16":
            ref = (a.astype(np.float32) / np.float32(divisor)).astype(np.float16)
        else:
            ref = a / np.array(divisor, dtype)
    assert_kernel_equal(dtype, "sum", buf, ref, f"{dtype} / {divisor} n={n}")


def test_reduce_local_argument_errors():
    """reduce_local rejects mismatched dtypes/sizes, invalid op/dtype pairs, bool and bad buffers."""
    f = np.ones(8, np.float32)
    i = np.ones(8, np.int32)
    with pytest.raises(TypeError):
        ringcomm.reduce_local(f, i, np.empty(8, np.float32), "sum")
    with pytest.raises(ValueError):
        ringcomm.reduce_local(f, np.ones(9, np.float32), np.empty(8, np.float32), "sum")
    with pytest.raises(ValueError, match="op"):
        ringcomm.reduce_local(i, i, np.empty(8, np.int32), "avg")
    with pytest.raises(ValueError, match="op"):
        ringcomm.reduce_local(f, f, np.empty(8, np.float32), "bxor")
    with pytest.raises(ValueError, match="op"):
        ringcomm.reduce_local(f, f, np.empty(8, np.float32), "mean")
    b = np.ones(8, bool)
    with pytest.raises(TypeError):
        ringcomm.reduce_local(b, b, np.empty(8, bool), "max")
    with pytest.raises(ValueError, match="out"):
        ringcomm.reduce_local(f, f, np.empty(16, np.float32)[::2], "sum")
    ro = np.empty(8, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        ringcomm.reduce_local(f, f, ro, "sum")
    with pytest.raises(TypeError):
        ringcomm.reduce_local(np.ones(8, np.complex64), np.ones(8, np.complex64),
                              np.ones(8, np.complex64), "sum")


def test_scale_local_rejects_integers():
    """scale_local refuses integer buffers (avg is floats-only)."""
    with pytest.raises(TypeError, match="buf"):
        ringcomm.scale_local(np.ones(4, np.int32), 2)


def _cpu_flags():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_isa_matches_environment():
    """reduce_isa() honours RINGCOMM_ISA, else picks avx2 exactly when the CPU has AVX2+F16C+FMA."""
    want = os.environ.get("RINGCOMM_ISA")
    if want in ("generic", "avx2"):
        assert ringcomm.reduce_isa() == want
    else:
        has = {"avx2", "f16c", "fma"} <= _cpu_flags()
        assert ringcomm.reduce_isa() == ("avx2" if has else "generic")


@pytest.mark.timeout(900)
def test_generic_isa_subprocess():
    """This whole module passes again with RINGCOMM_ISA=generic (the baseline kernel set)."""
    env = dict(os.environ, RINGCOMM_ISA="generic")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           str(Path(__file__)), "-k", "not generic_isa_subprocess"]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=800, cwd=str(Path(__file__).resolve().parent.parent))
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, f"RINGCOMM_ISA=generic run failed:\n{out}"
    assert " passed" in out and "skipped" not in out and "deselected" in out, out
