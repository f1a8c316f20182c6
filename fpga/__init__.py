"""The FPGA flow: devices, tool lookup, synthesis, place and route, sweeps, board gateware and the
host link. It takes the generator's components (hw/) and the integer model (golden/); it never
imports quant/ or torch.
"""
