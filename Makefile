# The two commands: `make serve` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JS_STAMP := tests/js/node_modules/.installed-stamp
# The browser tests drive Debian's Chromium (Playwright's own browser downloads are not used).
CHROMIUM := /usr/bin/chromium

.PHONY: serve test lint format bench clean help chromium js-clients

help:
	@echo "make serve   install into $(VENV) and run Tether with SQLite and the offline demo agent"
	@echo "make test    install and run every test tier"
	@echo "make lint    ruff"
	@echo "make bench   the benchmarks in bench/ (slow; results go to bench/RESULTS.md by hand)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

serve: $(STAMP)
	$(BIN)/tether serve

test: $(STAMP) chromium js-clients
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 4 --dist loadgroup -q

# The npm clients the AG-UI and AI SDK tests drive (and React, jsdom and esbuild to run docs/ai-sdk.md's
# front end), and axe-core for the UI's accessibility test, pinned in tests/js/package-lock.json: `npm ci`
# when the lock file is newer than the last install. Without npm those tests skip (under CI=true they fail).
js-clients:
	@if ! command -v npm >/dev/null; then \
	  echo "npm not found: the AG-UI, AI SDK and accessibility tests will skip (and fail under CI=true)"; \
	elif [ ! -f $(JS_STAMP) ] || [ tests/js/package-lock.json -nt $(JS_STAMP) ]; then \
	  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error) && touch $(JS_STAMP); \
	fi

# Installs Chromium where it can (root, or sudo without a password); elsewhere the browser tests
# skip, except under CI=true, where they fail.
chromium:
	@test -x $(CHROMIUM) || { \
	  echo "installing Debian's chromium package for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -qq >/dev/null 2>&1 && $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1; } || \
	  echo "could not install chromium: the browser tests will skip (and fail under CI=true)"; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/stream.py
	$(BIN)/python bench/recovery.py
	$(BIN)/python bench/workers.py  # needs PostgreSQL and Redis; bench/pg_drivers.py is run alone
	$(BIN)/python bench/ui_stream.py  # needs Chromium (make chromium)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis test-results
