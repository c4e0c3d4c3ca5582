"""The Optuna storage a study keeps its search in: the run folder's SQLite file, or a server database shared
by a cluster (PostgreSQL); URLs opened, checked before anything runs, and shown without their password.
"""
from __future__ import annotations

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
                raise AblateError("a PostgreSQL storage needs its driver: pip install 'ablate[postgres]'")
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
            raise AblateError(f"cannot open Optuna storage {mask_url(url)!r}: {reason}") from None


def mask_url(url: str) -> str:
    """A storage URL without its password, fit for a manifest or a message."""
    import re

    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
