"""The Optuna storage a study keeps its search in: the run folder's SQLite file, or a server database shared
by a cluster (PostgreSQL); URLs opened, checked before anything runs, and shown without their password.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ablate.errors import AblateError
from ablate.messages import IN_URL, mask_text, mask_url

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
    """Fail fast, before any folder exists, when the Optuna storage cannot be opened. A SQLite file that does
    not exist yet is not made here (a dry run or a command refused later must leave none behind): only its
    folder is checked; the study makes it when it starts (open_storage)."""
    path = sqlite_path(url)
    if path is not None:
        if not path.exists():
            folder = path.parent
            if not folder.is_dir():
                raise AblateError(f"cannot open Optuna storage {mask_url(url)!r}: folder {folder} does not exist")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise AblateError(f"cannot open Optuna storage {mask_url(url)!r}: folder {folder} is not writable")
            return
        check_sqlite_file(path)
    open_storage(url)


def open_storage(url: str) -> None:
    """Open the storage, making Optuna's tables where they are missing."""
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


def sqlite_path(url: str) -> Path | None:
    """The file of a sqlite:/// URL (None for any other storage, or an in-memory one)."""
    if not url.startswith("sqlite:///"):
        return None
    name = url[len("sqlite:///"):].split("?", 1)[0]
    return Path(name) if name and name != ":memory:" else None


def check_sqlite_file(path: Path) -> None:
    """An existing SQLite file that SQLite can read (never made here: mode=rw opens only what exists; not
    read-only, so that the journal a killed study left is rolled back, as SQLite does on any open)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=rw", uri=True)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise AblateError(f"{path} is not a readable SQLite database ({exc}); it is the study's Optuna storage: "
                          f"restore it from a backup, or move it aside (mv {path} {path}.damaged) and run again: "
                          "the search is then asked again, round by round, from the results in the trial "
                          "folders") from None


def _hide(message: str, url: str) -> str:
    """A driver's message about `url` with the URL's passwords masked, also where the message quotes a password
    apart from its URL (decoded, or cut where the driver's parser stopped)."""
    from urllib.parse import unquote

    userinfo, query = IN_URL
    secrets = {url[m.end("head") + 1:m.end() - 1] for m in userinfo.finditer(url)}
    secrets |= {url[m.end("head"):m.end()] for m in query.finditer(url)}
    message = message.replace(url, mask_url(url))
    for secret in sorted(secrets | {unquote(x) for x in secrets}, key=len, reverse=True):
        if len(secret) >= 3:  # a one- or two-character password would mask half the message, and hides nothing
            message = message.replace(secret, "***")
    return mask_text(message)
