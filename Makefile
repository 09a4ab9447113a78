# The README's two commands: `make demo` and `make test`.  Both set up .venv
# on first use (Python 3, a C compiler and make are all they need).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ringcomm-installed
SOURCES := $(shell find csrc src -name '*.c' -o -name '*.h' -o -name '*.pyx' -o -name '*.pxd' 2>/dev/null | grep -v '_core.c$$')
NP     ?= 4

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python requirements-dev.txt pyproject.toml setup.py $(SOURCES)
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-build-isolation -e .
	@touch $@

test: setup
	$(BIN)/python -m pytest tests -q

demo: setup
	@echo "== data-parallel training over ringcomm: mpirun -n $(NP) =="
	$(BIN)/mpirun -n $(NP) $(BIN)/python examples/train_allreduce.py
	@echo "== pipeline-parallel training (1F1B) over ringcomm send/recv: mpirun -n $(NP) =="
	$(BIN)/mpirun -n $(NP) $(BIN)/python examples/train_pipeline.py
	@echo "== all-reduce benchmark, 2 ranks, ringcomm vs MPI =="
	$(BIN)/mpirun -n 2 $(BIN)/python -m ringcomm.bench -b 8 -e 64M -f 8 -a all --peers mpi
	@echo "== all-reduce benchmark, $(NP) ranks, ringcomm vs MPI =="
	$(BIN)/mpirun -n $(NP) $(BIN)/python -m ringcomm.bench -b 8 -e 16M -f 8 -a all --peers mpi

bench: setup
	$(BIN)/mpirun -n 2 $(BIN)/python -m pytest benches --benchmark-only -q

clean:
	rm -rf build src/ringcomm/_core.c src/ringcomm/*.so *.egg-info src/*.egg-info

# README's performance table, docs/perf.json and docs/perf.png from bench runs
# at 2 and 4 ranks (a few minutes; run it on a quiet machine)
.PHONY: perf-table
perf-table: setup
	$(BIN)/python tools/perf_table.py
