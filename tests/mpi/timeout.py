"""timeout: a rank that never joins makes its peers fail with RC_ERR_TIMEOUT, not hang.

The last rank skips one allreduce (it waits in an MPI barrier instead); every
other rank must raise RingcommError with status_name RC_ERR_TIMEOUT once the
communicator's timeout passes.  The timeout comes from from_mpi(timeout=...)
(--arg) or from RINGCOMM_TIMEOUT set by the launcher (--env).
Usage: timeout.py --arg | --env
"""

import sys
import time

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD, finish


def main():
    assert SIZE >= 2
    mode = sys.argv[1]
    timeout = 2.0 if mode == "--arg" else None
    comm = ringcomm.Communicator.from_mpi(WORLD, timeout=timeout)
    outcome = "skipped the call"
    if RANK != SIZE - 1:
        t0 = time.monotonic()
        try:
            comm.allreduce(np.ones(100000, np.float32))
            outcome = "returned normally"
        except ringcomm.RingcommError as e:
            outcome = e.status_name if e.status_name == "RC_ERR_TIMEOUT" else \
                f"{e.status_name}: {e}"
            # the stall inspector names the rank that never came, and its last call
            if f"not arrived: {SIZE - 1} (no collective yet)" not in str(e):
                outcome = f"message does not name rank {SIZE - 1}: {e}"
        print(f"rank {RANK}: {outcome} after {time.monotonic() - t0:.2f} s", flush=True)
    WORLD.Barrier()
    comm.close()
    every = WORLD.allgather(outcome)
    bad = [f"rank {r}: {o}" for r, o in enumerate(every[:-1]) if o != "RC_ERR_TIMEOUT"]
    assert not bad, "expected RC_ERR_TIMEOUT on the waiting ranks: " + "; ".join(bad)
    finish("timeout", SIZE - 1)


if __name__ == "__main__":
    main()
