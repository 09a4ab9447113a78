"""python -m ringcomm.tune, run in-process under mpirun (argv passed on)."""
import sys

from _common import WORLD, finish
from ringcomm import tune


def main():
    assert tune.main(sys.argv[1:]) == 0
    finish("tune_run", 1)


if __name__ == "__main__":
    main()
