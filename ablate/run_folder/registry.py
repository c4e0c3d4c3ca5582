"""trials.jsonl, the run's append-only registry: one JSON row per registered result, appended whole (never
rewritten), the last row per key counting. Its one writer (append_registry) and its one reader
(read_registry_lines)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.run_folder import record_checks
from ablate.run_folder.layout import REGISTRY, trial_dir

# The results a registry row copies from its trial's metrics.json (besides what the trial is: trial_id, stage,
# arm, params, seed, and where the engine proposed it: round, index, repeat, repeat_of, best_dev_loss).
ROW_METRICS = ["status", "best_dev_acc", "best_step", "test_acc", "test_loss", "final_test_acc", "final_test_loss",
               "num_classes", "scored_train_acc", "scored_train_loss", "final_train_loss", "train_seconds",
               "total_seconds", "steps", "dataset", "device", "node", "pid", "started_at", "ended_at", "error",
               "fused_with"]
ROW_START = '{"trial_id": '  # how every registry row begins (registry_row puts the trial id first)
REQUIRED = ("trial_id", "stage", "arm")


def registry_key(row: dict[str, Any]) -> tuple:
    """What a registry row is about: one tuning seed of a proposed point (arm, repeat of the search, round, index,
    seed: two proposals may share a trial), else a trial of its stage."""
    if row.get("round") is not None:
        return (row["stage"], row["arm"], row.get("repeat") or 0, row["round"], row["index"], row.get("seed"))
    return (row["stage"], row["trial_id"])


def registry_hint(run_dir: Path) -> str:
    return (f"; the registry was edited or damaged: restore it from a backup, or delete that line and run "
            f"'ablate study --resume {run_dir}' to register the trial again from its folder")


def read_registry_lines(run_dir: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of each registry row that counts: the last row per key wins. A line cut short by a
    crash (the start of a row that never ended) is ignored; anything else that is not a row, and a row with a value
    that none of its fields can hold (ablate.run_folder.record_checks: an accuracy of 1.7, NaN, a string where a
    number belongs), means the file was damaged, and is refused in one line naming the line, the field and the
    value."""
    path = Path(run_dir) / REGISTRY
    if path.is_symlink():
        raise AblateError(record_checks.symlink_message(path))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise AblateError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows: dict[tuple, tuple[int, dict]] = {}
    hint = registry_hint(run_dir)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:  # rows are written as ASCII JSON, without NaN or Infinity (kept as markers, refused below)
            row = json.loads(raw.decode("ascii"), parse_constant=record_checks.parse_constant)
        except (UnicodeDecodeError, json.JSONDecodeError):
            text = raw.decode("ascii", errors="replace")
            if text.startswith(ROW_START) or ROW_START.startswith(text):
                continue  # cut short by a crash: the trial is registered again from its folder
            row = None
        if not (isinstance(row, dict) and "trial_id" in row and "stage" in row):
            raise AblateError(f"{path} is damaged: line {number} is not a trial record ({_excerpt(raw)}); delete "
                              "that line (or restore the file from a backup): 'ablate study --resume' registers "
                              "again every trial whose folder holds its result")
        record_checks.check_fields(row, f"{path} line {number}", hint, REQUIRED)
        rows[registry_key(row)] = (number, row)
    return list(rows.values())


def read_registry(run_dir: Path) -> list[dict[str, Any]]:
    """The registry's rows that count (read_registry_lines), checked."""
    return [row for _, row in read_registry_lines(run_dir)]


def _excerpt(raw: bytes) -> str:
    shown = raw[:24].decode("ascii", errors="replace").encode("unicode_escape").decode("ascii")
    return f"it starts {shown!r}" + (f", {len(raw)} bytes" if len(raw) > 24 else "")


def append_registry(run_dir: Path, row: dict[str, Any]) -> dict[str, Any]:
    """Append a row, bound to its trial folder: the SHA-256 of each file the folder holds now (record_checks.HASHED)
    goes into the row (`sha256`, replacing any it brought). Returns the row as written."""
    path = Path(run_dir) / REGISTRY
    row = {k: v for k, v in row.items() if k != record_checks.HASH_KEY}
    folder = trial_dir(run_dir, row.get("trial_id"))
    if record_checks.field_problem("trial_id", row.get("trial_id")) is None and folder.is_dir():
        record_checks.refuse_symlinks(folder, record_checks.HASHED)
        row[record_checks.HASH_KEY] = record_checks.digests(folder)
    written = row
    line = (json.dumps(row, default=_json_default, allow_nan=False) + "\n").encode("ascii")
    # A whole line with O_APPEND, on a line of its own: a line that a crash cut short (readers skip it) must
    # not swallow the start of this one. Never through a symbolic link.
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError:
        if path.is_symlink():
            raise AblateError(record_checks.symlink_message(path)) from None
        raise
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        while line:  # a short write (a full disk) goes on where it stopped, or raises
            line = line[os.write(fd, line):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return written


def _json_default(value: Any) -> Any:
    return str(value)


def registry_row(trial: Any, metrics: dict[str, Any], repeats: bool = False) -> dict[str, Any]:
    """A trial's registry row (`trial`: an ablate.engine.trial_plan.TrialPlan): what it is (stage, arm, params,
    seed; a tuning trial's round and index, and its repeat of the search when the search repeats) and its results
    (ROW_METRICS, from its metrics.json)."""
    row = {"trial_id": trial.trial_id, "stage": trial.stage, "arm": trial.arm, "params": trial.params,
           "seed": trial.config.seed}
    if trial.round is not None:
        row.update({"round": trial.round, "index": trial.index})
    if repeats and trial.stage == "tune":
        row["repeat"] = trial.repeat
    for key in ROW_METRICS:
        value = metrics.get(key)
        row[key] = None if isinstance(value, float) and not math.isfinite(value) else value
    return row
