# The two commands: `make serve` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: serve test lint format bench clean help

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

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 4 --dist loadgroup -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/stream.py
	$(BIN)/python bench/recovery.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis test-results
