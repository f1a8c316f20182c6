"""Amaranth generator for the streaming LeNet-5 dataflow accelerator.

Every stage is a :class:`amaranth.lib.wiring.Component` with a stream input ``i`` and a stream
output ``o``; a beat carries one channel block of one position. :mod:`hw.plan` turns the integer
model into planned stages (its :data:`~hw.plan.STAGES` registry has one entry per layer kind),
:mod:`hw.folding` checks and derives the foldings, :mod:`hw.top` builds and chains the stages,
:mod:`hw.cycles` adds up their cycles and :mod:`hw.verilog` writes the Verilog.
"""

from . import plan  # noqa: F401  (fills the "hardware stage" registry)
