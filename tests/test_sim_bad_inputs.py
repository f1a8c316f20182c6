"""Bad inputs of ``python -m sim.run``, ``python -m hw.build`` and the Makefile's sim/verilog
targets: each is refused with exit 2 and one ``error:`` line, without a traceback, before any
file of the output folder changes (none is added, removed or rewritten)."""

import hashlib
import os
import subprocess
import sys
import time

import pytest

import golden
from core.config import load_config
from core.data import load_dataset
from core.paths import CONFIG_DIR, ROOT
from core.records import qmodel_record

CONFIG = str(CONFIG_DIR / "lenet5.toml")
CONFIG_TEXT = (CONFIG_DIR / "lenet5.toml").read_text()
QUANT_ENV = ("N", "WBITS", "ABITS", "QAT", "DATASET", "DATA_DIR", "CONFIG", "OUT", "PRESET",
             "FOLDING", "TARGET_CYCLES", "MAKEFLAGS", "MAKELEVEL")
SPEC = [{"kind": "conv", "out_channels": 2, "kernel": 3},
        {"kind": "pool", "mode": "max", "size": 2}, {"kind": "dense", "out_features": 3}]


@pytest.fixture
def out(tmp_path):
    """An output folder holding artifacts that must survive every refusal untouched."""
    folder = tmp_path / "build"
    (folder / "rtl").mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"checkpoint bytes")
    (folder / "qmodel.json").write_text('{"layers": []}\n')
    (folder / "rtl" / "lenet_accel.v").write_text("module lenet_accel; endmodule\n")
    return folder


def _snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in QUANT_ENV}
    env.update(extra)
    return env


def _refused(cmd, folder, env=None, make=False, contains=None):
    """Run ``cmd``; assert exit 2, one ``error:`` line (make's own ``make: ***`` lines aside),
    no traceback and ``folder`` unchanged (still missing when it was); return the error line."""
    existed = folder.exists()
    before = _snapshot(folder)
    proc = subprocess.run(cmd, cwd=ROOT, env=env or _env(), capture_output=True, text=True,
                          timeout=300)
    lines = proc.stderr.splitlines()
    if make:
        lines = [line for line in lines if not line.startswith(("make: ***", "make["))]
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert folder.exists() == existed and _snapshot(folder) == before
    if contains is not None:
        assert contains in lines[0], lines[0]
    return lines[0]


def _sim(*args):
    return [sys.executable, "-m", "sim.run", *args]


def _build(*args):
    return [sys.executable, "-m", "hw.build", *args]


def _make(*args):
    return ["make", "--no-print-directory", "STAMP=", *args]


# --- python -m sim.run -----------------------------------------------------------------------

@pytest.mark.parametrize("args, env, contains", [
    (["--n", "0"], {}, "--n 0 (N): give at least 1 image"),
    (["--n", "-3"], {}, "--n -3 (N): give at least 1 image"),
    (["--n", "abc"], {}, "argument --n: invalid int value: 'abc'"),
    ([], {"N": "1'"}, "N=\"1'\" is not an integer"),
    (["--n", "1", "--first", "-1"], {}, "--first -1: give the index of a test image"),
    (["--n", "1", "--first", "10000"], {}, "the mnist test set has 10000 images (0..9999)"),
    (["--n", "5", "--first", "9999"], {}, "--first 9999 --n 5: the mnist test set has 10000"),
    (["--n", "1", "--gaps", "2"], {}, "--gaps 2.0: use a probability in 0..0.95"),
    (["--n", "1", "--backpressure", "-0.1"], {}, "--backpressure -0.1: use a probability"),
    (["--n", "1", "--sim", "modelsim"], {}, "argument --sim: invalid choice: 'modelsim'"),
    (["--n", "1", "--seed", "x"], {}, "argument --seed: invalid int value: 'x'"),
    (["--n", "1"], {"DATASET": "unknown"}, "unknown dataset 'unknown'"),
    (["--n", "1"], {"DATA_DIR": "/nonexistent"}, "DATA_DIR /nonexistent: no such folder"),
    (["--n", "1"], {"WBITS": "abc"}, "WBITS='abc' is not an integer"),
    (["--n", "1"], {"WBITS": "40"}, "WBITS=40 is out of range; use 2..16"),
    (["--n", "1"], {"QAT": "yes"}, "QAT='yes' must be 1 (on) or 0 (off)"),
    (["--n", "1", "--folding", "fast"], {}, "folding 'fast': expected 'minimal'"),
    (["--n", "1", "--folding", 'x"y'], {}, "folding 'x\"y': expected 'minimal'"),
    (["--n", "1", "--folding", "target:0"], {}, "the target must be a positive number"),
    (["--n", "1", "--full", "--first", "10000"], {}, "the mnist test set has 10000 images"),
])
def test_sim_run_refuses(out, args, env, contains):
    _refused(_sim("--config", CONFIG, "--out", str(out), *args), out, _env(**env),
             contains=contains)


