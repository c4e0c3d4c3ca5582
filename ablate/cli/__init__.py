"""The `ablate` command line (the top of the house: it may import every other part)."""
from ablate.cli.app import app, main

__all__ = ["app", "main"]
