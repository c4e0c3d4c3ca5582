"""Entry point: `python cli.py ...` runs the same Typer app as the `ablate` console script."""
from ablate.cli import app

if __name__ == "__main__":
    app()
