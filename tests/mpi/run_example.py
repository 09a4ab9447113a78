"""Run an example from examples/ as an mpirun worker: run_example.py NAME.py [ARGS...]

Imports examples/NAME.py, calls its ``main(ARGS)`` and, when it returns 0 (its
own checks passed), prints the RINGCOMM-WORKER-OK line that ``run_mpi``
expects.  A non-zero return exits with that code, which (under ``python -m
mpi4py``) aborts the job; the examples agree on their verdict across ranks, so
every rank fails together.
"""

import importlib.util
import sys
from pathlib import Path

from _common import finish

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def main():
    name, args = sys.argv[1], sys.argv[2:]
    path = EXAMPLES / name
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rc = module.main(args)
    if rc:
        print(f"run_example: {name} {' '.join(args)} returned {rc}", file=sys.stderr, flush=True)
        sys.exit(rc)
    finish(path.stem, 1)


if __name__ == "__main__":
    main()
