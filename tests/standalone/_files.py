"""A bootstrap through files in a shared directory, for tests that must run
without an MPI launcher (e.g. when a rank is killed: mpirun kills the
survivors too, which hides what they report).  Ranks are given by the
RANK / WORLD_SIZE environment variables, the directory by RINGCOMM_TEST_DIR."""

import os
import pickle
import time

from ringcomm import bootstrap

RANK = int(os.environ["RANK"])
SIZE = int(os.environ["WORLD_SIZE"])
DIR = os.environ["RINGCOMM_TEST_DIR"]

# Simulated hosts, as tests/mpi/_common.py: rank r's RINGCOMM_HOST_ID.
if os.environ.get("RINGCOMM_TEST_HOSTS"):
    os.environ["RINGCOMM_HOST_ID"] = os.environ["RINGCOMM_TEST_HOSTS"].split(",")[RANK]


class FileExchange:
    def __init__(self, name, limit=60.0):
        self.name, self.round, self.limit = name, 0, limit

    def allgather(self, obj):
        self.round += 1
        stem = os.path.join(DIR, f"{self.name}-{self.round}")
        tmp = f"{stem}-{RANK}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(obj, f)
        os.rename(tmp, f"{stem}-{RANK}.pkl")
        out, deadline = [], time.monotonic() + self.limit
        for r in range(SIZE):
            path = f"{stem}-{r}.pkl"
            while not os.path.exists(path):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"rank {RANK}: rank {r} never wrote {path}")
                time.sleep(0.005)
            with open(path, "rb") as f:
                out.append(pickle.load(f))
        return out

    def barrier(self):
        self.allgather(None)


def connect(name="world", timeout=60):
    """A ringcomm communicator over the RANK/WORLD_SIZE processes."""
    ex = FileExchange(name)
    token = ex.allgather(os.urandom(8).hex())[0]
    return bootstrap._connect(RANK, SIZE, token, timeout, ex.allgather, ex.allgather), ex
