"""A writable folder for matplotlib's configuration and font cache, where HOME's is not one.

matplotlib keeps both under ~/.config/matplotlib and ~/.cache/matplotlib (or $XDG_CONFIG_HOME, $XDG_CACHE_HOME). When
it cannot make or write them (a read-only or missing HOME, a service account, a container), it makes a temporary
folder and writes a warning of several lines to stderr in every process that imports it, and rebuilds its font
cache each time. ablate checks first, as matplotlib does (make the folder, then ask whether it is a writable
folder), and where it is not, points $MPLCONFIGDIR at a folder of this user's in the temporary directory, kept
between runs, silently: what matplotlib would have done, without the warning. Processes ablate starts (a study's
Ray workers) inherit the variable. An $MPLCONFIGDIR already set is left alone.
"""
from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path


def use_writable_folder() -> None:
    if os.environ.get("MPLCONFIGDIR") or not sys.platform.startswith(("linux", "freebsd")):
        return
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no passwd entry
        home = None
    folders = []
    for variable, default in (("XDG_CONFIG_HOME", ".config"), ("XDG_CACHE_HOME", ".cache")):
        base = os.environ.get(variable) or (home / default if home is not None else None)
        folders.append(Path(base, "matplotlib") if base else None)
    if all(folder is not None and _writable(folder) for folder in folders):
        return
    os.environ["MPLCONFIGDIR"] = str(_own_temporary_folder())


def _writable(folder: Path) -> bool:
    """matplotlib's own test: the folder can be made (with its parents) and is a folder this process may write."""
    try:
        folder = folder.resolve()
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):
        return False
    return folder.is_dir() and os.access(folder, os.W_OK)


def _own_temporary_folder() -> Path:
    """TMPDIR/ablate-matplotlib-<uid>, made private to this user, or a fresh one where that name is taken by
    anything else (another user's folder, a link)."""
    folder = Path(tempfile.gettempdir()) / f"ablate-matplotlib-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="ablate-matplotlib-"))
