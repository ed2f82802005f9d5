"""The `pricelab` command line: parse, read, call one core function, write, report.

No statistics live here. ``registry`` holds the program, ``options`` the shared options,
``run`` what every run does around its command, ``present`` what commands print,
``commands/`` one file a command, and ``app`` the entry point, where errors raised by the
core become exit codes once.
"""

from pricelab_cli.cli.app import main
from pricelab_cli.cli.registry import app

__all__ = ["app", "main"]
