import json
import subprocess
import sys

from quant.train import ROOT


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
    text = (reports / "quant.md").read_text()
    assert "| 8 |" in text and "quant_accuracy.png" in text
    for png in ("quant_accuracy.png", "quant_confusion.png", "quant_sqnr.png"):
        assert (reports / png).read_bytes()[:4] == b"\x89PNG"
