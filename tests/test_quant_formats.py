"""Fixed-point helpers: golden's rounding (half up) and saturation on real-valued tensors."""

import numpy as np
import torch

from golden import layers as GL
from quant.formats import (
    act_frac,
    code_range,
    quantize_tensor,
    requantize,
    round_half_up,
    weight_frac,
)


def test_code_range():
    assert code_range({"bits": 8, "signed": True}) == (-128, 127)
    assert code_range({"bits": 4, "signed": False}) == (0, 15)


def test_round_half_up_passes_the_gradient():
    t = torch.tensor([-1.5, -0.5, 0.5, 1.49], requires_grad=True)
    out = round_half_up(t)
    assert out.tolist() == [-1.0, 0.0, 1.0, 1.0]
    out.sum().backward()
    assert t.grad.tolist() == [1.0] * 4


def test_requantize_equals_golden():
    acc = torch.arange(-600, 600, dtype=torch.float64).view(2, 3, 10, 20)
    for fmt in ({"bits": 6, "frac": 1, "signed": True}, {"bits": 5, "frac": [0, 1, 2],
                                                         "signed": False}):
        sat = {}
        got = requantize(acc / 2 ** 3, fmt, sat, "x")
        shift = 3 - np.asarray(fmt["frac"])
        expected, count = GL.requantize(acc.numpy().astype(np.int64),
                                        shift if shift.ndim else int(shift), fmt)
        codes = got * torch.tensor(2.0 ** np.asarray(fmt["frac"])).view(
            (1, -1, 1, 1) if shift.ndim else ())
        assert np.array_equal(codes.numpy().astype(np.int64), expected)
        assert sat == {"x": count}


def test_quantize_tensor_per_output_channel():
    w = torch.tensor([[0.3, -0.3], [0.3, -0.3]], dtype=torch.float64)
    got = quantize_tensor(w, {"bits": 4, "frac": [2, 4], "signed": True})
    assert got.tolist() == [[0.25, -0.25], [0.3125, -0.3125]]


def test_fracs():
    assert weight_frac(np.array([0.4, -0.9]), 8) == 7
    assert weight_frac(np.zeros(3), 8) == 7
    assert act_frac(3.0, 8, False) == 6 and act_frac(3.0, 8, True) == 5