def test_sim_run_refuses_a_missing_config(out, tmp_path):
    _refused(_sim("--config", str(tmp_path / "nope.toml"), "--out", str(out), "--n", "1"), out,
             contains="cannot read")


def test_sim_run_refuses_an_unknown_preset(out):
    _refused(_sim("--config", "lenet6", "--out", str(out), "--n", "1"), out)


def test_sim_run_refuses_an_output_that_is_a_file(out):
    _refused(_sim("--config", CONFIG, "--out", str(out / "model.pt"), "--n", "1"), out,
             contains=f"--out {out / 'model.pt'} is a file, not a folder")


@pytest.mark.parametrize("edit, contains", [
    (("input_size = 28      # raw image side, 8-bit pixels", "input_size = 32\ninput_pad = 0"),
     "model.input_size=32 but the mnist images are 28x28"),
    (("out_features = 10", "out_features = 12"), "the network has 12 output classes"),
])
def test_sim_run_refuses_a_config_that_does_not_fit_the_data(out, tmp_path, edit, contains):
    config = tmp_path / "misfit.toml"
    text = CONFIG_TEXT.replace(*edit)
    if "input_pad = 0" in text:
        text = text.replace("input_pad = 2        # zeros added on every side before C1 "
                            "(done in hardware): 32x32\n", "")
    config.write_text(text)
    _refused(_sim("--config", str(config), "--out", str(out), "--n", "1"), out,
             contains=contains)


def test_sim_run_refuses_a_folder_another_command_is_writing(out):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom core.provenance import BuildLock\n"
         f"with BuildLock({str(out)!r}, 'hw.build'):\n    print('held', flush=True)\n"
         "    time.sleep(60)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        _refused(_sim("--config", CONFIG, "--out", str(out), "--n", "1"), out,
                 contains=f"{out} is in use by hw.build (pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()


# --- the folding, checked on the config's structure before anything is written ---------------

UNREACHABLE = ("layers[0] 'c1': no folding reaches 10 cycles per image; fully parallel it needs "
               "1024; raise the target")
#: (arguments, environment, the error line) of a folding the config's network cannot take.
BAD_FOLDINGS = [
    (["--folding", '[{"pe": 1, "simd": 1}]'], {},
     "error: folding '[{\"pe\": 1, \"simd\": 1}]': folding has 1 entries but the model has 5 "
     "MAC layers (c1, c3, f5, f6, out); give one {'pe', 'simd'} per MAC layer"),
    (["--folding", '[{"pe": 7, "simd": 1}, {}, {}, {}, {}]'], {},
     "error: folding '[{\"pe\": 7, \"simd\": 1}, {}, {}, {}, {}]': layers[0] 'c1': pe=7 "
     "does not divide out_channels=6"),
    (["--target-cycles", "10"], {}, f"error: --target-cycles 10 (TARGET_CYCLES): {UNREACHABLE}"),
    (["--target-cycles", "0"], {}, "error: --target-cycles 0 (TARGET_CYCLES): give a positive "
     "number of cycles per image, or leave it out for the config's [hardware] folding"),
]
ENV_FOLDINGS = [
    ([], {"TARGET_CYCLES": "10"}, f"error: --target-cycles 10 (TARGET_CYCLES): {UNREACHABLE}"),
    ([], {"TARGET_CYCLES": "0"}, "error: --target-cycles 0 (TARGET_CYCLES): give a positive "
     "number of cycles per image, or leave it out for the config's [hardware] folding"),
]


@pytest.fixture
def target_10(tmp_path):
    """A config asking for 10 cycles per image, and its error line."""
    path = tmp_path / "fast.toml"
    path.write_text(CONFIG_TEXT.replace("target_cycles = 4800", "target_cycles = 10"))
    return path, f"error: config fast.toml: hardware.target_cycles=10: {UNREACHABLE}"


@pytest.fixture(params=["fresh", "built"])
def folder(request, tmp_path, out):
    """An output folder that does not exist yet, or one holding artifacts."""
    if request.param == "built":
        return out
    return tmp_path / "fresh"


@pytest.mark.parametrize("args, env, line", BAD_FOLDINGS + ENV_FOLDINGS)
def test_sim_run_checks_the_folding_before_anything(folder, args, env, line):
    """Checked after training and quantizing, which had already written model.pt and
    qmodel.json."""
    got = _refused(_sim("--config", CONFIG, "--out", str(folder), "--n", "1", *args), folder,
                   _env(**env))
    assert got == line


