# The README's two commands live here: `make run` and `make test` (CI runs `make lint` before it).
# torch is installed first and pinned: on a CPU-only box pip takes the CPU wheel, on a CUDA box the
# matching CUDA build; left unpinned, another package could pull a multi-GB build we did not pick.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The browser tests drive Debian's Chromium: Playwright's own browser download needs the internet.
CHROMIUM ?= /usr/bin/chromium
# The history tests also run on PostgreSQL: tests/pg.py starts a throw-away cluster with Debian's server.
POSTGRES ?= /usr/lib/postgresql
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint bench install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e ".[test]"
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) app.py

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

$(POSTGRES):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql

test: $(VENV)/.installed-test $(CHROMIUM) $(POSTGRES)
	$(PY) -m pytest

# ruff comes with the test extra; its rules are in pyproject.toml ([tool.ruff]).
lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
