# Two entry points (see README): `make demo` runs the main job on MovieLens-100K, `make test` runs the tests.
# Both create the virtual environment from the repo's own pinned files first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install demo test test-unit ui clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0          # the CPU wheel; never let pip pick a CUDA build
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

demo: install
	$(VENV)/bin/ppm demo

test: install
	$(PY) -m pytest -q -rs

test-unit: install
	$(PY) -m pytest -q -m "not integration"

ui: install
	DAGSTER_HOME=$(CURDIR)/artifacts/dagster_home $(VENV)/bin/dagster dev -m dagster_project.definitions -h 127.0.0.1

clean:
	rm -rf artifacts
