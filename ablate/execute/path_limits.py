"""Whether a run folder's path is one the operating system and SQLite can take, checked before anything is written.

Three limits, measured on Linux (ext4, overlayfs) with SQLite 3.40.1:
  * NAME_MAX, 255 bytes per path component (os.pathconf): a longer name fails with "File name too long". A study
    stages its run folder as `.<name>.XXXXXXXX` beside it (ablate.run_folder.run_files), 10 bytes more.
  * PATH_MAX, 4096 bytes with its terminating zero (os.pathconf): no system call takes a longer path. The longest
    path ablate makes inside a run folder is trials/<id>/ and a file name written through a temporary name
    (`.predictions.csv.XXXXXXXX.tmp`): INSIDE bytes at most.
  * SQLite's MAX_PATHNAME, 512 bytes: SQLite makes the database path absolute (following links) and opens nothing
    longer, and its rollback journal (`<path>-journal`) must fit too; a run's optuna.db opened at an absolute path
    of 504 bytes and failed at 505 ("unable to open database file").
Lengths count bytes of the file-system encoding, as the kernel does.
"""
from __future__ import annotations

import os
from pathlib import Path

from ablate.errors import AblateError

SQLITE_MAX_PATHNAME = 512  # SQLite's default for the unix VFS: the most bytes of a file path it opens
SQLITE_SUFFIX = "-journal"  # the longest name SQLite derives from the database's (-wal and -shm are shorter)
STAGING = len(".") + len(".XXXXXXXX")  # a study's staging folder: .<run folder name>.XXXXXXXX
INSIDE = 64  # bytes of the longest path ablate makes inside a run folder (trials/<12 hex>/.<name>.XXXXXXXX.tmp)


def _limits(path: Path) -> tuple[int, int]:
    """(NAME_MAX, PATH_MAX) of the file system the path would be on: asked of its nearest existing folder."""
    existing = path
    while existing != existing.parent and not _is_dir(existing):
        existing = existing.parent
    try:
        return os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 255, 4096


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long to look up, a folder that cannot be read
        return False


def _bytes(path: Path | str) -> int:
    return len(os.fsencode(str(path)))


def check_folder_path(folder: Path, flag: str, staged: bool = False) -> Path:
    """Refuse (AblateError, naming the limit) a folder whose name, absolute path or the files ablate writes in it
    the operating system cannot take. Returns the absolute path, links resolved (what the kernel and SQLite see)."""
    if "\x00" in str(folder):
        raise AblateError(f"{flag}: {str(folder)!r} holds a NUL character, which no file path may hold")
    given = Path(os.path.abspath(folder))
    name_max, path_max = _limits(given)
    full = Path(os.path.realpath(given))
    for part in (*given.parts, *full.parts):
        if _bytes(part) > name_max:
            raise AblateError(f"{flag}: the folder name {part[:40]}... is {_bytes(part):,} bytes long, more than the "
                              f"{name_max} bytes a file name may have here (NAME_MAX); choose a shorter name")
    if staged and _bytes(full.name) + STAGING > name_max:
        raise AblateError(f"{flag}: the run folder's name is {_bytes(full.name):,} bytes long; a study stages it as "
                          f".<name>.XXXXXXXX, which must fit in the {name_max} bytes a file name may have here "
                          f"(NAME_MAX): use a name of at most {name_max - STAGING} bytes")
    if _bytes(full) + 1 + INSIDE >= path_max:
        raise AblateError(f"{flag}: {full} is {_bytes(full):,} bytes long once made absolute; with the files ablate "
                          f"writes inside it ({INSIDE} bytes more) it passes the {path_max:,} bytes a path may have "
                          f"(PATH_MAX): use a folder of at most {path_max - 2 - INSIDE:,} bytes, or start from a "
                          "shallower folder")
    return full


def check_sqlite_path(database: Path, flag: str) -> None:
    """Refuse a SQLite database path SQLite would not open (with its journal beside it)."""
    full = Path(os.path.realpath(os.path.abspath(database)))
    most = SQLITE_MAX_PATHNAME - len(SQLITE_SUFFIX)
    if _bytes(full) > most:
        raise AblateError(f"{flag}: the Optuna database {full} would be {_bytes(full):,} bytes long once made absolute; "
                          f"SQLite opens none over {most} bytes (its {SQLITE_MAX_PATHNAME}-byte limit less "
                          f"'{SQLITE_SUFFIX}' for its journal): use a folder path of at most "
                          f"{most - _bytes(full) + _bytes(full.parent)} bytes, or keep the studies elsewhere "
                          "with --storage")
