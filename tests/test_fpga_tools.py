"""fpga.tools: finding tools, running one with a heartbeat."""

import re
import sys
from pathlib import Path

import pytest

from fpga import tools
from fpga.tools import Progress, missing_tools, tail_text, tool, tool_path


def test_tool_path_prefers_the_venv_then_path(tmp_path, monkeypatch):
    assert tool_path(Path(sys.executable).name) == sys.executable
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "fake-tool").write_text("#!/bin/sh\n")
    (tmp_path / "fake-tool").chmod(0o755)
    assert tool_path("fake-tool") == str(tmp_path / "fake-tool")


def test_missing_tool_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError) as exc:
        tool_path("no-such-tool")
    message = "no-such-tool not found; install it with '.venv/bin/pip install -e .[fpga]'"
    assert str(exc.value) == message
    assert missing_tools("no-such-tool") == message
    assert missing_tools() is None


def test_tool_environment_variable_wins(monkeypatch):
    monkeypatch.setenv("NEXTPNR_ECP5", "/opt/nextpnr-ecp5")
    assert tool("ecp5") == "/opt/nextpnr-ecp5"


def test_tool_versions_of_a_missing_tool(monkeypatch, tmp_path):
    monkeypatch.setattr(tools, "_VERSIONS", {})
    monkeypatch.setenv("YOSYS", str(tmp_path / "nowhere"))
    monkeypatch.setenv("NEXTPNR_ICE40", str(tmp_path / "nowhere"))
    versions = tools.tool_versions("ice40")
    assert versions["yosys"].startswith("unavailable (") and set(versions) == {"yosys", "nextpnr"}


def test_progress_runs_a_command_with_a_log(tmp_path):
    lines = []
    prog = Progress("test", lines.append, every=0.05)
    code, seconds = prog.run("echo", ["sh", "-c", "echo one; sleep 0.2; echo two"],
                             tmp_path / "log", tmp_path)
    assert code == 0 and seconds >= 0.2
    assert (tmp_path / "log").read_text() == "one\ntwo\n"
    assert lines[0].startswith("[test ") and lines[0].endswith("] echo: started")
    assert any("echo: running" in line and "(one)" in line for line in lines)
    assert re.search(r"\] echo: done in \d+ s$", lines[-1])
    code, _ = Progress("t", None).run("fail", ["sh", "-c", "exit 3"], tmp_path / "log2", tmp_path)
    assert code == 3


def test_tail_text(tmp_path):
    assert tail_text(tmp_path / "missing") == ""
    (tmp_path / "log").write_text("x" * 10 + "end")
    assert tail_text(tmp_path / "log", 3) == "end"
