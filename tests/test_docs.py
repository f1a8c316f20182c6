"""Figures the documents state are the ones the code computes."""

import re

import pytest

from core.paths import ROOT
from hw.cycles import cycle_model
from hw.folding import derive_folding


def _figure_rows():
    text = (ROOT / "docs" / "hardware.md").read_text(encoding="utf-8")
    table = text.split("| folding (c1, c3, f5, f6, out as pe/simd) |", 1)[1].split("\n\n")[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    assert len(rows) >= 3
    return rows


@pytest.mark.parametrize("row", _figure_rows())
def test_hardware_md_cycle_figures(row, lenet5):
    label, cycles, latency, multipliers, per_mult = (
        c.strip() for c in row.strip("|").split("|"))
    meta, arrays = lenet5
    folding = [{"pe": int(p), "simd": int(s)}
               for p, s in re.findall(r"(\d+)/(\d+)", label.split(":")[-1])]
    target = re.search(r"derive_folding\((\d+)\)", label)
    if target:
        assert derive_folding(meta, int(target.group(1)), arrays) == folding
    model = cycle_model(meta, folding, arrays)
    number = lambda s: int(s.replace(",", ""))
    assert model["cycles_per_image"] == number(cycles)
    assert model["latency_cycles"] == number(latency)
    assert model["multipliers"] == number(multipliers)
    assert model["macs"] == 416_520
    assert round(model["macs"] / model["multipliers"]) == number(per_mult)
