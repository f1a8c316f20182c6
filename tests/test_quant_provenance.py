"""qmodel.json records what it was made from; ``quantize --ensure`` keeps it only while that
record is current. (These move into test_quant_quantize.py once it is free to edit.)"""

import json
import shutil
import subprocess
import sys

from core.config import load_config
from core.data import load_dataset
from core.paths import ROOT, SHIPPED_DIR
from core.provenance import sha256_file, sha256_json
from core.records import generator_digest, qmodel_changes


def run(*args):
    return subprocess.run([sys.executable, "-m", "quant.quantize", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


def test_qmodel_records_its_inputs_and_ensure_keeps_it(tmp_path):
    shutil.copyfile(SHIPPED_DIR / "lenet5.pt", tmp_path / "model.pt")
    result = run("--config", "lenet5", "--out", tmp_path, "--wbits", "6")
    assert result.returncode == 0, result.stderr
    config = load_config("lenet5")
    data = load_dataset("mnist")
    meta = json.loads((tmp_path / "qmodel.json").read_text())
    assert meta["provenance"] == {
        "config": config.sections_sha256("model", "layers", "quant"),
        "options": sha256_json({"wbits": 6}), "checkpoint": sha256_file(SHIPPED_DIR / "lenet5.pt"),
        "data": data.sha256, "generator": generator_digest()}
    report = json.loads((tmp_path / "reports" / "quantize.json").read_text())
    assert report["provenance"] == meta["provenance"]
    assert qmodel_changes(config, tmp_path, data.sha256, {"wbits": 6}) == []
    assert qmodel_changes(config, tmp_path, data.sha256) == ["options"]
    before = (tmp_path / "qmodel.json").read_bytes()
    result = run("--config", "lenet5", "--out", tmp_path, "--wbits", "6", "--ensure")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"lenet5: {tmp_path / 'qmodel.json'} is current\n"
    assert (tmp_path / "qmodel.json").read_bytes() == before
    result = run("--config", "lenet5", "--out", tmp_path, "--ensure")
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"rebuilding {tmp_path / 'qmodel.json'}: inputs changed: options\n"
    assert qmodel_changes(config, tmp_path, data.sha256) == []
