# The README's two commands: `make demo` and `make test`.  Both set up .venv
# on first use (Python 3, a C compiler and make are all they need).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ringcomm-installed
SOURCES := $(shell find csrc src -name '*.c' -o -name '*.h' -o -name '*.pyx' -o -name '*.pxd' 2>/dev/null | grep -v '_core.c$$')
NP     ?= 4

.PHONY: setup test test-cluster test-sanitize demo bench clean

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python requirements-dev.txt pyproject.toml setup.py $(SOURCES)
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-build-isolation -e .
	@touch $@

test: setup
	$(BIN)/python -m pytest tests -q --ignore=tests/cluster

# `make test-cluster` (root): the multi-host suites and link faults over real
# namespace hosts made by tools/cluster.py (docs/cluster.md): own network
# namespace, /dev/shm and hostname per host, shaped links.  ~8 min on 2 cores.
# Packet loss without netem needs iptables (.ci/run installs it).
test-cluster: setup
	$(BIN)/python tools/cluster.py cleanup
	$(BIN)/python -m pytest tests/cluster -q --durations=15

# `make test-sanitize`: the C core and the binding built with AddressSanitizer
# and UndefinedBehaviorSanitizer into build/sanitize (the .venv build and
# src/ringcomm are not touched), then, with the ASan runtime preloaded into
# every Python process (Python itself is not instrumented; mpirun passes the
# environment on to its ranks): the C kernel test, the unit tests and a
# subset of the mpirun tests chosen to finish in ~5-8 minutes on 2 cores.
# Any ASan or UBSan report aborts its process and fails the target.
# tests/sanitize/sitecustomize.py makes every Python process of the run exit
# unless ringcomm comes from build/sanitize with ASan loaded.
# Other tests: make test-sanitize SAN_TESTS='tests/test_p2p_async.py -k split'
SAN_DIR    := build/sanitize
SAN_TMP    := build/sanitize-tmp
SAN_CC     ?= gcc
SAN_FLAGS  := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1
# Python's own CFLAGS carry -fwrapv, which would hide signed overflow from UBSan
SAN_XFLAGS := -fno-wrapv
SAN_STAMP  := $(SAN_DIR)/.ringcomm-built
# detect_leaks=0: CPython keeps objects alive until exit by design
SAN_ASAN_OPTIONS  := detect_leaks=0:abort_on_error=1:halt_on_error=1:print_summary=1
SAN_UBSAN_OPTIONS := print_stacktrace=1:halt_on_error=1:abort_on_error=1
# the ASan runtime the sanitized extension links against (expanded when the recipe runs)
SAN_ASAN_LIB = $(shell ldd $(SAN_DIR)/ringcomm/_core*.so 2>/dev/null | awk '/libasan/ {print $$3}')
# --capture=sys: a report written to fd 2 by an aborting pytest process (also the
# one test_kernels.py starts) reaches the terminal instead of a lost capture file
SAN_ENV = PYTHONPATH=$(CURDIR)/$(SAN_DIR) RINGCOMM_SANITIZE_BUILD=$(CURDIR)/$(SAN_DIR) PYTEST_ADDOPTS=--capture=sys \
	LD_PRELOAD=$(SAN_ASAN_LIB) ASAN_OPTIONS=$(SAN_ASAN_OPTIONS) UBSAN_OPTIONS=$(SAN_UBSAN_OPTIONS)
