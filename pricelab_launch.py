"""The `pricelab` command's entry point, kept outside the package on purpose.

Importing ``pricelab_cli`` loads polars, numpy and the rest, which takes a moment; a Ctrl-C
in that moment would print a traceback from the middle of an import. This module imports
nothing heavy itself, so it can turn that interrupt into the quiet exit 130 that an
interrupted run gives later on.
"""

import sys


def main() -> None:
    try:
        from pricelab_cli.cli import main as run
    except KeyboardInterrupt:
        sys.exit(130)
    run()


if __name__ == "__main__":
    main()
