"""Entry point: `python cli.py ...` runs the same app as the `ablate` console script."""
from ablate.cli.app import main

if __name__ == "__main__":
    main()
