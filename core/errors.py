"""User-facing errors and the CLI wrapper that prints them as one line."""

import functools
import sys

__all__ = ["UserError", "cli"]


class UserError(Exception):
    """An error caused by the user's input (config, data, checkpoint, integer model): print it,
    don't trace it."""


def cli(main):
    """Wrap a ``main(argv)`` so user errors print ``error: ...`` on one line and exit 2."""
    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return wrapper
