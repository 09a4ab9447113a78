"""Build the C core (csrc/) and the Cython binding as one extension module."""
import glob
import os
import sys

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - build-system requires cython
    sys.exit("building ringcomm needs Cython (pip install cython)")

csrc = sorted(glob.glob("csrc/*.c") + glob.glob("csrc/algo/*.c") +
              glob.glob("csrc/transport/*.c"))
# csrc/transport/mpi.c joins here (with MPI flags) once the MPI transport exists.

cflags = ["-std=c11", "-O3", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden",
          "-D_GNU_SOURCE"]
cflags += os.environ.get("RINGCOMM_CFLAGS", "").split()
ldflags = os.environ.get("RINGCOMM_LDFLAGS", "").split()

ext = Extension(
    "ringcomm._core",
    sources=["src/ringcomm/_core.pyx"] + csrc,
    include_dirs=["csrc/include", "csrc"],
    extra_compile_args=cflags,
    extra_link_args=ldflags,
    libraries=["rt", "pthread"],
)

setup(
    ext_modules=cythonize([ext], compiler_directives={"language_level": "3"},
                          include_path=["src"]),
)
