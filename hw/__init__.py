"""Amaranth generator for the streaming LeNet-5 dataflow accelerator.

Every stage is a :class:`amaranth.lib.wiring.Component` with a stream input ``i`` and a stream
output ``o``; one beat carries one spatial position with all its channels. :mod:`hw.top` chains
them from the integer model (``qmodel.json`` + arrays), :mod:`hw.cycles` predicts their cycles
and :mod:`hw.verilog` writes the Verilog.
"""
