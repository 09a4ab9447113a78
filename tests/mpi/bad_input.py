"""bad input raises before any communication starts.

One rank at a time (then every rank) makes each kind of bad allreduce call and
must get ValueError/TypeError; the others make no call meanwhile.  Since no
byte was exchanged, the communicator must stay usable: a correct allreduce by
all ranks afterwards must give the right sum.
"""

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, finish, get_torch


def bad_calls(comm):
    """(description, exception type, callable); each must raise locally."""
    torch = get_torch()
    x = np.arange(100, dtype=np.float32)
    ro = np.arange(100, dtype=np.float32)
    ro.flags.writeable = False
    return [
        ("non-contiguous buf", ValueError, lambda: comm.allreduce(x[::2])),
        ("non-contiguous out", ValueError,
         lambda: comm.allreduce(x[:50], out=np.empty(100, np.float32)[::2])),
        ("read-only buf", ValueError, lambda: comm.allreduce(ro)),
        ("read-only out", ValueError, lambda: comm.allreduce(x, out=ro)),
        ("complex dtype", TypeError, lambda: comm.allreduce(np.zeros(4, np.complex64))),
        ("bool dtype", TypeError, lambda: comm.allreduce(np.zeros(4, bool))),
        ("out size", ValueError, lambda: comm.allreduce(x, out=np.empty(99, np.float32))),
        ("out dtype", ValueError, lambda: comm.allreduce(x, out=np.empty(100, np.float64))),
        ("unknown op", ValueError, lambda: comm.allreduce(x, op="median")),
        ("avg on int", ValueError, lambda: comm.allreduce(np.ones(4, np.int32), op="avg")),
        ("band on float", ValueError, lambda: comm.allreduce(x, op="band")),
        ("unknown algorithm", ValueError, lambda: comm.allreduce(x, algorithm="butterfly")),
        ("torch non-contiguous", ValueError,
         lambda: comm.allreduce(torch.ones(10, 10, dtype=torch.bfloat16).t())),
    ]


def good_round(comm, tag):
    x = np.arange(4099, dtype=np.int64) + RANK * 1000003
    comm.allreduce(x)
    expect = SIZE * np.arange(4099, dtype=np.int64) + 1000003 * (SIZE * (SIZE - 1) // 2)
    assert np.array_equal(x, expect), f"{tag}: allreduce after bad calls gives wrong sums"


def main():
    ncases = 0
    with ringcomm.Communicator.from_mpi(WORLD) as comm:
        for culprit in list(range(SIZE)) + ["all"]:
            if culprit == "all" or culprit == RANK:
                for desc, exc, call in bad_calls(comm):
                    try:
                        call()
                    except exc:
                        ncases += 1
                    else:
                        raise AssertionError(f"{desc}: no {exc.__name__} raised")
            good_round(comm, f"after rank {culprit}'s bad calls")
            ncases += 1
    finish("bad_input", ncases)


if __name__ == "__main__":
    main()
