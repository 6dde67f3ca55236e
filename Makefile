# Fitness Centre Medallion Data Platform. `make help` lists the targets.
# Every target creates .venv/ and installs the project first when needed, so a fresh machine
# with Python 3.11 and Java 17 needs nothing else.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/.data/dagster_home

.DEFAULT_GOAL := help
.PHONY: help install browser secrets demo test lint dev live broker bench reset

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[local,dev]"
	@touch $(STAMP)

install: $(STAMP) ## Create .venv/ and install the project with its dev tools

# The local Spark driver's class archive (Java CDS): recorded once per pyspark and Java (about a
# minute), a no-op afterwards; every later driver starts faster with it.
ARCHIVE := $(BIN)/fitness-assets spark-archive

demo: $(STAMP) ## Simulate a small chain, materialize the whole graph, print the report
	@$(ARCHIVE)
	$(BIN)/fitness-assets demo

browser: ## Debian's Chromium for the UI tests (apt-get; as root, as CI runs)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "Chromium is not installed and this user cannot apt-get it: the UI tests will be skipped (CI fails instead)"

secrets: $(STAMP) ## Scan every tracked file for committed credentials (detect-secrets)
	git ls-files -z | xargs -0 $(BIN)/detect-secrets-hook

test: $(STAMP) browser secrets ## Secrets scan, lint, the whole test suite (real Spark, Delta, Kafka broker, browser), then the silver/gold tests marked connect again on Spark Connect
	$(BIN)/ruff check fitness_assets fitness_assets_tests
	@$(ARCHIVE)
	$(BIN)/python -m pytest
	FITNESS_TEST_SPARK=connect $(BIN)/python -m pytest -m connect fitness_assets_tests/test_silver_gold.py fitness_assets_tests/test_business_gold.py fitness_assets_tests/test_store.py fitness_assets_tests/test_config.py

lint: $(STAMP) ## Lint only
	$(BIN)/ruff check fitness_assets fitness_assets_tests

dev: $(STAMP) ## Open the Dagster UI (and its daemon) on http://127.0.0.1:3000
	@$(ARCHIVE)
	$(BIN)/python -c "from fitness_assets.instance import ensure_instance; ensure_instance()"
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

live: $(STAMP) ## The live platform: local Kafka broker, a producer playing the chain, the UI with sensors and automation
	@$(ARCHIVE)
	$(BIN)/fitness-assets live

broker: $(STAMP) ## Only the local Kafka-protocol broker on 127.0.0.1:9092, until Ctrl-C
	$(BIN)/fitness-assets broker

bench: $(STAMP) ## Run the benchmarks; results go to benchmarks/results.json and RESULTS.md, compared with the last committed run
	@$(ARCHIVE)
	$(BIN)/python -m benchmarks

reset: $(STAMP) ## Delete the local landing zone, lakehouse and Dagster state under .data/
	$(BIN)/fitness-assets reset
