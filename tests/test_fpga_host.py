"""fpga.host: the simulated UART loop against golden, images from files, the CLI."""

import numpy as np
import pytest
from conftest import golden_replies

from core.errors import UserError
from fpga.host import check, main, read_images, simulate_uart
from golden import random_images

pytestmark = [pytest.mark.usefixtures("discard_unused_elaboratables"),
              pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]


def test_uart_top_replies_equal_golden(tiny):
    """Gateware reply bytes off the simulated ``tx`` pin, decoded by the host: golden's class
    and scores."""
    meta, arrays = tiny
    images = random_images(meta, 2, 7)
    replies = simulate_uart(meta, arrays, images, divisor=4)
    assert replies == golden_replies(meta, arrays, images)
    assert check(meta, arrays, images, replies)[0] == []


def test_check_names_the_mismatching_images(tiny):
    meta, arrays = tiny
    images = random_images(meta, 3, 7)
    replies = golden_replies(meta, arrays, images)
    replies[1]["scores"][0] += 1
    replies[2]["cls"] = (replies[2]["cls"] + 1) % 4
    assert check(meta, arrays, images, replies)[0] == [1, 2]


def test_loaded_weights_over_uart(loadable):
    meta, arrays = loadable
    images = random_images(meta, 1, 4)
    replies = simulate_uart(meta, arrays, images, divisor=3, load=("dense2",))
    assert check(meta, arrays, images, replies)[0] == []


def test_read_images(tmp_path):
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    np.save(tmp_path / "x.npy", images)
    got, labels = read_images(tmp_path / "x.npy", 2)
    assert (got == images[:2]).all() and labels is None
    np.savez(tmp_path / "a.npz", images=images, labels=np.array([7, 8, 9]))
    got, labels = read_images(tmp_path / "a.npz", 5)
    assert (got == images).all() and labels.tolist() == [7, 8, 9]
    np.savez(tmp_path / "cache.npz", test_images=images, test_labels=np.array([1, 2, 3]))
    got, labels = read_images(tmp_path / "cache.npz", 1)
    assert (got == images[:1]).all() and labels.tolist() == [1]
    np.savez(tmp_path / "other.npz", x=images)
    with pytest.raises(UserError) as exc:
        read_images(tmp_path / "other.npz", 1)
    assert str(exc.value) == (f"--images-file {tmp_path / 'other.npz'}: no 'images' or "
                              f"'test_images' array; give an .npz with 'images' (and 'labels')")


def test_cli_self_test(capsys):
    assert main(["--self-test", "--images", "2"]) == 0
    out = capsys.readouterr().out
    assert "2/2 replies equal to golden (simulated UART" in out


def _refused(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err[len("error: "):].rstrip("\n")


def test_cli_needs_port_or_self_test(capsys):
    assert _refused(capsys, ["--images", "1"]) == ("give --port (a board) or --self-test "
                                                   "(simulation)")


def test_cli_port_needs_a_model(capsys):
    assert _refused(capsys, ["--port", "/dev/null"]) == "give --config or --qmodel with --port"


def test_cli_board_selects_the_device_table(capsys):
    """``--board`` resolves the model for the board's device (an unknown board is refused)."""
    assert "argument --board: invalid choice: 'nope'" in _refused(
        capsys, ["--self-test", "--board", "nope"])


def test_cli_divisor_and_images_out_of_range(capsys):
    assert _refused(capsys, ["--self-test", "--divisor", "2"]) == (
        "--divisor=2 must be at least 3 clock cycles per bit (the UART receiver's minimum); "
        "leave it out for 4")
    assert _refused(capsys, ["--self-test", "--images", "0"]) == (
        "--images=0 must be a positive integer; leave it out for 16")
