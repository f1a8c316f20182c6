"""The FPGA flow: devices, tool lookup, synthesis, place and route, sweeps, board gateware and the
host link. It takes the generator's components (hw/) and the integer model (golden/); it never
imports quant/ or torch.

Modules, each depending only on those listed before it:

- :mod:`fpga.tools`: where the YoWASP tools are, their versions, running one with a heartbeat;
- :mod:`fpga.devices`: the target FPGAs (:data:`~fpga.devices.DEVICES`) and their resources;
- :mod:`fpga.link`: the byte protocol (image bytes, the reply layout) both sides read;
- :mod:`fpga.uart`: 8N1 UART receiver and transmitter;
- :mod:`fpga.gateware`: the byte link around the accelerator and the UART board top;
- :mod:`fpga.cli`: the model, folding and ``--load`` arguments the commands share;
- :mod:`fpga.report`: reading Yosys's and nextpnr's reports, writing ours;
- :mod:`fpga.synth`, :mod:`fpga.sweep`, :mod:`fpga.board`, :mod:`fpga.host`: the commands
  (``python -m fpga.<name>``).
"""
