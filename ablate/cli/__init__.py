"""The `ablate` command line (the top of the house: it may import every other part). Its Typer application is
`ablate.cli.app.app`; the installed command runs `main`."""
from ablate.cli.app import main

__all__ = ["main"]
