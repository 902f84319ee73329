# Two entry points (see README): `make demo` runs every notebook on the phantom data,
# `make test` runs the test suite. Each creates the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= runs/demo
PROFILE ?= quick
# 2: independent notebooks side by side, one torch thread each (medlsdm.runner.PLAN)
JOBS ?= 2

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch first (a plain `torch` could pull a multi-GB CUDA build)
	$(PY) -m pip install --quiet torch==2.13.0
	# the tested versions (constraints.txt) within pyproject.toml's ranges
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,radiomics]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/medlsdm run --profile $(PROFILE) --run-dir $(RUN_DIR) --jobs $(JOBS)

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs
