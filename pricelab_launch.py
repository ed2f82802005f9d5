"""The `pricelab` command's entry point, kept outside the package on purpose.

Importing ``pricelab_cli`` loads polars, numpy and the rest, which takes a moment; a Ctrl-C
in that moment would print a traceback from the middle of an import. This module imports
nothing heavy itself, so it can turn that interrupt into the quiet exit 130 that an
interrupted run gives later on, even when the interrupt's exception was lost inside the
import (see ``main``).
"""

import signal
import sys


def main() -> None:
    received: list[int] = []

    def interrupted(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    # Python raises a handler's exception wherever the main thread is; inside the import
    # system's weakref callbacks it is printed as "ignored" and lost, and the run would go on.
    # So the interrupt is also remembered, and honoured once the import is done; and the
    # "ignored" report of it is not printed.
    def unraisable(report, default=sys.unraisablehook):
        if not isinstance(report.exc_value, KeyboardInterrupt):
            default(report)

    previous = signal.signal(signal.SIGINT, interrupted)
    sys.unraisablehook = unraisable
    try:
        from pricelab_cli.cli import main as run
    except KeyboardInterrupt:
        sys.exit(130)
    if received:
        sys.exit(130)
    sys.unraisablehook = sys.__unraisablehook__
    signal.signal(signal.SIGINT, previous)
    run()


if __name__ == "__main__":
    main()
