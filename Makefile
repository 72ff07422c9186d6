# Two entry points (see README): `make demo` runs the main job on MovieLens-100K, `make test` runs the tests.
# Both create the virtual environment from the repo's own pinned files first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install demo test test-unit ui clean report

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
	$(PY) -m pytest -q -rs -m "not cluster"

test-unit: install
	$(PY) -m pytest -q -m "not integration"

report: install
	$(VENV)/bin/ppm report

ui: install
	DAGSTER_HOME=$${PPM_ARTIFACTS_DIR:-$(CURDIR)/artifacts}/dagster_home $(VENV)/bin/dagster dev -m dagster_project.definitions -h 127.0.0.1

clean:
	rm -rf artifacts

# ---- scale (issue #8): real Spark standalone + Redis on loopback, cost curves (docs/scale.md) ----
.PHONY: redis test-cluster bench-scale
redis:                 # the OS package the cluster-profile test needs (no-op when installed)
	command -v redis-server >/dev/null || { [ "$$(id -u)" -eq 0 ] && apt-get install -y -qq redis-server || sudo apt-get install -y -qq redis-server; }

test-cluster: install redis
	$(PY) -m pytest -q -rs tests/integration/test_cluster_profile.py

bench-scale: install
	$(PY) benchmarks/cost_curves.py --scales 1e5,1e6 --out /tmp/ppm-cost-curves

# ---- user experience (issue #6): environment check, asset-graph screenshot (needs chromium; docs/architecture.md) ----
.PHONY: doctor screenshot
doctor: install
	$(VENV)/bin/ppm doctor

screenshot: install
	$(PY) scripts/screenshot_asset_graph.py
