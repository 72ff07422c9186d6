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
	@$(VENV)/bin/ppm demo

# Everything, including the cluster-profile test (real Spark standalone + redis-server on loopback, ~2 min;
# docs/scale.md §2) and the real-browser UI test (the OS's chromium + chromium-driver): `redis` and `browser`
# install the OS packages first when they are missing.
test: install redis browser
	$(PY) -m pytest -q -rs

test-unit: install
	$(PY) -m pytest -q -m "not integration"

report: install
	$(VENV)/bin/ppm report

# Dagster UI (webserver + daemon) for this artifacts folder's instance on UI_HOST:UI_PORT (default loopback,
# 3000): writes the dagster.yaml it needs first (dagster_project/instance.py: nux and telemetry off, one slot
# per concurrency pool) and prints the URL of the asset graph with every group open. `dagster dev` warns that
# it is superseded by `dg dev`, which needs the dagster-dg-cli package this project does not install: that one
# warning is ignored
UI_HOST ?= 127.0.0.1
UI_PORT ?= 3000
ui: install
	@home=$${PPM_ARTIFACTS_DIR:-$(CURDIR)/artifacts}/dagster_home; \
	$(PY) -m dagster_project.instance --home "$$home" --host $(UI_HOST) --port $(UI_PORT) && \
	echo "(the UI answers once dagster dev logs that it is serving; Ctrl-C stops it)" && \
	DAGSTER_HOME="$$home" PYTHONWARNINGS='ignore:Function `dev_command` is superseded' \
	  exec $(VENV)/bin/dagster dev -m dagster_project.definitions -h $(UI_HOST) -p $(UI_PORT)

clean:
	rm -rf artifacts

# ---- scale (issue #8): real Spark standalone + Redis on loopback, cost curves (docs/scale.md) ----
.PHONY: redis browser test-cluster bench-scale
# the OS package the cluster-profile test needs (no-op when installed; as root, or through sudo when there is one)
redis:
	@command -v redis-server >/dev/null || { \
	  echo "redis-server missing: installing the OS package (apt-get install redis-server)"; \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else \
	    echo "error: redis-server is not installed and this user cannot install it; as root run:" \
	         "apt-get update && apt-get install -y redis-server" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server && command -v redis-server >/dev/null; }

# the OS packages of the real-browser UI test (Playwright's own browser download cannot work offline)
browser:
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { \
	  echo "chromium / chromium-driver missing: installing the OS packages (apt-get install chromium chromium-driver)"; \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else \
	    echo "error: chromium is not installed and this user cannot install it; as root run:" \
	         "apt-get update && apt-get install -y chromium chromium-driver" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
	    && command -v chromium >/dev/null && command -v chromedriver >/dev/null; }

# the cluster-profile test alone (it is also part of `make test`)
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
