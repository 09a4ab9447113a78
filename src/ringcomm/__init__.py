"""ringcomm: fast collective communication for CPU processes.

    import ringcomm
    comm = ringcomm.init()              # under mpirun (mpi4py) or torchrun
    comm.allreduce(array)               # in place, sum over all ranks
"""
from ringcomm._core import (ANY_SOURCE, HAVE_MPI, TAG_UB, Communicator, ReduceOp, Request,
                            RingcommError, __version__, algorithms, reduce_isa, reduce_local,
                            scale_local)
from ringcomm.bootstrap import init

__all__ = ["ANY_SOURCE", "TAG_UB", "Communicator", "ReduceOp", "Request", "RingcommError", "init", "algorithms", "reduce_isa",
           "reduce_local", "scale_local", "HAVE_MPI", "__version__"]
