# The two commands a new user needs:   make demo   |   make test
# Both create .venv with plain pip from pinned requirements first (idempotent: skipped when up to date).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DANQING_HOME ?= $(CURDIR)/.danqing
export DAGSTER_HOME ?= $(DANQING_HOME)/dagster

.PHONY: setup demo test test-fast fuzz fuzz-asan ui bench clean

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

FUZZ_PROFILE ?= long
fuzz: $(STAMP)  ## the fuzz tests, searching longer than CI does (FUZZ_PROFILE=ci: CI's short, fixed run)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest danqing_assets_tests/fuzz -p no:cacheprovider --hypothesis-profile=$(FUZZ_PROFILE)

# Optional, not in CI: the HTML fuzz and extraction tests against an AddressSanitizer + UBSan build of the C tokenizer
# (build/asan/_html.so, loaded in place of the installed build by fuzz/asan_run.py). Needs gcc or clang.
ASAN_SO := build/asan/_html.so
fuzz-asan: $(STAMP)
	mkdir -p build/asan
	$(CC) -shared -fPIC -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
		-I"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
		danqing_assets/_html.c -o $(ASAN_SO)
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 HF_HUB_OFFLINE=1 \
	$(BIN)/python -m danqing_assets_tests.fuzz.asan_run $(ASAN_SO) danqing_assets_tests/fuzz/test_fuzz_html.py \
		danqing_assets_tests/lib/test_html.py -p no:cacheprovider -q --hypothesis-profile=$(FUZZ_PROFILE)

ui: $(STAMP)  ## the Dagster web UI on the instance the CLI uses
	$(BIN)/python -c "from danqing_assets.cli import ensure_dagster_home; ensure_dagster_home()"
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

bench: $(STAMP)
	@failed=0; for b in benchmarks/bench_*.py benchmarks/image_filter_calibration.py; do \
		echo "== $$b"; $(BIN)/python $$b || failed=1; done; exit $$failed

clean:
	rm -rf $(DANQING_HOME)
