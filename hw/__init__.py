"""Amaranth generator for the streaming LeNet-5 dataflow accelerator.

Every stage is a :class:`amaranth.lib.wiring.Component` with a stream input ``i`` and a stream
output ``o``; a beat carries one channel block of one position (``lanes`` channels, a
``data.ArrayLayout``), the blocks of a position in order, positions row-major, images back to
back. A stage's ``cycles`` (per image) and ``latency`` are derived from the registers it builds.

Modules:

- the plan: :mod:`hw.plan` (the :data:`~hw.plan.STAGES` registry, one entry per exported layer
  kind, and :func:`~hw.plan.plan`, the chain of stages of an integer model), :mod:`hw.stages`
  (the planned stages: figures, first-image beat times, component), :mod:`hw.geometry` (SIMD
  splits, steps and cycles of a MAC layer; NumPy only), :mod:`hw.folding` (foldings checked,
  derived, read from a config);
- the stages: :mod:`hw.mac` (conv, dense, rbf) from its parts :mod:`hw.window` (line buffer),
  :mod:`hw.issue`, :mod:`hw.weights`, :mod:`hw.mac_array` and :mod:`hw.requant`;
  :mod:`hw.pool` (max, avg, LeCun's subsampling), :mod:`hw.gap` (global average pool),
  :mod:`hw.padder`, :mod:`hw.regroup` (channels per beat), :mod:`hw.output` (class decision);
  :mod:`hw.skid` (the output register with a skid buffer they share), :mod:`hw.arith` (number
  formats and the integer rules of ``golden/``);
- the whole: :mod:`hw.top` (the accelerator and its AXI4-Stream wrapper), :mod:`hw.cycles` (the
  cycle model), :mod:`hw.verilog` and :mod:`hw.build` (Verilog), :mod:`hw.simulation`
  (stream simulation helpers for tests).
"""

from . import plan  # noqa: F401  (fills the "hardware stage" registry)