@pytest.mark.parametrize("args, env, line", BAD_FOLDINGS)
def test_hw_build_checks_the_folding_before_anything(folder, args, env, line):
    for check in ([], ["--check"]):
        got = _refused(_build("--config", CONFIG, "--qmodel-dir", str(folder), *args, *check),
                       folder, _env(**env))
        assert got == line


def test_an_unreachable_config_target_is_refused_before_anything(folder, target_10):
    config, line = target_10
    assert _refused(_sim("--config", str(config), "--out", str(folder), "--n", "1"),
                    folder) == line
    assert _refused(_build("--config", str(config), "--qmodel-dir", str(folder), "--check"),
                    folder) == line


def test_the_default_folder_is_not_created(tmp_path):
    config = tmp_path / "unreachable.toml"
    config.write_text(CONFIG_TEXT.replace('name = "lenet5"', 'name = "h12-unreachable"')
                      .replace("target_cycles = 4800", "target_cycles = 10"))
    folder = ROOT / "build" / "h12-unreachable"
    _refused(_sim("--config", str(config), "--n", "1"), folder,
             contains="hardware.target_cycles=10: layers[0] 'c1': no folding reaches 10")
    _refused(_make("verilog", f"CONFIG={config}"), folder, make=True,
             contains="hardware.target_cycles=10: layers[0] 'c1': no folding reaches 10")


@pytest.mark.parametrize("target, variables, line", [
    ("sim", ["N=1", "TARGET_CYCLES=10"], f"error: --target-cycles 10 (TARGET_CYCLES): "
                                         f"{UNREACHABLE}"),
    ("sim", ["N=1", "TARGET_CYCLES=0"], BAD_FOLDINGS[3][2]),
    ("sim", ["N=1", 'FOLDING=[{"pe": 1, "simd": 1}]'], BAD_FOLDINGS[0][2]),
    ("verilog", ["TARGET_CYCLES=10"], f"error: --target-cycles 10 (TARGET_CYCLES): "
                                      f"{UNREACHABLE}"),
    ("verilog", ['FOLDING=[{"pe": 7, "simd": 1}, {}, {}, {}, {}]'], BAD_FOLDINGS[1][2]),
])
def test_make_checks_the_folding_before_anything(out, target, variables, line):
    assert _refused(_make(target, f"OUT={out}", *variables), out, make=True) == line


# --- python -m hw.build ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_sha256():
    return load_dataset("mnist").sha256


@pytest.fixture
def qdir(tmp_path, mnist_sha256):
    """A build folder with a small integer model recorded as quantized from lenet5.toml with
    WBITS=4, and RTL that must survive."""
    folder = tmp_path / "q"
    (folder / "rtl").mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"weights")
    (folder / "rtl" / "lenet_accel.v").write_text("module lenet_accel; endmodule\n")
    meta, arrays = golden.random_qmodel(SPEC, 0, height=6, calibration=4)
    meta["provenance"] = qmodel_record(load_config(CONFIG), folder / "model.pt", mnist_sha256,
                                       {"wbits": 4})
    golden.save(meta, arrays, folder)
    return folder


@pytest.mark.parametrize("args, env, contains", [
    (["--target-cycles", "0"], {}, "--target-cycles 0 (TARGET_CYCLES): give a positive"),
    (["--target-cycles", "-5"], {}, "--target-cycles -5 (TARGET_CYCLES)"),
    (["--target-cycles", "1'"], {}, "argument --target-cycles: invalid int value: \"1'\""),
    (["--folding", "[{\"pe\": 1"], {}, "expected 'minimal'"),
    (["--folding", "minimal", "--target-cycles", "100"], {}, "give a folding or target cycles"),
    (["--name", "bad name"], {}, "--name 'bad name': a Verilog module name"),
    (["--wbits", "1"], {}, "WBITS=1 is out of range; use 2..16"),
    ([], {"ABITS": "eight"}, "ABITS='eight' is not an integer"),
    ([], {"DATASET": "unknown"}, "unknown dataset 'unknown'"),
    ([], {"DATA_DIR": "/nonexistent"}, "DATA_DIR /nonexistent: no such folder"),
    ([], {}, "was not made from these inputs (inputs changed: options); rebuild it with "
             "`make quantize PRESET=lenet5 OUT="),
    (["--wbits", "4", "--folding", "[{\"pe\": 7, \"simd\": 1}]"], {},
     "folding has 1 entries but the model has 5 MAC layers"),
])
def test_hw_build_refuses(qdir, args, env, contains):
    _refused(_build("--config", CONFIG, "--qmodel-dir", str(qdir), *args), qdir, _env(**env),
             contains=contains)


