# One venv in the repo root; every target runs from it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo

.PHONY: install test test-fast lint format postgres chromium demo bench seed-comparison scaling-comparison interval-comparison interval-additions interval-end-to-end health-queries refit-comparison flag-comparison report-comparison clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

test: install postgres chromium
	$(BIN)/pytest -q

# The developer's loop: everything but the tests marked slow (processes killed
# mid-write, servers restarted, torchrun, training, fuzzing, the real universe).
test-fast: install postgres chromium
	$(BIN)/pytest -q -m "not slow"

# ruff: lint and formatting, configured in pyproject.toml
LINTED := forecaster tests benchmarks
lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: install
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

# The PostgreSQL tests start their own throwaway server from Debian's package.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  echo "installing PostgreSQL (Debian package postgresql) for the tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# The HTML report's tests drive Debian's headless Chromium (selenium + chromium-driver);
# the demo takes a screenshot of its report with it.
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Chromium (Debian packages chromium, chromium-driver) for the HTML report"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

demo: install chromium
	bash scripts/demo.sh $(DEMO)

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info forecaster.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

scaling-comparison: install
	$(BIN)/python benchmarks/scaling_comparison.py --variants "scaling=relative;scaling=minmax"

seed-comparison: install
	$(BIN)/python benchmarks/seed_comparison.py

bench: install
	$(BIN)/python benchmarks/bench.py

interval-comparison: install
	$(BIN)/pip install --quiet -e '.[interval-comparison]'
	$(BIN)/python benchmarks/interval_comparison.py

interval-additions: install
	$(BIN)/pip install --quiet -e '.[interval-comparison]'
	$(BIN)/python benchmarks/interval_additions.py

interval-end-to-end: install
	$(BIN)/pip install --quiet -e '.[interval-comparison]'
	$(BIN)/python benchmarks/interval_end_to_end.py

health-queries: install
	$(BIN)/python benchmarks/health_queries.py

refit-comparison: install
	$(BIN)/python benchmarks/refit_comparison.py

flag-comparison: install
	$(BIN)/python benchmarks/flag_comparison.py

report-comparison: install chromium
	$(BIN)/pip install --quiet -e '.[report-comparison]'
	$(BIN)/python benchmarks/report_page.py
