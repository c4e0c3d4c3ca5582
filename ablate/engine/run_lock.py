"""One study process per run folder: a second one (say, a --resume while the first still runs) is refused."""
from __future__ import annotations

import fcntl
from pathlib import Path

from ablate.errors import AblateError
from ablate.run_folder import lock_path


class RunLock:
    """One study process per run folder: a second one (say, a --resume while the first still runs) is refused."""

    def __init__(self, run_dir: Path):
        self.path = lock_path(run_dir)
        self.fh = None

    def __enter__(self):
        try:
            self.fh = open(self.path, "a+")
        except OSError as exc:
            raise AblateError(f"cannot write to run folder {self.path.parent} ({exc.strerror or exc}); a study "
                              "writes its results there: make it writable, then run again") from None
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise AblateError(f"{self.path.parent} is in use by another study process; wait for it to end "
                              "(or stop it) before resuming") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
