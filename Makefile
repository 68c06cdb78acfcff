# callctl — the two commands: `make run` and `make test` (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STATE ?= .state
export CALLCTL_ASTERISK_ROOT ?= /var/cache/callctl/asterisk-root

.PHONY: run test lint unit integration deps venv asterisk-root bench bench-cdr bench-conference bench-agi clean

deps:
	@scripts/system-deps.sh

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(VENV)/.installed

asterisk-root: deps
	@scripts/asterisk-root.sh

run: deps venv asterisk-root
	$(PY) -m scripts.run --state $(STATE)

# The suite in TEST_WORKERS processes (pytest-xdist), each with its own Asterisk and PostgreSQL; a test
# file stays in one process (its module fixtures, its own Asterisk ports). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: deps venv asterisk-root
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check callctl tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Every benchmark, bounded (about 10 minutes on 2 cores), the two ratios of issue 9 printed last.
# Longer: make bench BENCH_ARGS="--rates 2,4,8,16,24,32 --step-s 60 --hold-s 30". See docs/benchmarks.md.
bench: deps venv asterisk-root $(VENV)/.bench
	$(PY) -m bench $(BENCH_ARGS)

$(VENV)/.bench: setup.cfg
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,bench]'
	touch $@

bench-cdr: deps venv
	$(PY) -m bench.cdr_pipeline

bench-conference: deps venv asterisk-root $(VENV)/.bench
	$(PY) -m bench.conference_load $(BENCH_ARGS)

bench-agi: deps venv
	$(PY) -m bench.agi_gate

clean:
	rm -rf $(VENV) $(STATE)

# wt-affinity (issue 18): what a conference member handed to another node costs (docs/conferences.md).
.PHONY: bench-conference-hop
bench-conference-hop: deps venv asterisk-root
	$(PY) -m bench.conference_hop $(BENCH_ARGS)

# issue 18: a cluster (docs/scaling.md): PostgreSQL, Kamailio on 127.0.0.1:5060, NODES Asterisk nodes and
# their engines (NODES=2 by default, NODES=3 ...). Ctrl-C stops all of it.
.PHONY: cluster bench-cluster
NODES ?= 2
cluster: deps venv asterisk-root
	$(PY) -m scripts.cluster run --nodes $(NODES) --state $(STATE)/cluster

# SIPp through Kamailio on 1 and 2 nodes side by side; writes its section of docs/benchmarks.md.
bench-cluster: deps venv asterisk-root $(VENV)/.bench
	$(PY) -m bench.cluster $(BENCH_ARGS)

# Idle calls held up in one engine in doubling steps up to 10,000 (issue 17); see docs/benchmarks.md.
.PHONY: bench-idle
bench-idle: deps venv asterisk-root $(VENV)/.bench
	$(PY) -m bench.idle_calls $(BENCH_ARGS)

# CPU per ARI frame and per request in callctl.ari (issue 17, wt-wsfix); see docs/benchmarks.md.
.PHONY: bench-ari-frames
bench-ari-frames: venv
	$(PY) -m bench.ari_frames $(BENCH_ARGS)
