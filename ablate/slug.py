"""Path components made from spec text (a study's name, an arm, a grid value): one slug function, so that no
name a spec gives (`../../x`, `/abs/path`, a newline, unicode) can put a file outside its folder."""
from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

from ablate.errors import AblateError

MAX_LENGTH = 80
# Letters, digits and - _ . = , (arm names read `residual=true,shortcut=identity`); neither . nor - leads, so
# a slug is never `.`, `..`, a hidden file or an option.
_SLUG = re.compile(r"[A-Za-z0-9_=,][A-Za-z0-9_=,.-]*")


def slug(text: str, limit: int = MAX_LENGTH) -> str:
    """`text` itself when it is already a slug of at most `limit` characters; else its ASCII letters, digits and
    - _ . = , (accents dropped, any other run of characters as one -), cut short, with 8 hex digits of the
    text's hash appended so that two texts that differ still give two slugs."""
    text = str(text)
    if len(text) <= limit and _SLUG.fullmatch(text):
        return text
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = re.sub(r"[^A-Za-z0-9_=,.-]+", "-", ascii_text).lstrip(".-").rstrip("-")[: limit - 9].rstrip("-")
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned}-{digest}" if cleaned else digest


def child(parent: Path, *texts: str) -> Path:
    """parent/slug(text1)/slug(text2)/..., checked to lie inside parent."""
    path = Path(parent).joinpath(*(slug(t) for t in texts))
    if not path.resolve().is_relative_to(Path(parent).resolve()):  # cannot happen to slugs; a last guard
        raise AblateError(f"{path} would lie outside {parent}")
    return path
