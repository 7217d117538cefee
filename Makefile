# vfusion3d: `make tiny` runs the whole pipeline at the tiny preset, `make test` runs the tests.
# the project's virtual environment, made by scripts/setup.sh (every target below runs `setup` first)
PY ?= $(CURDIR)/.venv/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export VFUSION3D_ARTIFACT_ROOT ?= $(CURDIR)/artifacts
export VFUSION3D_PRESET ?= tiny
export OMP_WAIT_POLICY ?= PASSIVE
PORT ?= 3000
MLFLOW_PORT ?= 5000
ABLATION_PRESET ?= mini

.PHONY: setup setup-test tiny test test-fast lint ui mlflow ablation
setup:  ## packages, this project and the Dagster instance home (no PostgreSQL server: running the pipeline needs none)
	@bash scripts/setup.sh

setup-test:  ## setup + what only tests need: a PostgreSQL server (tests/scaling), headless Chromium (UI page tests)
	@bash scripts/setup.sh --for-tests

tiny: setup  ## the whole asset graph, every partition, at the tiny preset: two backfills through a dagster dev it starts (sqlite instance, local artifacts)
	$(PY) -m vfusion3d_pipeline.whole_graph

test: setup-test  ## lint + the whole test suite (the slowest tests' durations printed at the end)
	$(PY) -m ruff check .
	$(PY) -m pytest -q --durations=15 tests

test-fast: setup  ## lint + every test not marked slow (iterating; `make test` runs everything)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow" tests

ablation: setup  ## the data-source ablation experiment (job `ablation`, ~45 min at mini), its report copied into docs/
	$(PY) -m dagster asset materialize -m vfusion3d_pipeline.definitions --select ablation_report \
		--config-json '{"ops": {"ablation_report": {"config": {"preset": "$(ABLATION_PRESET)"}}}}'
	$(PY) -m vfusion3d_core.ablation export --artifact-root $(VFUSION3D_ARTIFACT_ROOT) --docs docs

lint:
	$(PY) -m ruff check .

ui: setup  ## the Dagster UI (webserver + daemon) on http://127.0.0.1:$(PORT)
	$(PY) -m dagster dev -w workspace.yaml -h 127.0.0.1 -p $(PORT)

# the pipeline's MLflow store: $MLFLOW_TRACKING_URI, else sqlite under the artifact root (default_tracking_uri)
MLFLOW_STORE ?= $(or $(MLFLOW_TRACKING_URI),sqlite:///$(abspath $(VFUSION3D_ARTIFACT_ROOT))/mlflow.db)
mlflow: setup  ## MLflow's UI on http://127.0.0.1:$(MLFLOW_PORT) over the pipeline's tracking store
	@mkdir -p "$(VFUSION3D_ARTIFACT_ROOT)/mlflow-artifacts"
	$(PY) -m mlflow ui --backend-store-uri "$(MLFLOW_STORE)" \
		--default-artifact-root "file://$(abspath $(VFUSION3D_ARTIFACT_ROOT))/mlflow-artifacts" \
		--host 127.0.0.1 --port $(MLFLOW_PORT)
