"""Simulation helpers: drive a stream with random gaps, drain one with random backpressure.

Testbenches pack and unpack payloads with the layouts the hardware uses (``ctx.set`` and
``ctx.get`` on the :mod:`amaranth.lib.data` views), so there is one source of truth for bits.
"""

import random

from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

__all__ = ["run_stream", "run_cycles", "to_python"]


def to_python(value):
    """Convert a sampled :mod:`amaranth.lib.data` constant into lists / dicts of ints."""
    from amaranth.lib import data
    if isinstance(value, data.Const):
        layout = value.shape()
        if isinstance(layout, data.ArrayLayout):
            return [to_python(value[i]) for i in range(layout.length)]
        return {name: to_python(value[name]) for name, _ in layout}
    return int(value)


def run_stream(dut, beats, n_out, *, seed=0, gap=0.0, stall=0.0, max_cycles=None,
               i_name="i", o_name="o", vcd=None):
    """Simulate ``dut``: send ``beats`` into stream ``i``, collect ``n_out`` beats of ``o``.

    ``gap`` is the probability of an idle cycle before each input beat; ``stall`` the
    probability that ``o.ready`` is low in a cycle. Returns ``(outputs, cycles)``: the payloads
    (as Python values) and the cycle at which each was accepted.
    """
    i_stream = getattr(dut, i_name)
    o_stream = getattr(dut, o_name)
    rng_in = random.Random(seed)
    rng_out = random.Random(seed + 1)
    outputs, times = [], []
    if max_cycles is None:
        max_cycles = 100_000
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def source(ctx):
        for beat in beats:
            while gap and rng_in.random() < gap:
                ctx.set(i_stream.valid, 0)
                await ctx.tick()
            ctx.set(i_stream.valid, 1)
            ctx.set(i_stream.payload, beat)
            await ctx.tick().until(i_stream.ready)
        ctx.set(i_stream.valid, 0)

    async def sink(ctx):
        cycle = 0
        while len(outputs) < n_out:
            ready = not (stall and rng_out.random() < stall)
            ctx.set(o_stream.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(o_stream.valid, o_stream.payload)
            if valid and ready:
                outputs.append(to_python(payload))
                times.append(cycle)
            cycle += 1
            if cycle > max_cycles:
                raise AssertionError(f"only {len(outputs)} of {n_out} outputs after "
                                     f"{max_cycles} cycles")

    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return outputs, times


def run_cycles(dut, inputs, probe):
    """Simulate ``dut`` cycle by cycle; return what ``probe`` sees in each cycle.

    ``inputs[c]`` lists ``(signal, value)`` pairs: ports of ``dut`` and the values they take
    from cycle ``c`` on (a signal keeps its last value); ``probe(ctx)`` is called in each cycle
    once those are set and the combinational logic has settled, before the clock edge. A value
    on an input reaches an output through ``L`` registers ``L`` entries later in the list.
    """
    seen = []
    top = Module()                      # a sync domain even for a combinational ``dut``
    top.submodules.dut = dut
    toggle = Signal()
    top.d.sync += toggle.eq(~toggle)
    sim = Simulator(top)
    sim.add_clock(1e-8)

    async def bench(ctx):
        for values in inputs:
            for signal, value in values:
                ctx.set(signal, value)
            seen.append(probe(ctx))
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    return seen


def discard_unused():
    """Collect garbage with Amaranth's "created but never used" warning silenced.

    Tests build components only to check their errors or properties; call this (or use it as
    an autouse pytest fixture) so those do not warn at interpreter exit.
    """
    import gc
    import warnings

    from amaranth.hdl import UnusedElaboratable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        gc.collect()
