"""PyTorch side of the flow: config, data, float model, training, quantization, reports."""

import os

# OpenMP threads that spin while waiting make PyTorch 10-40x slower as soon as another process
# competes for the cores (a busy 2-core machine, a test run beside a simulation). Sleeping
# waiters cost nothing on an idle machine. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import layers  # noqa: E402,F401  (fills the torch module and qmodel exporter registries)