def test_hw_build_names_a_folding_file_that_does_not_parse(qdir, tmp_path):
    bad = tmp_path / "folding.json"
    bad.write_text("[{\"pe\": 1, " + "\"simd\": 1, " * 200)
    line = _refused(_build("--config", CONFIG, "--qmodel-dir", str(qdir), "--wbits", "4",
                           "--folding", str(bad)), qdir)
    assert line.startswith(f"error: folding file {bad}: not valid JSON (line 1, column ")
    assert len(line) < 300


def test_hw_build_refuses_an_output_that_is_a_file(qdir):
    _refused(_build("--config", CONFIG, "--qmodel-dir", str(qdir), "--out",
                    str(qdir / "model.pt")), qdir, contains="is a file, not a folder")


def test_hw_build_refuses_a_folder_without_an_integer_model(out, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(_build("--config", CONFIG, "--qmodel-dir", str(empty)), empty,
             contains=f"no integer model in {empty}; run `make quantize PRESET=lenet5 "
                      f"OUT={empty}`")


def test_hw_build_refuses_a_folder_a_simulation_is_using(qdir):
    """`make verilog` beside a running `make sim` rewrote rtl/ mid-run."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom core.provenance import BuildLock\n"
         f"with BuildLock({str(qdir)!r}, 'sim'):\n    print('held', flush=True)\n"
         "    time.sleep(60)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        _refused(_build("--config", CONFIG, "--qmodel-dir", str(qdir), "--wbits", "4"), qdir,
                 contains=f"{qdir} is in use by sim (pid {holder.pid}); wait for it")
    finally:
        holder.kill()
        holder.wait()


# --- the Makefile ----------------------------------------------------------------------------

@pytest.mark.parametrize("target, variables, contains", [
    ("sim", ["N=abc"], "argument --n: invalid int value: 'abc'"),
    ("sim", ["N=1\"; touch hacked; echo \""], "argument --n: invalid int value"),
    ("sim", ["N=1", "DATASET=unknown"], "unknown dataset 'unknown'"),
    ("sim", ["N=1", "DATA_DIR=/nonexistent"], "DATA_DIR /nonexistent: no such folder"),
    ("sim", ["N=1", "FOLDING=it's fast"], "folding \"it's fast\": expected 'minimal'"),
    ("sim", ["N=0"], "--n 0 (N): give at least 1 image"),
    ("verilog", ["TARGET_CYCLES=0"], "--target-cycles 0 (TARGET_CYCLES): give a positive"),
    ("verilog", ["TARGET_CYCLES=1'"], "argument --target-cycles: invalid int value"),
    ("verilog", ["WBITS=abc"], "argument --wbits: invalid int value: 'abc'"),
    ("verilog", ["QAT=yes"], "QAT='yes' must be 1 (on) or 0 (off)"),
    ("verilog", ["DATASET=unknown"], "unknown dataset 'unknown'"),
])
def test_make_refuses(out, target, variables, contains):
    _refused(_make(target, f"OUT={out}", *variables), out, make=True, contains=contains)
    assert not (ROOT / "hacked").exists()


def test_make_refuses_an_output_that_is_a_file(out):
    _refused(_make("sim", f"OUT={out / 'model.pt'}", "N=1"), out, make=True,
             contains="is a file, not a folder")


def test_make_clean_refuses_a_path_for_a_preset(out):
    _refused(_make("clean", "PRESET=.."), out, make=True,
             contains="PRESET='..' is not a preset name")


def test_make_sim_with_a_config_lets_the_tools_pick_its_folder():
    """`make sim CONFIG=configs/lenet5-tanh.toml` simulated build/lenet5's model."""
    proc = subprocess.run(_make("-n", "sim", "CONFIG=configs/lenet5-tanh.toml"), cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if "-m sim.run" in ln]
    assert line == ['.venv/bin/python -m sim.run --config "$CONFIG"  --n "$N" --sim "$SIM"    ']
    proc = subprocess.run(_make("-n", "verilog", "OUT=elsewhere", "WBITS=4"), cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=60)
    builds = [ln for ln in proc.stdout.splitlines() if "-m hw.build" in ln]
    assert len(builds) == 2 and all('--qmodel-dir "$OUT" --wbits "$WBITS"' in ln
                                    for ln in builds)


def test_the_refusals_are_quick():
    """The refusals come before training or quantizing: no torch in sim.run or hw.build."""
    start = time.monotonic()
    proc = subprocess.run(_sim("--n", "0"), cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and time.monotonic() - start < 30
