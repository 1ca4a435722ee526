# The two commands a new user needs:   make demo   |   make test
# Both create .venv with plain pip from pinned requirements first (idempotent: skipped when up to date).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DANQING_HOME ?= $(CURDIR)/.danqing
export DAGSTER_HOME ?= $(DANQING_HOME)/dagster

.PHONY: setup demo test test-fast ui bench clean

$(STAMP): requirements.txt pyproject.toml setup.py danqing_assets/_html.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps cn-clip==1.6.0   # only its Chinese BERT vocab.txt is used
	$(BIN)/python -m pip install --quiet --no-deps -e .
	chmod +x $(BIN)/duckdb   # the duckdb-cli wheel installs its binary without the exec bit
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)  ## sample crawl -> snapshot 'sample' -> every asset -> funnel
	$(BIN)/danqing demo

test: $(STAMP)  ## the whole suite, slow end-to-end tests included (what CI runs)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow"

ui: $(STAMP)  ## the Dagster web UI on the instance the CLI uses
	$(BIN)/python -c "from danqing_assets.cli import ensure_dagster_home; ensure_dagster_home()"
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

bench: $(STAMP)
	@failed=0; for b in benchmarks/bench_*.py benchmarks/image_filter_calibration.py; do \
		echo "== $$b"; $(BIN)/python $$b || failed=1; done; exit $$failed

clean:
	rm -rf $(DANQING_HOME)
