# callctl — the two commands: `make run` and `make test` (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STATE ?= .state
export CALLCTL_ASTERISK_ROOT ?= /var/cache/callctl/asterisk-root

.PHONY: run test lint unit integration deps venv asterisk-root bench bench-cdr clean

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

test: deps venv asterisk-root
	$(PY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check callctl tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: bench-cdr

bench-cdr: deps venv
	$(PY) -m bench.cdr_pipeline

clean:
	rm -rf $(VENV) $(STATE)
