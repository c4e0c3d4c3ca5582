"""The Optuna storage a study keeps its search in: the run folder's SQLite file, or a server database shared
by a cluster (PostgreSQL); URLs opened, checked before anything runs, and shown without their password.
"""
from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from ablate.errors import AblateError

if TYPE_CHECKING:
    pass


def storage_url(url: str) -> str:
    """An Optuna storage URL SQLAlchemy can open: postgresql:// means psycopg2 to SQLAlchemy, so with only
    psycopg (3, the `postgres` extra) installed it is spelled postgresql+psycopg://."""
    import importlib.util

    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            if importlib.util.find_spec("psycopg2") is not None:
                return url
            if importlib.util.find_spec("psycopg") is None:
                raise AblateError("a PostgreSQL storage needs its driver: pip install 'psycopg[binary]>=3.1' (or, in "
                                  "ablate's checkout, pip install -e '.[postgres]')")
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def check_storage(url: str) -> None:
    """Fail fast, before any folder exists, when the Optuna storage cannot be opened."""
    import optuna

    # Two studies that open a fresh database at once both create Optuna's tables; the slower one's CREATE
    # fails on what the faster one just made. The tables then exist, so opening again succeeds.
    races = ("duplicate key", "already exists", "unique constraint")
    for attempt in range(5):
        try:
            optuna.storages.RDBStorage(storage_url(url))
            return
        except AblateError:
            raise
        except Exception as exc:  # SQLAlchemy raises many kinds; all mean the same to the user
            if attempt < 4 and any(r in str(exc).lower() for r in races):
                time.sleep(0.5 * (attempt + 1))
                continue
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AblateError(f"cannot open Optuna storage {mask_url(url)!r}: {_hide(reason, url)}") from None


def _patterns(stop: str) -> tuple[re.Pattern, re.Pattern]:
    """scheme://user:PASSWORD@ (user may be empty; the password runs to the last @, as it may hold an unescaped
    @ or /) and a query parameter naming a secret (?password=, &sslpassword=, ;token= ...); `stop`: characters a
    URL cannot hold where it sits (none in a string that is one URL; blanks and quotes in a message)."""
    anything = f"[^{stop}]" if stop else "."
    userinfo = re.compile(rf"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@{stop}]*):{anything}*@", re.DOTALL)
    query = re.compile(rf"(?P<head>[?&;][^=&#{stop}]*(?:pass|pwd|secret|token)[^=&#{stop}]*=)[^&#{stop}]*",
                       re.IGNORECASE | re.DOTALL)
    return userinfo, query


_IN_URL = _patterns("")
_IN_TEXT = _patterns("\\s'\"")


def _mask(text: str, patterns: tuple[re.Pattern, re.Pattern]) -> str:
    userinfo, query = patterns
    return query.sub(r"\g<head>***", userinfo.sub(r"\g<head>:***@", text))


def mask_url(url: str) -> str:
    """A storage URL (or one command-line argument) with every password shown as ***: user:PASSWORD@,
    :PASSWORD@, and any query parameter naming a pass, pwd, secret or token (?password=PASSWORD). Fit for a
    manifest or a report."""
    return _mask(url, _IN_URL)


def mask_text(text: str) -> str:
    """A message or a traceback with the password of every URL in it shown as *** (a URL ends at a blank or a
    quote here)."""
    return _mask(text, _IN_TEXT)


def _hide(message: str, url: str) -> str:
    """A driver's message about `url` with the URL's passwords masked, also where the message quotes a password
    apart from its URL (decoded, or cut where the driver's parser stopped)."""
    from urllib.parse import unquote

    userinfo, query = _IN_URL
    secrets = {url[m.end("head") + 1:m.end() - 1] for m in userinfo.finditer(url)}
    secrets |= {url[m.end("head"):m.end()] for m in query.finditer(url)}
    message = message.replace(url, mask_url(url))
    for secret in sorted(secrets | {unquote(x) for x in secrets}, key=len, reverse=True):
        if len(secret) >= 3:  # a one- or two-character password would mask half the message, and hides nothing
            message = message.replace(secret, "***")
    return mask_text(message)
