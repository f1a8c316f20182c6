"""core.errors: user errors print one line and exit 2; other errors are not swallowed."""

import pytest

import golden
from core.errors import UserError, cli


def test_user_error_is_one_line_and_exit_2(capsys):
    @cli
    def main(argv=None):
        raise UserError("config x.toml: layers[0].kernel=40 is out of range; use 1..15")

    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: config x.toml: layers[0].kernel=40 is out of range; use 1..15\n"
    assert captured.out == ""


def test_interrupt_exits_130(capsys):
    @cli
    def main(argv=None):
        raise KeyboardInterrupt

    assert main([]) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_bugs_are_not_hidden():
    @cli
    def main(argv=None):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        main([])


def test_success_passes_the_exit_code_through():
    assert cli(lambda argv=None: 0)([]) == 0


def test_golden_model_errors_are_user_errors():
    assert issubclass(golden.QModelError, UserError)
