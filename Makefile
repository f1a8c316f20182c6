# LeNet-5 accelerator generator: the user's entry points.
# Every target is a thin wrapper over a documented `python -m ...` command (see README.md).
# The first target you run creates .venv and installs what is missing; later runs skip that.

PRESET ?= lenet5
N      ?= 16
SIM    ?= icarus
CONFIG ?= configs/$(PRESET).toml
OUT    ?= build/$(PRESET)
PYTEST_ARGS ?=

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help setup tools train eval checkpoint test test-slow lint clean distclean

help:
	@sed -n 's/^## //p' README.md 2>/dev/null | head -0; \
	echo "make sim | make test | make train | make eval | make setup | make lint | make clean"; \
	echo "variables: PRESET=$(PRESET) N=$(N) SIM=$(SIM) DATASET= DATA_DIR= (see README.md)"

## setup: create .venv (torch 2.13.0 CPU first, then the rest) and install Icarus Verilog.
setup: $(STAMP) tools

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

tools:
	@command -v iverilog >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Icarus Verilog (apt-get install -y iverilog)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null; \
	  else \
	    echo "error: Icarus Verilog is missing and cannot be installed here; run 'sudo apt-get install -y iverilog'" >&2; exit 1; \
	  fi; }

## train: train the float model of PRESET: build/PRESET/model.pt, reports/train.json + curves.
train: $(STAMP)
	$(PY) -m quant.train --config $(CONFIG) --out $(OUT)

## eval: evaluate build/PRESET/model.pt and rewrite train.json's accuracy fields.
eval: $(STAMP)
	$(PY) -m quant.train --config $(CONFIG) --out $(OUT) --eval-only

## checkpoint: make build/PRESET/model.pt exist: the shipped checkpoint, else train.
checkpoint: $(STAMP)
	$(PY) -m quant.train --config $(CONFIG) --out $(OUT) --ensure

## test: the test suite (fast; under ~15 minutes on 2 cores).
test: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

## test-slow: the long regressions (full test sets, big simulations).
test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf build/$(PRESET)

distclean:
	rm -rf build $(VENV)
