# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo screenshots test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The CPU build of torch is pinned here (not in pyproject) so GPU hosts keep their own build.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/cxnlp analyze data/samples/reviews.jsonl -o out/demo
	@echo "Report: $(CURDIR)/out/demo/report.html"

screenshots: demo  # docs/img/report-*.png from out/demo (headless Chromium)
	$(BIN)/python docs/screenshots.py

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check cxnlp tests benchmarks
	$(BIN)/ruff format --check cxnlp tests benchmarks
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/bench_analyze.py --n 10000

clean:
	rm -rf out build dist *.egg-info
