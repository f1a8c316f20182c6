"""cocotb tests of the accelerator (run by :func:`sim.runner.simulate`, never by pytest itself).

- ``stream``: every image of the plan back to back (with the plan's gaps and backpressure);
  every output compared with golden; with ``taps`` every inter-stage stream too, and on a
  mismatch the first divergent layer, image, position and channel are reported.
- ``reset_mid_image``: one image, half of the next, a reset while it is in flight, then the
  remaining images: exactly the first image's and the remaining images' results come out.
"""

import time

import cocotb

from sim.testbench import Plan, Testbench


def _timeout(plan, images):
    return plan.max_cycles or 0


def _describe(divergence):
    d = divergence
    return (f"first divergent layer {d['layer']!r} (instance {d['instance']}): image "
            f"{d['image']}, beat {d['position']}, channel {d['channel']}: expected "
            f"{d['expected']}, got {d['got']}")


@cocotb.test()
async def stream(dut):
    """Stream every image back to back; compare every output (and every tap) with golden."""
    plan = Plan.from_env()
    tb = Testbench(dut, plan)
    start = time.monotonic()
    await tb.start()
    beats = []
    for image in tb.images:
        beats.extend(tb.image_beats(image))
    cocotb.start_soon(tb.driver.send(beats))
    error = None
    try:
        await tb.wait_outputs(len(tb.images), _timeout(plan, tb.images))
    except Exception as exc:                     # timeout: still write what we have
        error = f"{type(exc).__name__}: only {len(tb.scoreboard.received)} of " \
                f"{len(tb.images)} outputs after {tb.monitor.cycle()} cycles"
    # A few more cycles: an extra (duplicated) output beat would show up here.
    from cocotb.triggers import ClockCycles
    await ClockCycles(dut.clk, 64)
    result = tb.write_result(time.monotonic() - start, {"error": error})
    if result["divergence"] is not None:
        dut._log.error(_describe(result["divergence"]))
    assert error is None, error
    assert not tb.scoreboard.mismatches, (
        f"{len(tb.scoreboard.mismatches)} of {len(tb.images)} images differ from golden; "
        + (_describe(result["divergence"]) if result["divergence"] else
           "re-run with taps to locate the first divergent layer"))
    assert result["divergence"] is None, _describe(result["divergence"])


@cocotb.test()
async def reset_mid_image(dut):
    """Reset in the middle of an image; the images after the reset come out right."""
    from cocotb.triggers import ClockCycles, RisingEdge
    plan = Plan.from_env()
    tb = Testbench(dut, plan)
    assert len(tb.images) >= 3, "reset_mid_image needs at least 3 images"
    start = time.monotonic()
    await tb.start()
    first = tb.image_beats(tb.images[0])
    partial = tb.image_beats(tb.images[1])
    # Image 0 in full, then half of image 1; wait for image 0's result.
    await tb.driver.send(first + partial[: len(partial) // 2])
    await tb.wait_outputs(1, _timeout(plan, tb.images))
    await RisingEdge(dut.clk)
    await tb.reset(cycles=4)
    # Image 1's partial result must never appear: expect exactly images 0, 2, 3, ...
    tb.model.result["classes"] = tb.model.classes[[0] + list(range(2, len(tb.images)))]
    tb.model.result["scores"] = tb.model.scores[[0] + list(range(2, len(tb.images)))]
    rest = []
    for image in tb.images[2:]:
        rest.extend(tb.image_beats(image))
    cocotb.start_soon(tb.driver.send(rest))
    await tb.wait_outputs(len(tb.images) - 1, _timeout(plan, tb.images))
    await ClockCycles(dut.clk, 64)
    result = tb.write_result(time.monotonic() - start, {"error": None})
    assert len(tb.scoreboard.received) == len(tb.images) - 1, \
        f"{len(tb.scoreboard.received)} outputs, expected {len(tb.images) - 1}"
    assert not tb.scoreboard.mismatches, f"mismatches after reset: {result['mismatches']}"
