"""cocotb 2.x testbench of the accelerator: Driver, Monitor, Model and Checker in one Testbench.

- :class:`StreamDriver` sends beats on a valid/ready stream with random idle gaps.
- :class:`StreamMonitor` accepts beats of the output stream with random backpressure.
- :class:`TapMonitor` watches every inter-stage stream inside the DUT (instance ``s<k>_<name>``
  that Amaranth keeps in the Verilog hierarchy), unpacked with the stage's own
  :mod:`amaranth.lib.data` layout.
- :class:`GoldenModel` runs ``golden/`` on the same images (classes, scores, per-layer taps).
- :class:`Scoreboard` compares every output beat (class and every score) and every tap beat.

Everything here runs inside the simulator process started by :mod:`sim.runner`; the plan (what
to simulate) comes in a JSON file named by the ``SIM_LENET_PLAN`` environment variable.
"""

import json
import os
import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from amaranth.lib import data

import golden
from hw.regroup import Regroup
from hw.top import LeNetAccelerator

__all__ = ["Plan", "StreamDriver", "StreamMonitor", "TapMonitor", "GoldenModel", "Scoreboard",
           "Testbench", "stage_instances", "pause_generator"]


@dataclass
class Plan:
    """What one simulation does; written by :mod:`sim.runner`, read in the simulator."""
    qmodel_dir: str
    images: str                       # .npy of uint8 [N, H, W] (or [N, C, H, W])
    results: str                      # JSON written at the end
    folding: list | None = None
    gaps: float = 0.0                 # probability of an idle cycle before each input beat
    backpressure: float = 0.0         # probability that o.ready is low in a cycle
    seed: int = 1
    taps: bool = False                # monitor every inter-stage stream
    period_ns: int = 10
    progress: int = 0                 # print a progress line every this many images (0: never)
    max_cycles: int = 0               # give up after this many cycles (0: no limit)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls):
        path = os.environ.get("SIM_LENET_PLAN")
        if not path:
            raise RuntimeError("SIM_LENET_PLAN is not set; run the testbench through "
                               "sim.runner.simulate() (python -m sim.run)")
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))


def pause_generator(probability, seed):
    """Yield True (pause this cycle) with ``probability``, reproducibly from ``seed``."""
    rng = random.Random(seed)
    while True:
        yield probability > 0 and rng.random() < probability


def stage_instances(top):
    """Return ``[(instance name, stage)]`` of a :class:`hw.top.LeNetAccelerator`, in order.

    The names are those :meth:`LeNetAccelerator.elaborate` gives its submodules, which
    Amaranth keeps as Verilog instance names (``s0_padder``, ``s1_c1``, ...).
    """
    result = []
    for n, stage in enumerate(top.stages):
        name = getattr(stage, "label", type(stage).__name__)
        name = name.split("'")[1] if "'" in name else type(stage).__name__.lower()
        result.append((f"s{n}_{name}", stage))
    return result


def layer_name(stage):
    """Return the golden layer name of a stage (``None`` for padders and the classifier)."""
    label = getattr(stage, "label", None)
    return label.split("'")[1] if label and "'" in label else None


class Clocked:
    """Access to the clock and the cycle count (from simulation time)."""

    def __init__(self, dut, period_ns):
        self.dut = dut
        self.period_ns = period_ns

    def cycle(self):
        from cocotb.simtime import get_sim_time
        return int(round(get_sim_time(unit="ns") / self.period_ns))


class StreamDriver(Clocked):
    """Drive an Amaranth stream port (``<name>__valid/ready/payload``) with idle gaps."""

    def __init__(self, dut, name, *, period_ns, gaps=0.0, seed=1):
        super().__init__(dut, period_ns)
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.gaps = gaps
        self.pause = pause_generator(gaps, seed)
        self.sent = 0
        self.first_valid_cycle = None     # first cycle a beat was presented
        self.accept_cycles = []           # cycle of each accepted beat (kept for the first few)
        self.valid.value = 0

    async def send(self, beats):
        """Send ``beats`` (ints, packed payloads); return when the last one is accepted."""
        from cocotb.triggers import ReadOnly, RisingEdge
        clk = self.dut.clk
        for beat in beats:
            while next(self.pause):
                self.valid.value = 0
                await RisingEdge(clk)
            self.valid.value = 1
            self.payload.value = int(beat)
            await ReadOnly()
            if self.first_valid_cycle is None:
                self.first_valid_cycle = self.cycle()
            while not self.ready.value:
                if self.gaps:
                    await RisingEdge(clk)
                else:
                    # Nothing to do until ready rises: sleep instead of waking every cycle.
                    await RisingEdge(self.ready)
                await ReadOnly()
            if len(self.accept_cycles) < 4:
                self.accept_cycles.append(self.cycle())
            self.sent += 1
            await RisingEdge(clk)             # the beat is taken at this edge
        self.valid.value = 0


class StreamMonitor(Clocked):
    """Accept beats of a stream port with random backpressure; hand each to a callback."""

    def __init__(self, dut, name, layout, *, period_ns, backpressure=0.0, seed=2,
                 callback=None):
        super().__init__(dut, period_ns)
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.layout = layout
        self.backpressure = backpressure
        self.pause = pause_generator(backpressure, seed)
        self.callback = callback
        self.beats = []                   # (cycle, payload Const)
        self.ready.value = 0

    async def run(self):
        from cocotb.triggers import ReadOnly, RisingEdge
        clk = self.dut.clk
        while True:
            await RisingEdge(clk)
            ready = not next(self.pause)
            self.ready.value = int(ready)
            await ReadOnly()
            if not ready:
                continue
            if not self.valid.value and not self.backpressure:
                await RisingEdge(self.valid)
                await ReadOnly()
                if not self.valid.value:
                    continue
            if self.valid.value:
                beat = data.Const(self.layout, self.payload.value.to_unsigned())
                cycle = self.cycle()
                self.beats.append((cycle, beat))
                if self.callback is not None:
                    self.callback(cycle, beat)


@dataclass
class Tap:
    instance: str
    layer: str | None                 # golden layer (None: a padder, compared with np.pad)
    layout: object
    expected: np.ndarray              # [N, beats per image, lanes]
    blocks: int = 1                   # beats per position (channels / lanes)
    beats: int = 0
    first: dict | None = None         # first divergence seen on this stream


class TapMonitor(Clocked):
    """Sample every inter-stage stream each cycle and compare accepted beats with golden taps."""

    def __init__(self, dut, taps, *, period_ns):
        super().__init__(dut, period_ns)
        self.taps = taps
        self.handles = [(tap, getattr(dut, tap.instance)) for tap in taps]
        self.handles = [(tap, h.o__valid, h.o__ready, h.o__payload) for tap, h in self.handles]

    async def run(self):
        from cocotb.triggers import ReadOnly, RisingEdge
        clk = self.dut.clk
        while True:
            await RisingEdge(clk)
            await ReadOnly()
            for tap, valid, ready, payload in self.handles:
                v, r = valid.value, ready.value
                if not (v.is_resolvable and r.is_resolvable):
                    raise AssertionError(f"{tap.instance}: o.valid={v} o.ready={r} at cycle "
                                         f"{self.cycle()}: X/Z on a handshake")
                if v and r:
                    self._check(tap, payload.value.to_unsigned())

    def _check(self, tap, raw):
        per_image = tap.expected.shape[1]
        image, index = divmod(tap.beats, per_image)
        position, block = divmod(index, tap.blocks)
        tap.beats += 1
        if tap.first is not None or image >= tap.expected.shape[0]:
            return
        beat = data.Const(tap.layout, raw)
        got = [int(beat[c]) for c in range(tap.layout.length)]
        want = tap.expected[image, index]
        for lane, (g, w) in enumerate(zip(got, want, strict=True)):
            channel = block * len(want) + lane
            if g != int(w):
                tap.first = {"layer": tap.layer or tap.instance, "instance": tap.instance,
                             "image": image, "position": position, "channel": channel,
                             "expected": int(w), "got": g, "cycle": self.cycle()}
                return

    def first_divergence(self):
        """Return the divergence of the earliest stage (pipeline order) that diverged."""
        for tap in self.taps:
            if tap.first is not None:
                return tap.first
        return None


class GoldenModel:
    """The reference: ``golden/`` on the same images; expected output and tap beats."""

    def __init__(self, qmodel_dir, images, *, taps=False):
        self.model = golden.load(qmodel_dir)
        self.images = images
        self.result = self.model.run(images, taps=taps)

    @property
    def classes(self):
        return self.result["classes"]

    @property
    def scores(self):
        return self.result["scores"]

    def tap_beats(self, stages):
        """Return one :class:`Tap` per inter-stage stream of ``stages`` (not the output)."""
        taps = []
        previous = np.asarray(self.images, dtype=np.int64)
        if previous.ndim == 3:
            previous = previous[:, None]
        for instance, stage in stages[:-1]:
            layer = layer_name(stage)
            if isinstance(stage, Regroup):        # the previous tensor, other beats
                value = previous
            elif layer is None:                   # a padder: the previous tensor, padded
                p = stage.pad
                value = np.pad(previous, ((0, 0), (0, 0), (p, p), (p, p)))
            else:
                value = np.asarray(self.result["taps"][layer])
            if value.ndim == 2:                   # [N, F]: a vector is one position
                value = value[:, :, None, None]
            # Positions row-major, the channels of a position in beats of the stage's lanes.
            lanes = stage.o.payload.shape().length
            beats = value.transpose(0, 2, 3, 1).reshape(value.shape[0], -1, lanes)
            previous = value
            taps.append(Tap(instance, layer, stage.o.payload.shape(), beats,
                            blocks=value.shape[1] // lanes))
        return taps


class Scoreboard:
    """Compare each output beat with the golden class and every score, in order."""

    def __init__(self, model, *, log=None):
        self.model = model
        self.log = log
        self.received = []                # {"cls", "scores", "cycle", "match"}
        self.mismatches = []

    def __call__(self, cycle, beat):
        k = len(self.received)
        layout = beat.shape()
        scores = [int(beat.scores[i]) for i in range(layout["scores"].shape.length)]
        entry = {"cls": int(beat.cls), "scores": scores, "last": int(beat.last),
                 "cycle": cycle}
        if k >= len(self.model.classes):
            entry["match"] = False
            self.mismatches.append({"image": k, "reason": "unexpected extra output beat"})
        else:
            want_cls = int(self.model.classes[k])
            want = [int(v) for v in self.model.scores[k]]
            entry["match"] = (entry["cls"] == want_cls and scores == want and
                              entry["last"] == 1)
            if not entry["match"]:
                bad = [i for i, (g, w) in enumerate(zip(scores, want, strict=True)) if g != w]
                self.mismatches.append({"image": k, "expected_cls": want_cls,
                                        "got_cls": entry["cls"], "bad_scores": bad,
                                        "expected_scores": want, "got_scores": scores})
                if self.log is not None:
                    self.log.error("image %d: expected class %d scores %s, got class %d "
                                   "scores %s", k, want_cls, want, entry["cls"], scores)
        self.received.append(entry)


class Progress:
    """Print a line every ``every`` images (to the terminal of the running CLI)."""

    def __init__(self, total, every):
        self.total = total
        self.every = every
        self.start = time.monotonic()

    def __call__(self, done, cycle):
        if self.every and (done % self.every == 0 or done == self.total):
            wall = time.monotonic() - self.start
            rate = done / wall if wall > 0 else 0.0
            print(f"[sim] {done}/{self.total} images, {cycle} cycles, {wall:.1f} s, "
                  f"{rate:.1f} images/s", file=sys.stderr, flush=True)


class Testbench:
    """The accelerator under test with its driver, monitors, golden model and scoreboard."""

    def __init__(self, dut, plan):
        self.dut = dut
        self.plan = plan
        self.images = np.load(plan.images)
        qmodel = golden.load(plan.qmodel_dir)
        top = LeNetAccelerator(qmodel.meta, qmodel.arrays, plan.folding)
        self.stages = stage_instances(top)
        self.in_layout = top.i.payload.shape()
        self.out_layout = top.o.payload.shape()
        self.model = GoldenModel(plan.qmodel_dir, self.images, taps=plan.taps)
        self.scoreboard = Scoreboard(self.model, log=dut._log)
        self.progress = Progress(len(self.images), plan.progress)
        self.driver = StreamDriver(dut, "i", period_ns=plan.period_ns, gaps=plan.gaps,
                                   seed=plan.seed)
        self.monitor = StreamMonitor(dut, "o", self.out_layout, period_ns=plan.period_ns,
                                     backpressure=plan.backpressure, seed=plan.seed + 1,
                                     callback=self._output)
        self.taps = None
        if plan.taps:
            self.taps = TapMonitor(dut, self.model.tap_beats(self.stages),
                                   period_ns=plan.period_ns)
        self._expected_outputs = len(self.images)
        self._done = None
        self._packed = {}

    def _output(self, cycle, beat):
        self.scoreboard(cycle, beat)
        self.progress(len(self.scoreboard.received), cycle)
        if self._done is not None and len(self.scoreboard.received) >= self._expected_outputs:
            self._done.set()

    def image_beats(self, image):
        """Return the packed input beats of one image (positions row-major), via the layout."""
        img = np.asarray(image)
        if img.ndim == 2:
            img = img[None]
        c = img.shape[0]
        flat = img.reshape(c, -1).T
        cache = self._packed
        beats = []
        for pos in map(tuple, flat.tolist()):
            bits = cache.get(pos)
            if bits is None:
                bits = cache[pos] = self.in_layout.const(list(pos)).as_bits()
            beats.append(bits)
        return beats

    async def start(self):
        """Start the clock, reset, start the monitors."""
        import cocotb
        from cocotb.clock import Clock
        from cocotb.triggers import ClockCycles, Event
        self._done = Event()
        Clock(self.dut.clk, self.plan.period_ns, unit="ns").start()
        await self.reset()
        cocotb.start_soon(self.monitor.run())
        if self.taps is not None:
            cocotb.start_soon(self.taps.run())
        await ClockCycles(self.dut.clk, 1)

    async def reset(self, cycles=3):
        from cocotb.triggers import ClockCycles, RisingEdge
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0

    async def wait_outputs(self, count, timeout_cycles=0):
        """Wait until ``count`` output beats arrived (fail after ``timeout_cycles``)."""
        from cocotb.triggers import Event, with_timeout
        self._expected_outputs = count
        if len(self.scoreboard.received) >= count:
            return
        self._done = Event()
        if timeout_cycles:
            await with_timeout(self._done.wait(), timeout_cycles * self.plan.period_ns,
                               "ns")
        else:
            await self._done.wait()

    def result(self, wall, extra=None):
        """Return the JSON-able summary of the run."""
        out = {
            "images": len(self.images),
            "outputs": self.scoreboard.received,
            "mismatches": self.scoreboard.mismatches,
            "golden_classes": [int(v) for v in self.model.classes],
            "first_accept_cycles": self.driver.accept_cycles,
            "first_valid_cycle": self.driver.first_valid_cycle,
            "cycles": self.monitor.cycle(),
            "wall_seconds": wall,
            "divergence": self.taps.first_divergence() if self.taps is not None else None,
            "taps_checked": ({t.instance: t.beats for t in self.taps.taps}
                             if self.taps is not None else None),
        }
        if extra:
            out.update(extra)
        return out

    def write_result(self, wall, extra=None):
        result = self.result(wall, extra)
        with open(self.plan.results, "w", encoding="utf-8") as f:
            json.dump(result, f)
        return result
