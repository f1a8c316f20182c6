"""8N1 UART receiver and transmitter as byte streams."""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx"]


def _check_divisor(divisor, least):
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 1:
        raise TypeError(f"divisor must be a positive integer, not {divisor!r}")
    if divisor < least:
        raise ValueError(f"divisor must be at least {least} clock cycles per bit, not {divisor}")
    return divisor


class UartRx(wiring.Component):
    """Receive 8N1 UART bytes, ``divisor`` clock cycles per bit.

    A byte whose stop bit is low (a framing error or a break) is dropped, and the receiver
    waits for the line to go idle.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (clock frequency / baud rate), at least 3: the line passes a
        two-register synchronizer, and the middle of the start bit must come after it.

    Members
    -------
    rx : ``In(1, init=1)``
        The line, idle high (synchronized inside).
    o : ``Out(stream.Signature(8))``
        One beat per received byte.
    overrun : ``Out(1)``
        Sticky: a byte arrived while the previous one was not taken.
    """
    def __init__(self, *, divisor):
        self._divisor = _check_divisor(divisor, 3)
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                          "overrun": Out(1)})

    divisor = property(lambda self: self._divisor)

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(d))
        bits = Signal(range(8))
        shreg = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(d // 2)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(d - 1), bits.eq(0)]
                    m.next = "DATA"
                    with m.If(rx):
                        m.next = "IDLE"                      # a glitch, not a start bit
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(d - 1), shreg.eq(Cat(shreg[1:], rx)),
                                 bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(rx):
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "BREAK"                     # framing error: wait for idle
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """Send each byte of a stream as an 8N1 UART frame, ``divisor`` clock cycles per bit.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (clock frequency / baud rate).

    Members
    -------
    i : ``In(stream.Signature(8))``
        Taken one byte per frame (10 bits).
    tx : ``Out(1, init=1)``
        The line, idle high (registered).
    """
    def __init__(self, *, divisor):
        self._divisor = _check_divisor(divisor, 1)
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    divisor = property(lambda self: self._divisor)

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        shreg = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        timer = Signal(range(d))
        m.d.comb += self.i.ready.eq(bits == 0)
        m.d.sync += self.tx.eq(shreg[0])
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                         bits.eq(10), timer.eq(d - 1)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), bits.eq(bits - 1),
                             timer.eq(d - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m
