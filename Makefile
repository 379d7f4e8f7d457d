# The two commands: `make serve` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The browser tests drive Debian's Chromium (Playwright's own browser downloads are not used).
CHROMIUM := /usr/bin/chromium

.PHONY: serve test lint format bench clean help chromium

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

test: $(STAMP) chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 4 --dist loadgroup -q

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

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis test-results
