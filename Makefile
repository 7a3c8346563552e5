# wdgrid: the two commands a user needs are `make run` and `make test`; `make install` is what both start with.
# Both work on a fresh clone (they create .venv) and are fast no-ops when .venv is up to date.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run demo test browser kernels reproduce

install: $(STAMP)

# Re-install only when the project's dependency files change.
$(STAMP): pyproject.toml constraints.txt examples/wdgrid-examples/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "wdgrid needs Python >= 3.11; set PYTHON=/path/to/python3.11")'
	@test -x $(BIN)/python || { \
		echo "wdgrid: first install into $(VENV): about 6.6 GB (PyTorch with its CUDA libraries, Ray), 3-5 minutes on 2 cores."; \
		$(PYTHON) -m venv $(VENV); }
	@# A stale wdgrid.egg-info beside the code would hide the entry points (plugins) of the fresh install.
	@rm -rf wdgrid.egg-info
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar on -c constraints.txt -e '.[dev]'
	@# The example plugin package (README, "Your own model"): the tests sweep its model and data set.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e examples/wdgrid-examples
	@touch $(STAMP)

# The fused CPU kernels (workers/fused.py) are C++ compiled for this machine's CPU: here, once (~30 s, then ~2 s to
# check), rather than in the first trial that needs them. Without a C++ compiler it installs Debian's g++ (root), or
# says the batched models will run unfused.
kernels: install
	@command -v $${CXX:-c++} >/dev/null || { \
		echo "wdgrid: installing Debian's g++ for the fused CPU kernels (apt-get, about 1 minute)"; \
		apt-get install -y -qq g++ >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq g++ >/dev/null; } \
		|| echo "wdgrid: no C++ compiler (not root?): batched models train unfused; apt-get install g++"; }
	@$(BIN)/python -m workers.fused

# The service on 127.0.0.1:8000 (embedded Ray per sweep, SQLite file ./wdgrid.db); WDGRID_* variables configure it.
run: install kernels
	$(BIN)/wdgrid serve

# One small training run per optimizer on MNIST-1D, printed as a table (~11 s on 2 cores): training works here.
demo: install
	$(BIN)/wdgrid demo

# The paper's five claims through the service, as a user would make them (~30 min on 2 cores; not part of `make test`,
# whose tests/bench/test_reproduce.py runs the same pipeline at tiny sizes): reports and figures into docs/results/.
reproduce: install
	$(BIN)/python -m bench.reproduce

# The web page's tests drive a real headless browser: Debian's chromium (about 300 MB), installed once when missing.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
		echo "wdgrid: installing Debian's chromium for the web page's browser tests (apt-get, about 1 minute)"; \
		apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "wdgrid: could not install chromium (not root?); tests/service/test_pages.py will fail: apt-get install chromium"; }

test: install browser kernels
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest
