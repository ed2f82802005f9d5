"""`python -m pricelab_cli` runs the same entry point as the `pricelab` script."""

from pricelab_cli.cli import main

if __name__ == "__main__":
    main()
