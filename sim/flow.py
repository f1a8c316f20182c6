"""The steps before a simulation: checkpoint, integer model, folding, Verilog (each only if needed).

Training and quantization run as their own commands (``python -m quant.train --ensure``,
``python -m quant.quantize``) so this process never imports torch.
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import golden
from core.errors import UserError
from core.paths import ROOT
from hw.folding import check_folding
from hw.verilog import generate

__all__ = ["ensure_qmodel", "ensure_rtl"]

HW_DIR = ROOT / "hw"


def _run_step(what, cmd):
    print(f"[sim] {what}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT)
    if proc.returncode != 0:
        raise UserError(f"{what} failed (exit {proc.returncode}): "
                        f"python {' '.join(cmd[1:])}; see its message above")


def ensure_qmodel(config_path, out_dir):
    """Make ``out_dir/qmodel.{json,npz}`` exist and be newer than the checkpoint and config."""
    out = Path(out_dir)
    model_pt = out / "model.pt"
    if not model_pt.is_file():
        _run_step("checkpoint", ["python", "-m", "quant.train", "--config", str(config_path),
                                 "--out", str(out), "--ensure"])
    qjson, qnpz = out / "qmodel.json", out / "qmodel.npz"
    newest_input = max(model_pt.stat().st_mtime, Path(config_path).stat().st_mtime)
    stale = (not qjson.is_file() or not qnpz.is_file()
             or min(qjson.stat().st_mtime, qnpz.stat().st_mtime) < newest_input)
    if stale:
        _run_step("quantize", ["python", "-m", "quant.quantize", "--config", str(config_path),
                               "--out", str(out)])
    return out


def _hw_digest():
    h = hashlib.sha256()
    for path in sorted(HW_DIR.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def ensure_rtl(qmodel_dir, folding, rtl_dir, *, name="lenet_accel", arrays=None):
    """Generate the Verilog into ``rtl_dir`` unless it is up to date; return ``(paths, cycles)``.

    Up to date means: same ``qmodel.json`` bytes, folding, ``hw/`` sources and module name.
    ``arrays`` (default: the model's) lets a test build hardware from altered weights.
    """
    model = golden.load(qmodel_dir)
    try:
        folding = check_folding(model.meta, folding)
    except (TypeError, ValueError) as exc:
        raise UserError(f"folding: {exc}") from None
    rtl = Path(rtl_dir)
    key = hashlib.sha256(json.dumps({
        "qmodel": hashlib.sha256((Path(qmodel_dir) / "qmodel.json").read_bytes()).hexdigest(),
        "folding": folding, "hw": _hw_digest(), "name": name,
        "arrays": None if arrays is None else {k: golden.array_sha256(v)
                                               for k, v in sorted(arrays.items())},
    }, sort_keys=True).encode()).hexdigest()
    stamp = rtl / "rtl.stamp"
    paths = {"top": rtl / f"{name}.v", "axis": rtl / f"{name}_axis.v",
             "cycles": rtl / "cycles.json", "lint": rtl / "lint.vlt"}
    if not (stamp.is_file() and stamp.read_text() == key
            and all(p.is_file() for p in paths.values())):
        print(f"[sim] verilog: {rtl}/{name}.v (folding {folding})", file=sys.stderr,
              flush=True)
        paths = generate(model.meta, model.arrays if arrays is None else arrays, folding, rtl,
                         name=name)
        stamp.write_text(key)
    cycles = json.loads(paths["cycles"].read_text(encoding="utf-8"))
    return paths, cycles, folding
