"""fpga.dsp: products mapped into hard multiplier blocks compute what the fabric ones do."""

import re
import shutil
import subprocess

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import signed

from fpga.dsp import (
    ECP5_MULT_MODEL,
    ECP5_OPERAND_BITS,
    Ecp5Products,
    product_platform,
    with_products,
)
from hw.mac_array import PRODUCT_HOOK, MacArray


def _array(**kw):
    return MacArray(acc_bits=kw.pop("acc_bits", 28), **kw)


def _verilog(array, name, platform):
    return verilog.convert(array, name=name, platform=platform, emit_src=False)


def test_product_platform_per_family():
    assert isinstance(product_platform("ecp5"), Ecp5Products)
    assert hasattr(product_platform("ecp5"), PRODUCT_HOOK)
    assert product_platform("ice40") is None


@pytest.mark.parametrize("kw, blocks", [
    (dict(x_shape=8, w_shape=signed(8), pe=2, simd=3, bias=np.arange(4)), 6),
    (dict(x_shape=8, w_shape=signed(8), pe=2, simd=3, bias=np.arange(4), lut_mul=True), 0),
    (dict(x_shape=8, w_shape=8, pe=1, simd=2, bias=[0], op="sqdiff"), 0),
    (dict(x_shape=signed(ECP5_OPERAND_BITS), w_shape=signed(8), pe=1, simd=2, bias=[0]), 2),
    # an unsigned 18-bit operand needs 19 signed bits: it stays in the fabric
    (dict(x_shape=ECP5_OPERAND_BITS, w_shape=signed(8), pe=1, simd=2, bias=[0]), 0),
])
def test_blocks_only_where_they_hold_the_product(kw, blocks):
    text = _verilog(_array(**kw), "hard", Ecp5Products())
    assert len(re.findall(r"^\s*MULT18X18D\b", text, re.M)) == blocks


@pytest.mark.sim
@pytest.mark.parametrize("kw", [
    dict(x_shape=8, w_shape=signed(8), pe=2, simd=3, bias=np.arange(6) * 7 - 20),
    dict(x_shape=signed(4), w_shape=signed(2), pe=3, simd=2, bias=np.arange(3)),
    dict(x_shape=signed(ECP5_OPERAND_BITS), w_shape=signed(ECP5_OPERAND_BITS), pe=1, simd=9,
         bias=[5, -3]),
])
def test_mapped_array_equals_fabric_array(kw, tmp_path):
    """Random operands, control and advance for 3,000 cycles: the array with its products in
    MULT18X18D blocks (the block's behavioural model) shows the same outputs, every cycle, as
    the array with fabric registers."""
    if shutil.which("iverilog") is None:
        pytest.skip("iverilog not found: apt-get install -y iverilog")
    soft, hard = _array(**kw), _array(**kw)
    width_i = soft.signature.members["i"].shape.size
    width_o = soft.signature.members["o"].shape.size
    (tmp_path / "fabric.v").write_text(_verilog(soft, "fabric", None))
    (tmp_path / "blocks.v").write_text(_verilog(hard, "blocks", Ecp5Products()))
    words = -(-width_i // 32)
    rand = ", ".join("$random(seed)" for _ in range(words))
    (tmp_path / "tb.v").write_text(f"""
module tb;
    reg clk = 0, rst = 1, en = 0;
    reg [{32 * words - 1}:0] stim;
    wire [{width_i - 1}:0] i = stim[{width_i - 1}:0];
    wire [{width_o - 1}:0] o_soft, o_hard;
    integer n, bad = 0, valid = 0, seed = 7;
    fabric s(.clk(clk), .rst(rst), .en(en), .i(i), .o(o_soft));
    blocks h(.clk(clk), .rst(rst), .en(en), .i(i), .o(o_hard));
    initial begin
        for (n = 0; n < 3000; n = n + 1) begin
            stim = {{{rand}}};
            en = ($random(seed) & 3) != 0;
            rst = n < 2;
            #1 clk = 1; #1 clk = 0;
            if (o_soft !== o_hard) bad = bad + 1;
            if (o_soft[0]) valid = valid + 1;
        end
        $display("RESULT %0d %0d", bad, valid);
        $finish;
    end
endmodule
""")
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "tb.vvp"), str(tmp_path / "tb.v"),
                    str(tmp_path / "fabric.v"), str(tmp_path / "blocks.v"), str(ECP5_MULT_MODEL)],
                   check=True, capture_output=True, text=True)
    run = subprocess.run(["vvp", "-n", str(tmp_path / "tb.vvp")], check=True,
                         capture_output=True, text=True)
    bad, valid = map(int, re.search(r"RESULT (\d+) (\d+)", run.stdout).groups())
    assert (bad, valid > 100) == (0, True)


@pytest.mark.sim
def test_model_refuses_configurations_it_does_not_cover(tmp_path):
    if shutil.which("iverilog") is None:
        pytest.skip("iverilog not found: apt-get install -y iverilog")
    (tmp_path / "tb.v").write_text("""
module tb;
    MULT18X18D #(.REG_PIPELINE_CLK("CLK0")) m();
endmodule
""")
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "tb.vvp"), str(tmp_path / "tb.v"),
                    str(ECP5_MULT_MODEL)], check=True, capture_output=True)
    run = subprocess.run(["vvp", "-n", str(tmp_path / "tb.vvp")], capture_output=True, text=True)
    assert "MULT18X18D model: unsupported configuration" in run.stdout


def test_board_platforms_carry_the_hook_of_their_family():
    class Board:
        pass
    assert with_products(Board, "ice40") is Board
    ecp5 = with_products(Board, "ecp5")
    assert issubclass(ecp5, Board) and hasattr(ecp5(), PRODUCT_HOOK)
