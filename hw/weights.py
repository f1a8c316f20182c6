"""The weight memories of a MAC stage: one per PE lane, ROMs or loaded after reset."""

from amaranth.hdl import Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .arith import counter_shape, rom_depth

__all__ = ["WeightStore", "LOADED_WEIGHTS"]

#: Name prefix of the loadable weight memories (``load``); synthesis scripts select them by it
#: (e.g. to map them to iCE40 SPRAM, which has no initial contents).
LOADED_WEIGHTS = "loaded_weights"


class WeightStore(wiring.Component):
    """Hold each PE lane's weight words; read all lanes' word ``addr`` when ``en`` is high.

    Lane ``p`` has its own memory of ``simd`` codes per word (one synchronous read port), so
    a read yields ``data[p][s]`` for every lane two advancing cycles later (:attr:`latency`:
    the memory read, then a register, so no memory read shares a cycle with a multiplier).

    With ``load`` the memories have no initial contents: ``w`` fills them after reset, lane by
    lane, word by word, the codes of a word in order (the order of ``words``); each completed
    word is registered and written the next cycle (the write ports see only registers);
    ``loaded`` rises after the last write, and reads are enabled only from then on. Each memory
    has one address for its write and read ports and never writes and reads in one cycle (a
    single-port RAM, such as iCE40 SPRAM, which the memories are named for:
    :data:`LOADED_WEIGHTS`).

    Parameters
    ----------
    shape : shape-castable
        Code of one weight.
    words : list (per lane) of list (per address) of list of ``simd`` ints
        The lanes' contents; every lane has the same number of words.
    load : bool

    Members
    -------
    addr : ``In(range(len(words[0])))``
    en : ``In(1)``
    data : ``Out(ArrayLayout(ArrayLayout(shape, simd), pe))``
    w : ``In(stream.Signature(shape))`` (``load`` only)
    loaded : ``Out(1)`` (``load`` only)
    """
    #: Advancing cycles from ``addr`` to ``data``: the memory read and the operand register.
    latency = 2

    def __init__(self, *, shape, words, load=False):
        words = [[[int(v) for v in word] for word in lane] for lane in words]
        if not words or not words[0] or not words[0][0]:
            raise ValueError("words must hold at least one lane of one word of one code")
        rows, simd = len(words[0]), len(words[0][0])
        if any(len(lane) != rows or any(len(word) != simd for word in lane) for lane in words):
            raise ValueError(f"every lane must have {rows} words of {simd} codes")
        if not isinstance(load, bool):
            raise TypeError(f"load must be a bool, not {load!r}")
        self._shape, self._words, self._load = Shape.cast(shape), words, load
        members = {"addr": In(counter_shape(rows)), "en": In(1),
                   "data": Out(data.ArrayLayout(data.ArrayLayout(shape, simd), len(words)))}
        if load:
            members["w"] = In(stream.Signature(shape))
            members["loaded"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        rows, simd = len(self._words[0]), len(self._words[0][0])
        word = data.ArrayLayout(self._shape, simd)
        if self._load:
            ports = self._rams(m, rows, word)
        else:
            ports = []
            for lane, init in enumerate(self._words):
                rom = Memory(shape=word, depth=rom_depth(rows), init=init)
                m.submodules[f"weights_{lane}"] = rom
                port = rom.read_port()
                m.d.comb += [port.addr.eq(self.addr), port.en.eq(self.en)]
                ports.append(port)
        with m.If(self.en):
            m.d.sync += [self.data[p].eq(port.data) for p, port in enumerate(ports)]
        return m

    def _rams(self, m, rows, word):
        pe, simd = len(self._words), len(self._words[0][0])
        lane = Signal(counter_shape(pe))
        addr = Signal(counter_shape(rows))
        elem = Signal(counter_shape(simd))
        gathered = Signal(word)
        full = Signal(word)                     # the codes taken so far, the newest last
        m.d.comb += full[simd - 1].eq(self.w.payload)
        m.d.comb += [full[s].eq(gathered[s + 1]) for s in range(simd - 1)]
        take, write, done = Signal(), Signal(), Signal()
        m.d.comb += [self.w.ready.eq(~done), take.eq(self.w.valid & self.w.ready),
                     write.eq(take & (elem == simd - 1))]
        with m.If(take):
            m.d.sync += [gathered.eq(full), elem.eq(Mux(elem == simd - 1, 0, elem + 1))]
        # A completed word is registered before it is written: the memories' write ports see
        # only registers, never the (combinational) handshake of the stream feeding ``w``.
        wr_en, wr_last = Signal(), Signal()
        wr_addr, wr_lane, wr_word = Signal(counter_shape(rows)), Signal(counter_shape(pe)), \
            Signal(word)
        m.d.sync += wr_en.eq(write)
        with m.If(write):
            last = (addr == rows - 1) & (lane == pe - 1)
            m.d.sync += [wr_addr.eq(addr), wr_lane.eq(lane), wr_word.eq(full),
                         wr_last.eq(last)]
            with m.If(last):
                m.d.sync += done.eq(1)
            with m.If(addr == rows - 1):
                m.d.sync += [addr.eq(0), lane.eq(lane + 1)]
            with m.Else():
                m.d.sync += addr.eq(addr + 1)
        with m.If(wr_en & wr_last):
            m.d.sync += self.loaded.eq(1)
        shared = Signal(counter_shape(rows))
        m.d.comb += shared.eq(Mux(self.loaded, self.addr, wr_addr))
        ports = []
        for k in range(pe):
            ram = Memory(shape=word, depth=rom_depth(rows), init=[])
            m.submodules[f"{LOADED_WEIGHTS}_{k}"] = ram
            wr, rd = ram.write_port(), ram.read_port()
            m.d.comb += [wr.addr.eq(shared), wr.data.eq(wr_word),
                         wr.en.eq(wr_en & (wr_lane == k)),
                         # never a read while writing, visibly: a single-port RAM (SPRAM)
                         rd.addr.eq(shared), rd.en.eq(self.en & self.loaded & ~wr_en)]
            ports.append(rd)
        return ports
