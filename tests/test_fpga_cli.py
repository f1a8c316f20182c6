"""fpga.cli: the shared model, folding and --load arguments, and the checks every command runs
before writing."""

import pytest

from core.errors import UserError
from fpga.cli import (
    ArgumentParser,
    add_model_arguments,
    load_argument,
    output_folder,
    positive,
    resolve_model,
)
from golden import random_qmodel, save

LOADABLE = [{"kind": "conv", "out_channels": 2, "kernel": 3},
            {"kind": "pool", "mode": "max", "size": 2},
            {"kind": "dense", "out_features": 6},
            {"kind": "dense", "out_features": 4}]


@pytest.fixture
def qmodel_dir(tmp_path):
    meta, arrays = random_qmodel(LOADABLE, 5, height=6, pad=1)
    save(meta, arrays, tmp_path)
    return tmp_path


def _parse(argv):
    parser = ArgumentParser(prog="t")
    add_model_arguments(parser)
    return parser.parse_args(argv)


def _error(argv, device=None):
    with pytest.raises(UserError) as exc:
        resolve_model(_parse(argv), device)
    return str(exc.value)


def test_resolve_model_from_a_qmodel_folder(qmodel_dir):
    args = _parse(["--qmodel", str(qmodel_dir / "qmodel.json"),
                   "--folding", '[{"pe": 2, "simd": 1}, {"pe": 1, "simd": 1}, '
                                '{"pe": 1, "simd": 1}]', "--load", "dense2, dense3"])
    meta, arrays, folding, config, preset_dir = resolve_model(args, "up5k")
    assert preset_dir == qmodel_dir and config is None
    assert [(f["pe"], f["simd"]) for f in folding] == [(2, 1), (1, 1), (1, 1)]
    assert load_argument(args, meta) == ("dense2", "dense3")
    assert set(arrays) and meta["num_classes"] == 4


def test_parser_errors_are_one_line():
    with pytest.raises(UserError) as exc:
        _parse(["--target-cycles", "x"])
    assert str(exc.value) == "t: argument --target-cycles: invalid int value: 'x'; see --help"


def test_resolve_model_needs_a_model():
    assert _error([]) == "give --config or --qmodel"


def test_resolve_model_names_the_missing_qmodel(tmp_path):
    assert _error(["--qmodel", str(tmp_path)]) == (
        f"{tmp_path / 'qmodel.json'} is missing; run 'make quantize "
        f"PRESET={tmp_path.name}' (python -m quant.quantize --config ...) first")
    assert _error(["--qmodel", str(tmp_path / "nowhere")]) == (
        f"--qmodel {tmp_path / 'nowhere'}: no such folder; give the folder of qmodel.json and "
        f"qmodel.npz (make quantize writes build/<preset>)")


def test_folding_file_that_does_not_parse_names_the_file(qmodel_dir, tmp_path):
    bad = tmp_path / "folding.json"
    bad.write_text('[{"pe": 2, "simd": 1},\n oops]')
    assert _error(["--qmodel", str(qmodel_dir), "--folding", str(bad)]) == (
        f"--folding {bad}: not valid JSON (Expecting value at line 2 column 2); the file must "
        f"hold a JSON list of {{\"pe\", \"simd\"}} per MAC layer")
    bad.write_text('[{"pe": 5, "simd": 1}, {"pe": 1, "simd": 1}, {"pe": 1, "simd": 1}]')
    assert _error(["--qmodel", str(qmodel_dir), "--folding", str(bad)]).startswith(
        f"--folding {bad}: ")
    assert "pe=5 does not divide" in _error(["--qmodel", str(qmodel_dir), "--folding", str(bad)])
    assert _error(["--qmodel", str(qmodel_dir), "--folding", str(tmp_path / "no.json")]) == (
        f"--folding {tmp_path / 'no.json'}: no such file; give 'minimal', 'target:<cycles>', a "
        f"JSON list of {{\"pe\", \"simd\"}} per MAC layer, or a file holding one")


def test_target_cycles_must_be_positive(qmodel_dir):
    assert _error(["--qmodel", str(qmodel_dir), "--target-cycles", "0"]) == (
        "--target-cycles=0 must be a positive integer; leave it out for the config's folding")


def test_load_argument_rejects_unknown_layer(qmodel_dir):
    args = _parse(["--qmodel", str(qmodel_dir), "--load", "pool1"])
    meta = resolve_model(args)[0]
    with pytest.raises(UserError) as exc:
        load_argument(args, meta)
    assert str(exc.value) == ("--load: 'pool1' is not a MAC layer; weights can be loaded into "
                              "conv0, dense2, dense3")


def test_positive():
    assert positive("--x", None) is None and positive("--x", 2.5) == 2.5
    assert positive("--n", 3, integer=True) == 3
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(UserError):
            positive("--x", bad)
    with pytest.raises(UserError) as exc:
        positive("--freq", 0.0, default="24 MHz")
    assert str(exc.value) == "--freq=0 must be a positive number; leave it out for 24 MHz"


def test_output_folder(tmp_path):
    assert output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError) as exc:
        output_folder(tmp_path / "file" / "sub")
    assert str(exc.value) == (f"--out {tmp_path / 'file' / 'sub'}: {tmp_path / 'file'} is a "
                              f"file, not a folder; give a folder (it is created if missing)")
