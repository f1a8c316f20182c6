import json
import subprocess
import sys

from core.config import load_config, parse_config
from core.data import load_dataset
from golden.model import IntegerModel
from quant.quantize import export, quantize
from quant.report import layer_table
from quant.train import ROOT, train


def test_report_writes_markdown_json_and_plots(tmp_path):
    (tmp_path / "model.pt").write_bytes((ROOT / "checkpoints" / "lenet5.pt").read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "quant.report", "--config", "lenet5", "--out", str(tmp_path),
         "--bits", "8,3", "--qat-epochs", "0"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    reports = tmp_path / "reports"
    report = json.loads((reports / "quant.json").read_text())
    assert report["float_accuracy"] >= 0.99
    rows = {(r["wbits"], r["method"]): r["accuracy"] for r in report["rows"]}
    assert set(rows) == {(8, "ptq"), (3, "ptq"), (8, "qat"), (3, "qat")}
    assert rows[(8, "ptq")] > rows[(3, "ptq")]
    assert abs(rows[(8, "ptq")] - report["float_accuracy"]) <= 0.001
    assert [r["layer"] for r in report["layers"]] == ["c1", "s2", "c3", "s4", "f5", "f6", "out"]
    assert all(r["sqnr_db"] > 10 for r in report["layers"])
    # ReLU layers have no lookup table: every clamp is a saturation, none lossless.
    assert all(r["clamps"] == 0 and r["saturations"] >= 0 for r in report["layers"])
    assert all(r["clamps"] == 0 for r in report["rows"])
    assert set(report["default"]["clamps"]) == set(report["default"]["saturations"])
    text = (reports / "quant.md").read_text()
    assert "| 8 |" in text and "quant_accuracy.png" in text
    assert ("| acc bits | weight bits | out bits | saturations | LUT clamps | SQNR (dB) |"
            in text)
    assert "| c1 | conv | relu | u8.f8 | s8.f" in text and "| 8 default | 8 default |" in text
    for png in ("quant_accuracy.png", "quant_confusion.png", "quant_sqnr.png"):
        assert (reports / png).read_bytes()[:4] == b"\x89PNG"


def test_layer_table_rows_are_the_exported_layers():
    """A folded batchnorm shows in its conv's or dense's row; SQNR compares with its output.
    Each width says where it comes from (an override on s2 was accepted and ignored)."""
    preset = load_config("lenet5-bn-gap")
    config = parse_config(preset.path.read_text().replace(
        "[quant]\nwbits = 8\nabits = 8\n",
        "[quant]\nwbits = 8\nabits = 8\n[quant.layers.c3]\nwbits = 6\nabits = 5\n"), preset.path)
    data = load_dataset("mnist")
    model, _ = train(config, data, epochs=1, limit=1000, log=lambda *a: None)
    qnet = quantize(config, model, data)
    meta, arrays = export(qnet)
    split = type(data.test)(data.test.images[:200], data.test.labels[:200])
    rows = layer_table(config, model, IntegerModel(meta, arrays), meta, split, sample=200)
    assert [(r["layer"], r["kind"], r["activation"]) for r in rows] == [
        ("c1", "conv+batchnorm", "relu"), ("s2", "maxpool", "-"),
        ("c3", "conv+batchnorm", "relu"), ("s4", "maxpool", "-"),
        ("c5", "conv+batchnorm", "relu"), ("gap", "gap", "-"), ("f6", "dense+batchnorm", "relu"),
        ("out", "dense", "none")]
    assert all(r["sqnr_db"] > 10 for r in rows)
    bits = [(r["wbits"] and (r["wbits"]["bits"], r["wbits"]["source"]),
             (r["abits"]["bits"], r["abits"]["source"])) for r in rows]
    acc = meta["layers"][-1]["acc_bits"]
    assert bits == [
        ((8, "default"), (8, "default")), (None, (8, "automatic")),
        ((6, "override"), (5, "override")), (None, (5, "automatic")),
        ((8, "default"), (8, "default")), (None, (8, "automatic")),
        ((8, "default"), (8, "default")), ((8, "default"), (acc, "automatic"))]
