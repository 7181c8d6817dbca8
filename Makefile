# robustlab: `make demo` writes a robustness report on the bundled digits dataset (offline);
# `make test` runs the whole test suite. Both create .venv and install what they need.
# `make check` is the inner loop: lint, layer contract, types and the fast tests.
# `make bench` measures speed and memory against CleverHans and ART (benchmarks/RESULTS.md),
# tables (TABULAR.md), DP-SGD (PRIVACY.md), poisoning (POISONING.md), monitoring (MONITORING.md)
# and tf.distribute (DISTRIBUTED.md). `make gpu-check` is the one-command GPU check (GPU.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OUT ?= out/demo

.PHONY: demo test check static lint bench clean browser audit audit-deps gpu-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/robustlab run notebooks/robustness_report.ipynb --out $(OUT) -p dataset digits
	@echo "open $(OUT)/report.html"

test: $(STAMP) browser static
	$(PY) -m pytest

# lint, the layer contract (pyproject.toml [tool.importlinter]) and the static type check
static: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# the fast inner loop (minutes): static checks, then every test not marked slow
check: static
	$(PY) -m pytest -m "not slow" -q

# Debian's Chromium for the browser tests (JupyterLab explorer, report rendering); Playwright
# drives it from Python. Browser downloads are impossible here, so no `playwright install`.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium missing and cannot be installed here: browser tests will skip"; fi; }

bench: $(STAMP)
	$(PY) benchmarks/bench.py
	$(PY) benchmarks/tabular.py
	$(PY) benchmarks/privacy.py
	$(PY) benchmarks/poisoning.py
	$(PY) benchmarks/monitoring.py
	$(PY) benchmarks/distributed.py

# on a machine with a GPU: XLA on/off, mixed precision, native vs CleverHans vs ART, PGD-AT
gpu-check:
	bash benchmarks/gpu_check.sh

# Static security linting of our own code: ruff's flake8-bandit rules and bandit itself. Every
# finding left in the code carries a `noqa`/`nosec` comment that says why it is safe.
audit: $(STAMP)
	$(PY) -m ruff check --select S robustlab
	$(PY) -m bandit -r robustlab -q

# Known vulnerabilities in the installed dependencies (asks PyPI's advisory data: needs network).
audit-deps: $(STAMP)
	$(PY) -m pip_audit --skip-editable

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf out .pytest_cache .ruff_cache
