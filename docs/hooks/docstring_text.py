"""Griffe extension for the Python API pages: ablate's docstrings are plain text, not Markdown.

They name paths such as `runs/<study>/<time>/` and `dest/<arm>_seed<seed>_<id>/` outside code spans; rendered as
Markdown, `<study>` would be taken for an HTML tag and vanish, and `_seed<seed>_` would turn into emphasis. This
writes `<` and `>` outside code spans as entities and escapes `_`, so the page shows what the docstring says. The docstrings themselves stay as they are.
"""
from __future__ import annotations

from typing import Any

import griffe


def escape_outside_code(text: str) -> str:
    """`<` and `>` as entities and `_` escaped (`a_seed<seed>_b` is no emphasis), except inside code spans."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;").replace("_", "\\_")
    return "`".join(parts)


class DocstringText(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: ARG002  griffe's hook signature
        if obj.docstring is not None:
            obj.docstring.value = escape_outside_code(obj.docstring.value)