SAN_TESTS ?= tests/test_api.py tests/test_kernels.py tests/test_fuzz.py \
	'tests/test_collectives.py::test_coll_sweep_small_counts[3]' \
	'tests/test_collectives.py::test_coll_many_chunks[3]' \
	'tests/test_p2p_async.py::test_p2p_all_by_address[2]' \
	'tests/test_trace.py::test_trace_and_debug[3]' \
	'tests/test_mpi.py::test_allreduce_sweep_small_counts[3]' \
	'tests/test_mpi.py::test_allreduce_large_count[3]' \
	'tests/test_mpi.py::test_allreduce_many_chunks[2]' \
	'tests/test_mpi.py::test_allreduce_two_slots[4]' \
	'tests/test_mpi.py::test_allreduce_large_count_small_chunks[2]' \
	'tests/test_mpi.py::test_allreduce_streaming_stores[2]' \
	'tests/test_mpi.py::test_determinism[3]' \
	'tests/test_mpi.py::test_mismatch_raises_on_every_rank[3]' \
	'tests/test_mpi.py::test_bad_input_raises_before_communicating[2]' \
	'tests/test_mpi.py::test_env_rank0_values_rule[2]' \
	'tests/test_mpi.py::test_barrier[3]' \
	'tests/test_mpi.py::test_multiple_communicators[4]' \
	'tests/test_mpi.py::test_crash_leaves_no_shm[2]' \
	'tests/test_mpi.py::test_absent_peer_times_out' \
	'tests/test_mpi.py::test_gil_released_while_waiting[2]' \
	'tests/test_mpi.py::test_call_sequences[3]' \
	'tests/test_p2p_async.py::test_p2p[3]' \
	'tests/test_p2p_async.py::test_p2p_small_chunks[2]' \
	'tests/test_p2p_async.py::test_p2p_errors' \
	'tests/test_p2p_async.py::test_async' \
	'tests/test_p2p_async.py::test_split[3]' \
	'tests/test_reliability.py::test_peer_killed[3-allreduce-ring]' \
	'tests/test_reliability.py::test_peer_killed[2-async]' \
	'tests/test_reliability.py::test_peer_killed[3-recv]' \
	'tests/test_reliability.py::test_check_nan[3]'

$(SAN_STAMP): $(STAMP) setup.py $(SOURCES) tests/c/test_reduce.c
	rm -rf $(SAN_DIR) $(SAN_TMP)
	RINGCOMM_CFLAGS="$(SAN_FLAGS) $(SAN_XFLAGS)" RINGCOMM_LDFLAGS="-fsanitize=address,undefined" CC=$(SAN_CC) \
		$(BIN)/python setup.py -q build_ext --force --build-lib $(SAN_DIR) --build-temp $(SAN_TMP)
	$(SAN_CC) $(SAN_FLAGS) -std=c11 -D_GNU_SOURCE -I csrc/include -I csrc \
		csrc/reduce.c tests/c/test_reduce.c -lm -o $(SAN_TMP)/test_reduce
	@touch $@

test-sanitize: $(SAN_STAMP)
	@test -n "$(SAN_ASAN_LIB)" || { echo "test-sanitize: $(SAN_DIR)/ringcomm/_core*.so does not link libasan" >&2; exit 1; }
	rm -f $(SAN_DIR)/ringcomm/*.py
	cp src/ringcomm/*.py $(SAN_DIR)/ringcomm/
	cp tests/sanitize/sitecustomize.py $(SAN_DIR)/
	@echo "== ASan+UBSan: the sanitized build is the one imported =="
	$(SAN_ENV) $(BIN)/python -c 'import ringcomm._core as c; \
		assert c.__file__.startswith("$(CURDIR)/$(SAN_DIR)/"), c.__file__; print("ringcomm._core:", c.__file__)'
	@echo "== ASan+UBSan: C kernel test (tests/c/test_reduce.c) =="
	ASAN_OPTIONS=$(SAN_ASAN_OPTIONS) UBSAN_OPTIONS=$(SAN_UBSAN_OPTIONS) $(SAN_TMP)/test_reduce
	@echo "== ASan+UBSan: unit tests and a subset of the mpirun tests =="
	$(SAN_ENV) $(BIN)/python -m pytest -q --durations=10 $(SAN_TESTS)

demo: setup
	@echo "== data-parallel training over ringcomm: mpirun -n $(NP) =="
	$(BIN)/mpirun -n $(NP) $(BIN)/python examples/train_allreduce.py
	@echo "== pipeline-parallel training (1F1B) over ringcomm send/recv: mpirun -n $(NP) =="
	$(BIN)/mpirun -n $(NP) $(BIN)/python examples/train_pipeline.py
	@echo "== DistributedDataParallel over the torch backend \"ringcomm\": mpirun -n $(NP) =="
	$(BIN)/mpirun -n $(NP) $(BIN)/python examples/train_ddp.py --steps 200
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
