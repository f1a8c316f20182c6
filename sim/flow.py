"""The steps before a simulation: checkpoint, integer model, Verilog, each decided by provenance.

A step is redone when the record of what its artifact was made from differs from the inputs
asked for now (:func:`core.provenance.changed`), never by file dates; it then prints one line
``rebuilding <artifact>: inputs changed: a, b``. Training and quantization run as their own
commands (``python -m quant.train --ensure``, ``python -m quant.quantize``) so this process
never imports torch; they take the build folder's lock themselves, so call
:func:`ensure_qmodel` before taking it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import golden
from core.data import load_dataset
from core.errors import UserError
from core.paths import ROOT
from core.provenance import describe_changes, sha256_file
from core.records import qmodel_changes, quantize_options
from hw.build import check_bits, env_flag, env_int
from hw.folding import check_folding
from hw.verilog import generate, output_paths, rtl_changes, rtl_record

__all__ = ["ensure_qmodel", "ensure_rtl", "chain", "options_from_env"]

#: Environment variables of the quantize command that :func:`ensure_qmodel` passes as flags.
QUANTIZE_ENV = ("WBITS", "ABITS", "QAT")


def _run_step(what, cmd):
    print(f"[sim] {what}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    env = {k: v for k, v in os.environ.items() if k not in QUANTIZE_ENV}
    proc = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise UserError(f"{what} failed (exit {proc.returncode}): "
                        f"python {' '.join(cmd[1:])}; see its message above")


def _data_flags(data, data_dir):
    flags = ["--dataset", data.name]
    return flags + ["--data-dir", str(data_dir)] if data_dir else flags


def _option_flags(options):
    flags = []
    for key in ("wbits", "abits"):
        if key in options:
            flags += [f"--{key}", str(options[key])]
    if options.get("qat"):
        flags.append("--qat")
    if options.get("per_channel"):
        flags.append("--per-channel")
    return flags


def ensure_qmodel(config, out_dir, *, data=None, data_dir=None, options=None):
    """Make ``out_dir/model.pt`` and ``out_dir/qmodel.{json,npz}`` current for ``config``.

    The checkpoint step always runs ``quant.train --ensure`` (it keeps a checkpoint whose
    record matches, reading it needs torch). The integer model is re-quantized only when its
    record (:func:`core.records.qmodel_changes`: config sections, ``options`` from
    :func:`core.records.quantize_options`, checkpoint bytes, ``data``'s identity, quantizer
    sources) differs. ``data`` defaults to the config's data set (from ``data_dir`` when given).
    """
    out = Path(out_dir)
    options = dict(options or {})
    if data is None:
        data = load_dataset(config.dataset, data_dir)
    flags = ["--config", str(config.path), "--out", str(out), *_data_flags(data, data_dir)]
    _run_step("checkpoint", ["python", "-m", "quant.train", *flags, "--ensure"])
    names = qmodel_changes(config, out, data.sha256, options)
    if names:
        if (out / "qmodel.json").exists():
            print(f"rebuilding {out / 'qmodel.json'}: {describe_changes(names)}",
                  file=sys.stderr, flush=True)
        _run_step("quantize", ["python", "-m", "quant.quantize", *flags,
                               *_option_flags(options)])
    return out


def ensure_rtl(qmodel_dir, folding, rtl_dir, *, name="lenet_accel", arrays=None):
    """Generate the Verilog into ``rtl_dir`` unless its record is current; return ``(paths,
    cycles, folding)``.

    Current means ``rtl_dir/provenance.json`` (:func:`hw.verilog.rtl_record`) names the same
    ``qmodel.json`` bytes, folding, module name, ``hw/`` and ``core/`` sources (and ``arrays``,
    which a test may give to build hardware from altered weights), and every generated file
    still has the bytes it was written with. The caller holds the build folder's lock.
    """
    model = golden.load(qmodel_dir)
    try:
        folding = check_folding(model.meta, folding)
    except (TypeError, ValueError) as exc:
        raise UserError(f"folding: {exc}") from None
    rtl = Path(rtl_dir)
    expected = rtl_record(Path(qmodel_dir) / "qmodel.json", folding, name=name, arrays=arrays)
    names = rtl_changes(rtl, expected, name)
    paths = output_paths(rtl, name)
    if names:
        if paths["top"].exists():
            print(f"rebuilding {paths['top']}: {describe_changes(names)}", file=sys.stderr,
                  flush=True)
        print(f"[sim] verilog: {paths['top']} (folding {folding})", file=sys.stderr,
              flush=True)
        paths = generate(model.meta, model.arrays if arrays is None else arrays, folding, rtl,
                         name=name, provenance=expected)
    cycles = json.loads(paths["cycles"].read_text(encoding="utf-8"))
    return paths, cycles, folding


def chain(config, out, rtl_top, result):
    """Return the chain a simulation verified: the SHA-256 of the config, the checkpoint, the
    integer model, the top Verilog and ``result`` (what was measured, as canonical JSON)."""
    out = Path(out)
    checkpoint = out / "model.pt"
    return {"config": config.sha256,
            "checkpoint": sha256_file(checkpoint) if checkpoint.is_file() else None,
            "qmodel": sha256_file(out / "qmodel.json"), "rtl": sha256_file(rtl_top),
            "result": result}


def options_from_env():
    """Return the quantize options of ``WBITS``/``ABITS``/``QAT`` in the environment."""
    wbits, abits = env_int("WBITS"), env_int("ABITS")
    check_bits("WBITS", wbits)
    check_bits("ABITS", abits)
    return quantize_options(wbits, abits, env_flag("QAT"))
