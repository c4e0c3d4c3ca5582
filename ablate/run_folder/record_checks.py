"""What a run folder recorded is what is read back: the checks that every reader of a run folder applies.

- Values. Each field of a registry row (trials.jsonl) or of a trial's metrics.json can hold only what ablate
  writes there: an accuracy in [0, 1], a finite cross-entropy >= 0, a whole count >= 0, a known status, text where
  text belongs, a trial id that is a plain folder name. NaN, Infinity, a string where a number belongs, a boolean
  where a count belongs ... are refused: one line naming the file, the line, the field and the value. A damaged
  record is never a number in a table.
- Hashes. A registry row records the SHA-256 of each file its trial folder held when it was registered (`sha256`:
  {file name: hex digest}; ablate.run_folder.registry.append_registry); a reader checks the files it uses against
  them and names the one that changed or went missing. Rows written before the hashes existed have none: their
  folders are not checked (the readers say how many).
- Symbolic links. A trial folder, or a file in one, that is a symbolic link is never read as a result and never
  written through.

Knows nothing of torch.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.run_folder import timeline
from ablate.run_folder.layout import CONFIG, CURVES, GRAD_NORMS, METRICS, PREDICTIONS, WEIGHTS

# The files a finished trial leaves (ablate.train.trial_files.write_trial_folder), each bound to its registry row
# by its hash. weights.pt is hashed too, once, when the trial is registered (0.24 s for 42 MiB, ResNet18's, on the
# busy 2-core AMD EPYC this was written on) but checked only where it is read (the lesion probe): analyze, export
# and resume do not read it, so they do not hash it.
HASHED = (CONFIG, METRICS, CURVES, GRAD_NORMS, PREDICTIONS, WEIGHTS)
RECORDS = tuple(name for name in HASHED if name != WEIGHTS)  # what analyze, export and resume read
HASH_KEY = "sha256"

STATUSES = ("ok", "diverged", "stopped", "error")
STAGES = ("tune", "grid", "confirm")
ACCURACIES = ("best_dev_acc", "test_acc", "final_test_acc", "scored_train_acc")
LOSSES = ("test_loss", "final_test_loss", "scored_train_loss", "final_train_loss", "best_dev_loss")
COUNTS = ("best_step", "steps", "seed", "round", "index", "repeat", "pid", "threads", "segments", "num_classes",
          "in_channels", "stopped_at_evaluations", "evaluations")
SECONDS = ("train_seconds", "total_seconds", "started_at", "ended_at", timeline.REGISTERED_AT)
TEXTS = ("dataset", "device", "node", "host", "error")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # a trial id names a folder: never '..', '/' or empty
_DIGEST = re.compile(r"[0-9a-f]{64}")
LOSS_ROUNDING = 1e-6  # a mean cross-entropy may round a hair below 0 for a model sure of every image


class Constant:
    """NaN, Infinity or -Infinity as JSON (Python's json module reads them; ablate never writes them): kept as
    this marker so that the check names the field holding it."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def parse_constant(text: str) -> Constant:
    return Constant(text)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _safe_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_ID.fullmatch(value)) and value not in (".", "..")


def _param(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool)) or _number(value)


def field_problem(key: str, value: Any) -> str | None:
    """What is wrong with `value` in field `key` ('not an accuracy in [0, 1]'), or None when it can be there.
    Fields not listed here are not checked (metrics.json carries more than the registry reads)."""
    if key == "trial_id":
        return None if _safe_id(value) else "not a trial id (letters, digits, '.', '_' and '-', as a folder name)"
    if key == "stage":
        return None if value in STAGES else f"not a stage ({', '.join(STAGES)})"
    if key == "arm":
        return None if isinstance(value, str) and value else "not an arm name"
    if value is None:
        return None  # every result field may be missing: a diverged trial has no test score
    if key == "status":
        return None if value in STATUSES else f"not a status ({', '.join(STATUSES)})"
    if key in ACCURACIES:
        return None if _number(value) and 0 <= value <= 1 else "not an accuracy in [0, 1]"
    if key in LOSSES:
        return None if _number(value) and value >= -LOSS_ROUNDING else "not a finite cross-entropy >= 0"
    if key in COUNTS:
        return None if _count(value) else "not a whole number >= 0"
    if key in SECONDS:
        return None if _number(value) and value >= 0 else "not a finite time >= 0"
    if key in TEXTS:
        return None if isinstance(value, str) else "not text"
    if key == "params":
        ok = isinstance(value, dict) and all(isinstance(k, str) and _param(v) for k, v in value.items())
        return None if ok else "not a mapping of setting names to numbers, text or booleans"
    if key == "fused_with":
        return None if isinstance(value, list) and all(map(_safe_id, value)) else "not a list of trial ids"
    if key == "repeat_of":
        return None if isinstance(value, list) and len(value) == 2 and all(map(_count, value)) else \
            "not a (round, index) pair"
    if key == timeline.TIMELINE:
        return timeline.problem(value)
    if key == HASH_KEY:
        ok = isinstance(value, dict) and all(k in HASHED and isinstance(v, str) and _DIGEST.fullmatch(v)
                                             for k, v in value.items())
        return None if ok else f"not a mapping of {', '.join(HASHED)} to SHA-256 digests"
    return None


def shown(value: Any) -> str:
    """A value as a message shows it: short, on one line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_fields(record: dict[str, Any], where: str, hint: str, required: tuple[str, ...] = ()) -> None:
    """Refuse the first field of `record` that cannot hold its value: one line naming `where` (file and line),
    the field, the value and what it should be, then `hint` (how to fix it)."""
    for key in required:
        if key not in record:
            raise AblateError(f"{where}: field {key} is missing{hint}")
    for key, value in record.items():
        problem = field_problem(key, value)
        if problem is not None:
            raise AblateError(f"{where}: {key} is {shown(value)}, {problem}{hint}")


def digest_file(path: Path) -> str | None:
    """The SHA-256 of a file's bytes, None when it is missing; a symbolic link is refused, never followed."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        if Path(path).is_symlink():
            raise AblateError(symlink_message(Path(path))) from None
        raise AblateError(f"cannot read {path}: {exc.strerror or exc}") from None
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def digest_bytes(data: bytes) -> str:
    """The SHA-256 of bytes already read (a reader that checks what it read, not the file again)."""
    return hashlib.sha256(data).hexdigest()


def digests(folder: Path, names: tuple[str, ...] = HASHED) -> dict[str, str]:
    """SHA-256 of each of `names` the folder holds (absent ones are left out)."""
    out = {}
    for name in names:
        value = digest_file(Path(folder) / name)
        if value is not None:
            out[name] = value
    return out


def symlink_message(path: Path) -> str:
    return (f"{path} is a symbolic link; ablate never reads a result through a link nor writes through one: replace "
            "the link with what it points to, or delete it (a study --resume runs a trial whose folder is gone again)")


def refuse_symlinks(folder: Path, names: tuple[str, ...] | None = None) -> None:
    """Refuse `folder` itself, or a file in it (`names`, else every entry), that is a symbolic link."""
    folder = Path(folder)
    if folder.is_symlink():
        raise AblateError(symlink_message(folder))
    if names is None:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        links = sorted(e.name for e in entries if e.is_symlink())
        if links:
            raise AblateError(symlink_message(folder / links[0]))
        return
    for name in names:
        if (folder / name).is_symlink():
            raise AblateError(symlink_message(folder / name))
