"""crash: a rank dies (SIGKILL) while its peers are inside an allreduce.

The job is expected to fail; the test then checks that no /dev/shm/ringcomm-*
segment is left (the segment is unlinked once every rank has mapped it).
"""

import os
import signal
import time

import numpy as np

import ringcomm
from _common import RANK, SIZE, WORLD

with ringcomm.Communicator.from_mpi(WORLD, timeout=20) as comm:
    x = np.ones(1 << 16, np.float32)
    comm.allreduce(x)
    assert x[0] == SIZE
    print(f"CRASH-WORKER-CONNECTED rank={RANK}", flush=True)
    if RANK == SIZE - 1:
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    comm.allreduce(x)  # the peers block here until the launcher kills them
