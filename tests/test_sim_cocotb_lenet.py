"""sim.cocotb_lenet: the cocotb tests (run through sim.runner) and their failure messages."""

import pytest

from sim import cocotb_lenet
from sim.fixtures import QMODEL_DIR, fast_rtl, mnist_images
from sim.runner import simulate
from sim.testbench import Plan
from sim.tools import simulator_available

pytestmark = [pytest.mark.usefixtures("discard_unused_elaboratables"),
              pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]


def test_describe_a_divergence():
    d = {"layer": "c3", "instance": "s3_c3", "image": 1, "position": 57, "channel": 9,
         "expected": -4, "got": 12, "cycle": 5000}
    assert cocotb_lenet._describe(d) == ("first divergent layer 'c3' (instance s3_c3): image 1, "
                                         "beat 57, channel 9: expected -4, got 12")


def test_timeout_comes_from_the_plan():
    plan = Plan(qmodel_dir="q", images="i.npy", results="r.json")
    assert cocotb_lenet._timeout(plan, []) == 0                    # no limit
    plan.max_cycles = 9000
    assert cocotb_lenet._timeout(plan, []) == 9000


@pytest.mark.sim
def test_reset_mid_image(tmp_path):
    reason = simulator_available("icarus")
    if reason:
        pytest.skip(reason)
    path, cycles, folding = fast_rtl()
    images, _ = mnist_images(4)
    result = simulate(sim="icarus", rtl=path, qmodel_dir=QMODEL_DIR, images=images,
                      out_dir=tmp_path, folding=folding, quiet=True,
                      build_dir=path.parent.parent / "build_icarus", test="reset_mid_image",
                      max_cycles=20 * (4 * cycles["cycles_per_image"]
                                       + cycles["latency_cycles"]))
    assert result["passed"], result["mismatches"]
    assert len(result["outputs"]) == 3                 # image 0, then images 2 and 3
    assert result["mismatches"] == []
