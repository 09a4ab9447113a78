"""Guard for `make test-sanitize` (copied into build/sanitize/, first on PYTHONPATH).

Every Python process of that run (pytest, the mpirun workers, the processes
tests start themselves) imports this at startup.  With RINGCOMM_SANITIZE_BUILD
set it exits at once (status 3) unless

* `ringcomm` resolves to the sanitized copy under that directory (not the
  .venv's editable install), and
* the AddressSanitizer runtime is loaded (LD_PRELOAD reached this process),

so a test can never pass by silently running the ordinary build.
"""
import os
import sys


def _check():
    want = os.environ.get("RINGCOMM_SANITIZE_BUILD")
    if not want:
        return
    import importlib.util
    spec = importlib.util.find_spec("ringcomm")
    where = getattr(spec, "origin", None) or ""
    problem = None
    if not where.startswith(os.path.join(want, "")):
        problem = f"ringcomm resolves to {where or 'nothing'}, not the sanitized build in {want}"
    else:
        with open("/proc/self/maps") as f:
            if "libasan" not in f.read():
                problem = "the AddressSanitizer runtime is not loaded (LD_PRELOAD lost?)"
    if problem:
        sys.stderr.write(f"make test-sanitize: {problem} [pid {os.getpid()}: {sys.argv}]\n")
        sys.stderr.flush()
        os._exit(3)


_check()
