"""RTL verification of the accelerator: cocotb testbench, Verilog testbench, CLIs.

- :mod:`sim.testbench`: Driver, Monitor, Model (golden/) and Checker in one cocotb Testbench.
- :mod:`sim.cocotb_lenet`: the cocotb tests (stream, reset in the middle of an image).
- :mod:`sim.runner`: build and run them through ``cocotb_tools.runner`` (Icarus, Verilator).
- :mod:`sim.vectors`: the self-checking plain Verilog testbench with ``$readmemh`` vectors.
- :mod:`sim.flow`: checkpoint → integer model → folding → Verilog, each only when needed.
- ``python -m sim.run``: simulate N test images (or ``--full``) and compare with golden/.
- ``python -m sim.bench``: RTL simulation speed of Icarus and Verilator.
"""

import warnings

from amaranth.hdl import UnusedElaboratable

# The testbench builds LeNetAccelerator only to read its stream layouts and stage names
# (the Verilog comes from hw.verilog); it is never elaborated here, which is intended.
warnings.filterwarnings("ignore", category=UnusedElaboratable)
