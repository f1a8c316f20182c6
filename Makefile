# LeNet-5 accelerator generator: the user's entry points.
# Every target is a thin wrapper over a documented `python -m ...` command (see README.md).
# The first target you run creates .venv and installs what is missing; later runs skip that.

PRESET ?= lenet5
N      ?= 16
SIM    ?= icarus
CONFIG ?= configs/$(PRESET).toml
# OUT: the build folder; empty means the tools' default, build/<name of CONFIG's model>.
OUT    ?=
PYTEST_ARGS ?=

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

export PYTHONDONTWRITEBYTECODE := 1
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help setup tools import train eval checkpoint quantize qmodel report verilog sim sim-full bench synth sweep board test test-slow lint clean distclean
WBITS ?=
ABITS ?=
QAT   ?=
DEVICE ?= up5k
BOARD ?= icebreaker
SYNTH_ARGS ?=
WAVES ?=
FOLDING ?=
GAPS ?=
BACKPRESSURE ?=
TARGET_CYCLES ?=
DATASET ?=
DATA_DIR ?=
# MODEL=<file> (.pt2, .onnx, .keras, .h5): `make import` turns it into build/<file stem>/config.toml
# + model.pt, and every target given MODEL= first imports it (kept when current), then runs on
# that config and folder (OUT= still chooses the folder). INPUT_SCALE/INPUT_MEAN/INPUT_STD: the
# normalization it was trained with, (pixel/scale - mean)/std (default pixel/255).
MODEL ?=
INPUT_SCALE ?=
INPUT_MEAN ?=
INPUT_STD ?=
ifneq ($(MODEL),)
OUT := $(if $(OUT),$(OUT),build/$(basename $(notdir $(MODEL))))
CONFIG := $(OUT)/config.toml
endif
IMPORT_STEP = $(if $(MODEL),import)
IMPORTFLAGS = $(if $(INPUT_SCALE),--scale "$$INPUT_SCALE") $(if $(INPUT_MEAN),--mean "$$INPUT_MEAN") \
              $(if $(INPUT_STD),--std "$$INPUT_STD")
# Every value reaches the tools through the environment and "$$VAR" in the recipes, so a quote
# or a space in a value is passed as it is (and refused by the tool) instead of breaking the shell.
export PRESET N SIM CONFIG OUT WBITS ABITS QAT DEVICE BOARD WAVES FOLDING GAPS BACKPRESSURE \
       TARGET_CYCLES DATASET DATA_DIR MODEL INPUT_SCALE INPUT_MEAN INPUT_STD
OUTFLAG = $(if $(OUT),--out "$$OUT")
SIMFLAGS = $(if $(FOLDING),--folding "$$FOLDING") $(if $(GAPS),--gaps "$$GAPS") \
           $(if $(BACKPRESSURE),--backpressure "$$BACKPRESSURE")
QFLAGS = $(if $(WBITS),--wbits "$$WBITS") $(if $(ABITS),--abits "$$ABITS") $(if $(filter 1,$(QAT)),--qat)

help:
	@sed -n 's/^## /  /p' $(firstword $(MAKEFILE_LIST))
	@echo "variables: PRESET=$(PRESET) N=$(N) SIM=$(SIM) WBITS= ABITS= QAT= DATASET= DATA_DIR= (README.md)"

## setup: create .venv (torch 2.13.0 CPU first, then the rest) and install Icarus Verilog.
setup: $(STAMP) tools

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,fpga,importers]'
	@rm -f $(VENV)/.installed-*; touch $@

tools:
	@command -v iverilog >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Icarus Verilog (apt-get install -y iverilog)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null; \
	  else \
	    echo "error: Icarus Verilog is missing and cannot be installed here; run 'sudo apt-get install -y iverilog'" >&2; exit 1; \
	  fi; }
	@test -f /usr/include/lz4.h || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing liblz4-dev (Verilator FST waves)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liblz4-dev >/dev/null 2>&1 || \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liblz4-dev >/dev/null; } || \
	    echo "note: liblz4-dev unavailable; Verilator waves fall back to VCD" >&2; \
	  fi; }

## import: MODEL=<file> (.pt2, .onnx, .keras, .h5) -> build/<stem>/config.toml + model.pt + reports/import.json.
import: $(STAMP)
	@test -n "$$MODEL" || { echo "error: make import needs MODEL=<file>; give a .pt2, .onnx, .keras or .h5 model file" >&2; exit 2; }
	$(PY) -m importers "$$MODEL" --out "$$OUT" --ensure $(IMPORTFLAGS)

