"""Text from a spec (its name, description, arm names, factor values) written into Markdown as text.

A spec is user input: its text must not become headings, tables, links, images or HTML elements in report.md
(which a viewer may render with raw HTML on) or in report.html. `text` folds line breaks (so nothing can start
a block: a heading, a table, a list) and backslash-escapes the characters that start inline markup (emphasis,
code, links and images, HTML and entities, table cells) and a punctuation character at its start; CommonMark
shows a backslash-escaped punctuation character as itself. `code` puts the text in a code span whose fence no
backtick in it can close.
"""
from __future__ import annotations

import re
import string

# "_" inside a word (grad_norms.csv) cannot open or close emphasis in CommonMark, so only others are escaped
_INLINE = re.compile(r"([\\`*\[\]<>!|&~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def text(value: object) -> str:
    """Spec text as literal Markdown text, on one line."""
    out = _INLINE.sub(r"\\\1", _one_line(value))
    if out and out[0] in string.punctuation and out[0] != "\\":
        out = "\\" + out  # "-", "+", ">", "=" ... at the start of a line would start a block
    return out


def code(value: object, table: bool = False) -> str:
    """Spec text as a Markdown code span (shown literally, HTML included). In a table cell (`table=True`) a `|`
    is escaped, as GitHub-flavoured tables need inside code spans too."""
    body = _one_line(value)
    if table:
        body = body.replace("|", "\\|")
    runs = [len(r) for r in re.findall(r"`+", body)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") or not body.strip() else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def plot_text(value: object) -> str:
    """Spec text for a matplotlib title or label: `$` escaped, so that it is never parsed as mathtext."""
    return str(value).replace("$", r"\$")
