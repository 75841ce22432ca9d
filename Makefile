# Set-up and the main entry points. `make demo` and `make test` each create .venv,
# install torch 2.13.0 (CPU wheel) first, then the package, then do their job.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= runs/quick

.PHONY: demo test test-all bench clean setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ribench run --preset quick --runner pool --workers 2 --out $(OUT)

test: $(STAMP)
	sh scripts/ensure-browser.sh
	$(PY) -m pytest -q

test-all: $(STAMP)
	sh scripts/ensure-browser.sh
	$(PY) -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
