"""fpga.uart: the 8N1 receiver and transmitter."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from fpga.uart import UartRx, UartTx


def _loopback(divisor, sent):
    m = Module()
    m.submodules.tx = tx = UartTx(divisor=divisor)
    m.submodules.rx = rx = UartRx(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    async def source(ctx):
        for byte in sent:
            ctx.set(tx.i.payload, byte)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)

    async def sink(ctx):
        ctx.set(rx.o.ready, 1)
        for _ in range(12 * divisor * (len(sent) + 1)):     # a frame is 10 bits
            _, _, valid, payload = await ctx.tick().sample(rx.o.valid, rx.o.payload)
            if valid:
                got.append(payload)
        assert not ctx.get(rx.overrun)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return got


def test_loopback_carries_every_byte_value():
    sent = list(range(256)) + [random.Random(0).randrange(256) for _ in range(20)]
    assert _loopback(5, sent) == sent


@pytest.mark.parametrize("divisor", [3, 4, 8])
def test_loopback_divisors(divisor):
    sent = [0x00, 0xFF, 0x55, 0xAA, 0x81]
    assert _loopback(divisor, sent) == sent


def test_overrun_is_sticky():
    """Bytes that arrive while the previous one is not taken set ``overrun``."""
    m = Module()
    m.submodules.tx = tx = UartTx(divisor=3)
    m.submodules.rx = rx = UartRx(divisor=3)
    m.d.comb += rx.rx.eq(tx.tx)

    async def bench(ctx):
        ctx.set(rx.o.ready, 0)
        for byte in (1, 2):
            ctx.set(tx.i.payload, byte)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)
        await ctx.tick().repeat(60)
        assert ctx.get(rx.overrun) == 1
        assert ctx.get(rx.o.valid) == 1 and ctx.get(rx.o.payload) == 2

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("cls", [UartRx, UartTx])
def test_rejects_bad_divisor(cls):
    with pytest.raises(TypeError) as exc:
        cls(divisor=0)
    assert str(exc.value) == "divisor must be a positive integer, not 0"
    with pytest.raises(TypeError) as exc:
        cls(divisor=2.0)
    assert str(exc.value) == "divisor must be a positive integer, not 2.0"
    assert cls(divisor=7).divisor == 7


def test_receiver_needs_three_cycles_per_bit():
    """At 2 cycles per bit the synchronizer delays the start bit past its middle."""
    with pytest.raises(ValueError) as exc:
        UartRx(divisor=2)
    assert str(exc.value) == "divisor must be at least 3 clock cycles per bit, not 2"
    assert UartTx(divisor=1).divisor == 1
