"""Real full disks and read-only folders for the fault tests: a small tmpfs, a read-only bind mount. Both need
mount rights (root with CAP_SYS_ADMIN, as in a container run as root); `can_mount()` says whether this machine
gives them. A read-only folder for anyone else is made with chmod (whose bits root ignores)."""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

_CAN_MOUNT: list[bool] = []


def _mount(*args) -> bool:
    return subprocess.run(["mount", *map(str, args)], capture_output=True).returncode == 0


def _umount(path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)
    if os.path.ismount(path):  # still busy (a process of a study run there is ending): detach it now
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def can_mount() -> bool:
    if not _CAN_MOUNT:
        probe = Path(tempfile.mkdtemp(prefix="ablate-mount-probe-"))
        ok = shutil.which("mount") is not None and _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", probe)
        if ok:
            _umount(probe)
        probe.rmdir()
        _CAN_MOUNT.append(ok)
    return _CAN_MOUNT[0]


class Tmpfs:
    """A tmpfs of `size` (e.g. "3m") at `path`, which can be grown later; unmounted by `close()`."""

    def __init__(self, path: Path, size: str):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", self.path):
            raise RuntimeError(f"cannot mount a tmpfs at {self.path}")

    def resize(self, size: str) -> None:
        if not _mount("-o", f"remount,size={size}", self.path):
            raise RuntimeError(f"cannot resize the tmpfs at {self.path}")

    def used(self) -> int:
        """Bytes in use."""
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def close(self) -> None:
        _umount(self.path)


@contextlib.contextmanager
def read_only(folder: Path):
    """`folder` cannot be written (not even by root) inside the block."""
    folder = Path(folder)
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if p.is_dir()}
        for p in modes:
            p.chmod(modes[p] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    if not (_mount("--bind", folder, folder) and _mount("-o", "remount,bind,ro", folder)):
        _umount(folder)
        import pytest

        pytest.skip("a read-only folder for root needs a read-only bind mount, which this machine does not allow")
    try:
        yield
    finally:
        _umount(folder)
