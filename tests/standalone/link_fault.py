"""A loop of all-reduces while the test injects a link fault (tests/cluster/
test_cluster_faults.py).  Bootstrap through files (_files.py): no mpirun,
whose own control connections would kill the job when a host is cut off.

Usage: link_fault.py HOLD   (0: until an error, at most 120 s; else the loop
ends HOLD seconds after the fault: every 10 iterations the ranks agree on
it with a max all-reduce of "my HOLD seconds have passed")

Each rank writes RINGCOMM_TEST_DIR/ready-<rank> once connected, then runs
all-reduces of COUNT int32 (rank r, iteration i: base_r + i, exact sum
checked every iteration).  The test writes RINGCOMM_TEST_DIR/fault (the
wall-clock time of the fault) when it injects one.  A RingcommError ends the
loop: the rank prints

  FAULT-ERROR rank=R host=H elapsed=E status=S iter=I msg=M

(E: seconds from the fault to the error), closes the communicator and
exits 0; a finished loop prints FAULT-DONE rank=R host=H iters=N.
"""

import os
import socket
import sys
import time

import numpy as np

import ringcomm
from _files import DIR, RANK, SIZE, connect

COUNT = int(os.environ.get("FAULT_COUNT", 262144))


def fault_time():
    try:
        with open(os.path.join(DIR, "fault")) as f:
            return float(f.read())
    except (OSError, ValueError):
        return None


def main():
    hold = float(sys.argv[1])
    host = socket.gethostname()
    comm, files = connect(timeout=float(os.environ.get("RINGCOMM_TIMEOUT", "60")))
    comm.barrier()
    files.barrier()
    base = [np.random.default_rng([11, r]).integers(-1000, 1000, COUNT).astype(np.int32)
            for r in range(SIZE)]
    total = sum(b.astype(np.int64) for b in base)
    open(os.path.join(DIR, f"ready-{RANK}"), "w").close()
    start, it = time.monotonic(), 0
    try:
        while time.monotonic() - start < 120:
            if hold and it % 10 == 0:
                t = fault_time()
                done = np.array([t is not None and time.time() - t > hold], np.int32)
                comm.allreduce(done, op="max")
                if done[0]:
                    break
            x = base[RANK] + np.int32(it)
            comm.allreduce(x)
            if not np.array_equal(x, total + SIZE * it):
                bad = np.flatnonzero(x != total + SIZE * it)
                raise AssertionError(f"rank {RANK} iteration {it}: {bad.size} wrong elements")
            it += 1
    except ringcomm.RingcommError as e:
        t = fault_time()
        elapsed = time.time() - t if t is not None else -1.0
        msg = str(e).replace("\n", " ")
        print(f"FAULT-ERROR rank={RANK} host={host} elapsed={elapsed:.2f} "
              f"status={e.status_name} iter={it} msg={msg}", flush=True)
        comm.close()
        return
    print(f"FAULT-DONE rank={RANK} host={host} iters={it} "
          f"seconds={time.monotonic() - start:.2f}", flush=True)
    comm.close()


if __name__ == "__main__":
    main()
