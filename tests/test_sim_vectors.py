"""The generated self-checking Verilog testbench (sim/vectors.py) under Icarus, without Python."""

import pytest

from hw.top import LeNetAccelerator
from sim.fixtures import fast_rtl, lenet5_qmodel, mnist_images
from sim.tools import simulator_available
from sim.vectors import run_testbench, write_testbench

pytestmark = [pytest.mark.sim, pytest.mark.usefixtures("discard_unused_elaboratables"),
              pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]


@pytest.fixture(scope="module")
def tb_dir(tmp_path_factory):
    reason = simulator_available("icarus")
    if reason:
        pytest.skip(reason)
    path, cycles, folding = fast_rtl()
    model = lenet5_qmodel()
    images, _ = mnist_images(2)
    expected = model.run(images)
    out = tmp_path_factory.mktemp("tb")
    for name in ("lenet_accel.v", "lint.vlt"):
        (out / name).write_bytes((path.parent / name).read_bytes())
    top = LeNetAccelerator(model.meta, model.arrays, folding)
    paths = write_testbench(out, top, images, expected["classes"], expected["scores"],
                            cycles_per_image=cycles["cycles_per_image"],
                            latency_cycles=cycles["latency_cycles"])
    return out, paths, expected, cycles


def test_testbench_passes(tb_dir):
    out, paths, expected, cycles = tb_dir
    result = run_testbench(out, sim="icarus")
    assert result.passed, result.text[-2000:]
    assert [o["cls"] for o in result.outputs] == expected["classes"].tolist()
    assert all(o["match"] for o in result.outputs)
    assert result.outputs[1]["cycle"] - result.outputs[0]["cycle"] == cycles["cycles_per_image"]


def test_corrupted_expected_vector_fails(tb_dir, tmp_path):
    out, paths, expected, _ = tb_dir
    lines = paths["expected"].read_text().splitlines()
    digit = lines[1][-2]                         # a score bit of image 1
    lines[1] = lines[1][:-2] + format(int(digit, 16) ^ 1, "x") + lines[1][-1]
    for name in ("lenet_accel.v", "tb_lenet_accel.v", "tb_lenet_accel_pixels.hex"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    (tmp_path / "tb_lenet_accel_expected.hex").write_text("\n".join(lines) + "\n")
    result = run_testbench(tmp_path, sim="icarus")
    assert not result.passed
    assert "FAIL" in result.text
    assert result.mismatch_lines and result.mismatch_lines[0].startswith("MISMATCH image 1")
    assert [o["match"] for o in result.outputs] == [True, False]
