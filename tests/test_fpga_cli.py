"""fpga.cli: the shared model, folding and --load arguments."""

import argparse

import pytest

from fpga.cli import add_model_arguments, load_argument, resolve_model
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
    parser = argparse.ArgumentParser(prog="t")
    add_model_arguments(parser)
    return parser, parser.parse_args(argv)


def _error(capsys, argv, device=None):
    parser, args = _parse(argv)
    with pytest.raises(SystemExit) as exc:
        resolve_model(parser, args, device)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_resolve_model_from_a_qmodel_folder(qmodel_dir):
    parser, args = _parse(["--qmodel", str(qmodel_dir / "qmodel.json"),
                           "--folding", '[{"pe": 2, "simd": 1}, {"pe": 1, "simd": 1}, '
                                        '{"pe": 1, "simd": 1}]', "--load", "dense2, dense3"])
    meta, arrays, folding, config, preset_dir = resolve_model(parser, args, "up5k")
    assert preset_dir == qmodel_dir and config is None
    assert [(f["pe"], f["simd"]) for f in folding] == [(2, 1), (1, 1), (1, 1)]
    assert load_argument(parser, args, meta) == ("dense2", "dense3")
    assert set(arrays) and meta["num_classes"] == 4


def test_resolve_model_needs_a_model(capsys):
    assert _error(capsys, []) == "t: error: give --config or --qmodel"


def test_resolve_model_names_the_missing_qmodel(tmp_path, capsys):
    assert _error(capsys, ["--qmodel", str(tmp_path)]) == (
        f"t: error: {tmp_path / 'qmodel.json'} is missing; run 'make quantize "
        f"PRESET={tmp_path.name}' (python -m quant.quantize --config ...) first")


def test_load_argument_rejects_unknown_layer(qmodel_dir, capsys):
    parser, args = _parse(["--qmodel", str(qmodel_dir), "--load", "pool1"])
    meta = resolve_model(parser, args)[0]
    with pytest.raises(SystemExit):
        load_argument(parser, args, meta)
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "t: error: load: 'pool1' is not a MAC layer; weights can be loaded into conv0, dense2, "
        "dense3")
