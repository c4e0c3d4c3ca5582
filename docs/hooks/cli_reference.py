"""MkDocs hook: the command-line reference, generated from the Typer app when the site is built.

A page holding the line `<!-- cli-reference -->` gets, in its place, every command of `ablate` with its usage,
help and options, as Typer's own `typer ... utils docs` writes them (typer.cli.get_docs_for_click), one heading
level down so that the page keeps its own title. Nothing is copied by hand, so the page cannot fall behind the
code: a new option is on the page at the next build.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

MARKER = "<!-- cli-reference -->"
ROOT = Path(__file__).resolve().parents[2]


def cli_markdown() -> str:
    """Every command of the app as Markdown, headings one level down (`# ablate` becomes `## ablate`)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # this checkout's ablate, installed or not
    import click
    import typer.main
    from typer.cli import get_docs_for_click

    from ablate.cli.app import app

    command = typer.main.get_command(app)
    text = get_docs_for_click(obj=command, ctx=click.Context(command), name="ablate")
    return "\n".join(_escaped(re.sub(r"^(#+) ", r"#\1 ", text, flags=re.MULTILINE)))


def escape_outside_code(text: str) -> str:
    """`<` and `>` as entities, except inside backtick code spans."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # the even parts are outside code spans
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _escaped(text: str):
    """The lines of `text` with `<` and `>` outside code written as entities: help text says `trials/<id>/`,
    which Markdown would otherwise take for an HTML tag and drop."""
    fenced = False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        if fenced or line.startswith("```"):
            yield line
            continue
        yield escape_outside_code(line)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001  MkDocs' hook signature
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_markdown())
