# citybrain: the two commands are `make demo` (set up and run) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: demo install test test-fast lint bench clean

demo: install ## set everything up and run the whole system on the bundled demo city
	$(BIN)/citybrain up $(ARGS)

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

test: install ## the whole test suite (needs mosquitto, chromium, chromedriver, victoria-metrics, postgresql: see .ci/run)
	DASH_TEST_CHROMEPATH=/usr/bin/chromium $(BIN)/pytest -q --headless $(ARGS)

test-fast: install ## everything but the browser and whole-system tests
	$(BIN)/pytest -q -m "not slow and not browser" $(ARGS)

lint: install
	$(BIN)/ruff check .

bench: install ## print benchmark figures (see docs/BENCHMARKS.md)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .citybrain-data .pytest_cache
