# Set-up and the main entry points. `make demo` and `make test` each create .venv,
# install torch 2.13.0 (CPU wheel) first, then the package, then do their job.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= runs/quick
# The extras lane: its own venv with a torch/torchvision pair that imports together (a large
# CUDA build that also runs on the CPU), timm, tensorboard and mlflow-skinny, for the tests of
# real timm backbones and of the TensorBoard and MLflow loggers. The stamp also follows this
# file, so an extra added here reaches an existing extras venv.
EXTRAS_VENV ?= .venv-extras
EXTRAS_PY   := $(EXTRAS_VENV)/bin/python
EXTRAS_STAMP := $(EXTRAS_VENV)/.installed

.PHONY: demo test test-all test-extras bench clean setup

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

$(EXTRAS_STAMP): pyproject.toml Makefile
	test -x $(EXTRAS_PY) || $(PYTHON) -m venv $(EXTRAS_VENV)
	$(EXTRAS_PY) -m pip install -q --upgrade pip
	$(EXTRAS_PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(EXTRAS_PY) -m pip install -q -e ".[test,timm]" tensorboard mlflow-skinny
	touch $(EXTRAS_STAMP)

test-extras: $(EXTRAS_STAMP)
	RIBENCH_EXTRAS=1 $(EXTRAS_PY) -m pytest -q -m "extras or not slow" tests/test_timm.py tests/test_external_models.py \
		tests/test_training_curves.py tests/test_loggers.py

bench: $(STAMP)
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) $(EXTRAS_VENV) runs .pytest_cache
