"""RINGCOMM_CHECK_NAN=1: a rank whose input holds NaN or inf raises before
communicating (naming the element), and its peers raise too instead of
waiting for it.  One fresh communicator per case; dtypes float32, float64,
float16 and bfloat16; all-reduce and send.
"""

import os
import time

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, finish, get_torch, world_comm


def case(dtype, bad_value, culprit, use_send):
    comm = world_comm()
    torch = get_torch()
    x = torch.arange(1000, dtype=getattr(torch, dtype)) / 7
    if RANK == culprit:
        x[3] = bad_value
    t0 = time.monotonic()
    try:
        if use_send and SIZE > 1:
            if RANK == culprit:
                comm.send(x, (RANK + 1) % SIZE)
            comm.barrier()
        else:
            comm.allreduce(x)
        outcome = "no error"
    except ringcomm.RingcommError as e:
        outcome = e.status_name
        if RANK == culprit:
            assert "element 3" in str(e) and "RINGCOMM_CHECK_NAN" in str(e), e
        else:
            assert f"rank {culprit}" in str(e), e
    took = time.monotonic() - t0
    comm.close()
    assert outcome == "RC_ERR_INVALID_ARG", (dtype, bad_value, outcome)
    assert took < 10, took
    return 1


def main():
    assert os.environ.get("RINGCOMM_CHECK_NAN") == "1"
    n = 0
    for i, (dtype, bad) in enumerate([("float32", float("nan")), ("float64", float("inf")),
                                      ("float16", float("-inf")), ("bfloat16", float("nan"))]):
        n += case(dtype, bad, i % SIZE, use_send=False)
    n += case("float32", float("inf"), SIZE - 1, use_send=True)
    # finite data passes, integers are never checked
    comm = world_comm()
    y = np.arange(10, dtype=np.float32)
    comm.allreduce(y)
    z = np.full(10, np.iinfo(np.int32).max, np.int32)
    comm.allreduce(z, op="max")
    comm.close()
    finish("check_nan", n + 1)


if __name__ == "__main__":
    main()