## train: train the float model of PRESET: build/PRESET/model.pt, reports/train.json + curves.
train: $(STAMP) $(IMPORT_STEP)
	$(PY) -m quant.train --config "$$CONFIG" $(OUTFLAG)

## eval: evaluate build/PRESET/model.pt and rewrite train.json's accuracy fields.
eval: $(STAMP) $(IMPORT_STEP)
	$(PY) -m quant.train --config "$$CONFIG" $(OUTFLAG) --eval-only

## checkpoint: make build/PRESET/model.pt current (its recorded inputs): keep it, else the shipped one, else train.
checkpoint: $(STAMP) $(IMPORT_STEP)
	$(PY) -m quant.train --config "$$CONFIG" $(OUTFLAG) --ensure

## quantize: PTQ (QAT=1: quantization-aware training) -> build/PRESET/qmodel.{json,npz}.
quantize: checkpoint
	$(PY) -m quant.quantize --config "$$CONFIG" $(OUTFLAG) $(QFLAGS)

# The integer model, re-quantized only when its recorded inputs differ from these.
qmodel: checkpoint
	$(PY) -m quant.quantize --config "$$CONFIG" $(OUTFLAG) $(QFLAGS) --ensure

## verilog: Verilog of PRESET with the config's folding -> build/PRESET/rtl/ (+ cycles.json).
# Checked first (values, config, folders, data), then the checkpoint and integer model of the
# same folder made current, then the RTL built from exactly that integer model.
VFLAGS = --config "$$CONFIG" $(if $(OUT),--qmodel-dir "$$OUT") $(QFLAGS) \
         $(if $(TARGET_CYCLES),--target-cycles "$$TARGET_CYCLES") $(if $(FOLDING),--folding "$$FOLDING")
verilog: $(STAMP) $(IMPORT_STEP)
	$(PY) -m hw.build $(VFLAGS) --check
	$(PY) -m quant.train --config "$$CONFIG" $(OUTFLAG) --ensure
	$(PY) -m quant.quantize --config "$$CONFIG" $(OUTFLAG) $(QFLAGS) --ensure
	$(PY) -m hw.build $(VFLAGS)

## sim: the main job: checkpoint -> quantize -> Verilog -> RTL simulation of N test images vs golden.
sim: setup $(IMPORT_STEP)
	$(PY) -m sim.run --config "$$CONFIG" $(OUTFLAG) --n "$$N" --sim "$$SIM" $(if $(filter 1,$(WAVES)),--waves) $(SIMFLAGS)

## sim-full: all 10,000 test images on Verilator (compiled Verilog testbench), 0 mismatches required.
sim-full: setup $(IMPORT_STEP)
	$(PY) -m sim.run --config "$$CONFIG" $(OUTFLAG) --full $(if $(FOLDING),--folding "$$FOLDING")

## bench: simulation speed (Icarus, Verilator, whole sim run) and golden vs PyTorch speed -> build/bench/.
bench: setup
	$(PY) -m quant.bench
	$(PY) -m sim.bench --config "$$CONFIG"

## synth: yosys + nextpnr (DEVICE=up5k|ecp5-85|...) -> build/PRESET/synth/DEVICE.{json,md}.
synth: setup $(IMPORT_STEP)
	$(PY) -m fpga.synth --config "$$CONFIG" --device "$$DEVICE" $(SYNTH_ARGS)

## sweep: foldings smallest to fastest, each synthesized -> build/PRESET/synth/sweep-DEVICE.*.
sweep: setup $(IMPORT_STEP)
	$(PY) -m fpga.sweep --config "$$CONFIG" --device "$$DEVICE" $(SYNTH_ARGS)

## board: bitstream with a UART host link (BOARD=icebreaker|ulx3s-85f|upduino_v3); see docs/fpga.md.
board: setup $(IMPORT_STEP)
	$(PY) -m fpga.board --config "$$CONFIG" --board "$$BOARD" $(SYNTH_ARGS)

## report: quantization accuracy report -> build/PRESET/reports/quant.{md,json} + PNGs.
report: checkpoint
	$(PY) -m quant.report --config "$$CONFIG" $(OUTFLAG)

## test: the test suite (fast; under ~15 minutes on 2 cores).
test: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

## test-slow: the long regressions (full test sets, big simulations).
test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	@case "$$PRESET" in ""|.|..|*/*) echo "error: PRESET='$$PRESET' is not a preset name; give the name of a file in configs/" >&2; exit 2;; esac
	rm -rf "build/$$PRESET"

distclean:
	rm -rf build $(VENV)
