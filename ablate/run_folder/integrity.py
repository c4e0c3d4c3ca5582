"""A registered trial's files are those its registry row bound it to: checked before anything is read from
them (analyze, export, resume, reproduce, the lesion probe), and the configs the analysis reads back."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.run_folder import record_checks
from ablate.run_folder.layout import CONFIG, METRICS, REGISTRY, trial_dir, trials_dir
from ablate.run_folder.registry import ROW_METRICS, read_registry_lines, registry_hint
from ablate.run_folder.trial_records import read_config, read_metrics
from ablate.spec import TrialConfig


def metrics_changed(row: dict[str, Any], folder: Path) -> bool:
    """Whether the trial folder's metrics.json is not the one `row` was registered with (the trial ran again:
    a resume reruns a trial that ended in an error, or whose metrics.json was deleted). False for a row registered
    without hashes."""
    recorded = (row.get(record_checks.HASH_KEY) or {}).get(METRICS)
    return recorded is not None and record_checks.digest_file(Path(folder) / METRICS) != recorded


@dataclass
class RecordCheck:
    """What checking a run folder's records against their registry rows found: rows whose files were checked,
    and rows registered without hashes (by an ablate before they were recorded) whose files could not be."""

    checked: int = 0
    unchecked: int = 0
    error_rows: int = 0  # rows of trials that ended in an error: a resume runs them again, nothing is read from them

    def note(self) -> str | None:
        """A line for the user when some rows could not be checked."""
        if not self.unchecked:
            return None
        return (f"{self.unchecked} trial(s) of this run were registered without file hashes (an older ablate): "
                "their folders' files were not checked against the registry")


def _changed_message(path: Path, registry: Path, line: int, row: dict[str, Any], recorded: str, now: str | None,
                     run_dir: Path) -> str:
    if now is None:
        what = f"is missing, but {registry.name} line {line} recorded it when trial {row['trial_id']} was registered"
    else:
        what = (f"changed after trial {row['trial_id']} was registered ({registry.name} line {line} recorded SHA-256 "
                f"{recorded[:12]}..., the file has {now[:12]}...)")
    return (f"{path} {what}; nothing is read from a changed record: restore the file, or delete "
            f"{path.parent / METRICS} and run 'ablate study --resume {run_dir}' to run the trial again")


def check_trial_records(run_dir: Path, line: int, row: dict[str, Any], names: tuple[str, ...] = record_checks.RECORDS,
                        *, resuming: bool = False, cache: dict[Path, str | None] | None = None) -> str:
    """Check a registered trial's folder against its registry row (at `line` of trials.jsonl): no symbolic link
    (ever), then each of `names` that the row hashed has its hash (a missing one counts as changed), then the
    row's results are those its metrics.json recorded (an edited registry line). Refuses in one line naming the
    file. Returns 'checked', 'unchecked' (a row without hashes) or 'error' (a row of a trial that ended in an
    error: every resume runs it again, so its folder may change; nothing is read from it).

    `resuming`: a resume runs a trial whose metrics.json is missing again, so the rest of its folder is not
    checked; a folder of an error row may hold a new error, but not a result that was never registered. `cache`:
    digests already taken (a trial folder that several rows share is hashed once)."""
    run_dir = Path(run_dir)
    registry = run_dir / REGISTRY
    folder = trial_dir(run_dir, row["trial_id"])
    record_checks.refuse_symlinks(folder, names)
    recorded = row.get(record_checks.HASH_KEY)
    if recorded is None:
        return "unchecked"
    metrics_path = folder / METRICS
    if row.get("status") == "error":
        if resuming and METRICS in recorded:
            now = record_checks.digest_file(metrics_path)
            if now is not None and now != recorded[METRICS]:
                metrics = read_metrics(folder) or {}
                if metrics.get("status") != "error":
                    raise AblateError(_changed_message(metrics_path, registry, line, row, recorded[METRICS], now,
                                                       run_dir))
        return "error"
    if resuming and not metrics_path.exists():
        return "checked"  # lost: the resume runs the trial again and registers what it records
    cache = {} if cache is None else cache
    for name in names:
        if name not in recorded:
            continue
        if folder / name not in cache:
            cache[folder / name] = record_checks.digest_file(folder / name)
        now = cache[folder / name]
        if now != recorded[name]:
            raise AblateError(_changed_message(folder / name, registry, line, row, recorded[name], now, run_dir))
    if METRICS in recorded and METRICS in names:
        metrics = read_metrics(folder) or {}
        for key in ROW_METRICS:
            then = metrics.get(key)
            then = None if isinstance(then, float) and not math.isfinite(then) else then
            if row.get(key) != then:
                raise AblateError(f"{registry} line {line}: {key} is {record_checks.shown(row.get(key))}, but trial "
                                  f"{row['trial_id']} recorded {record_checks.shown(then)} in {metrics_path}"
                                  f"{registry_hint(run_dir)}")
    return "checked"


def check_run_records(run_dir: Path, lines: list[tuple[int, dict[str, Any]]] | None = None, *,
                      resuming: bool = False) -> RecordCheck:
    """Every registered trial's folder checked against its row (check_trial_records); `lines` as
    read_registry_lines gives them (read here when None). A resume also refuses any symbolic link among the run
    folder's trial folders and their files, registered or not: the planner would register such a folder's result,
    or write through it."""
    run_dir = Path(run_dir)
    lines = read_registry_lines(run_dir) if lines is None else lines
    found, cache = RecordCheck(), {}
    for line, row in lines:
        outcome = check_trial_records(run_dir, line, row, resuming=resuming, cache=cache)
        if outcome == "checked":
            found.checked += 1
        elif outcome == "unchecked":
            found.unchecked += 1
        else:
            found.error_rows += 1
    if resuming:
        trials = trials_dir(run_dir)
        record_checks.refuse_symlinks(trials, ())
        if trials.is_dir():
            for entry in sorted(os.scandir(trials), key=lambda e: e.name):
                if entry.is_symlink():
                    raise AblateError(record_checks.symlink_message(Path(entry.path)))
                if entry.is_dir():
                    record_checks.refuse_symlinks(Path(entry.path))
    return found


def recorded_configs(run_dir: Path, rows: list[dict[str, Any]]) -> dict[str, TrialConfig]:
    """The config each registered trial recorded (config.yaml), by trial id, read through read_config: checked
    against the SHA-256 its row recorded (a row of an older ablate has none: read as it is). Left out, so that the
    reader takes the spec's settings: a trial whose row is an error (nothing is read from its folder), whose folder
    holds no config.yaml, or whose config.yaml this ablate cannot read (written by an older ablate with a setting
    that is gone)."""
    out: dict[str, TrialConfig] = {}
    for row in rows:
        trial_id = row["trial_id"]
        if trial_id in out or row.get("status") == "error":
            continue
        folder = trial_dir(run_dir, trial_id)
        if not (folder / CONFIG).is_file():
            continue
        expected = (row.get(record_checks.HASH_KEY) or {}).get(CONFIG)
        try:
            out[trial_id] = read_config(folder, expected)
        except AblateError:
            if expected is not None and record_checks.digest_file(folder / CONFIG) != expected:
                raise  # a changed record is refused, never replaced by the spec's settings
            continue
    return out


def read_registered(folder: Path, names: tuple[str, ...], hashes: dict[str, str] | None) -> dict[str, bytes]:
    """The bytes of each of `names` the trial folder holds, each read once and checked against the hash its
    registry row recorded (`hashes`; None for a row of an older ablate: not checked); a file that changed or went
    missing since is refused, naming it, and a symbolic link is never read."""
    files = {}
    for name in names:
        path = Path(folder) / name
        if path.is_symlink():
            raise AblateError(record_checks.symlink_message(path))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError as exc:
            raise AblateError(f"cannot read {path}: {exc.strerror or exc}") from None
        if hashes is not None and name in hashes:
            now = None if data is None else record_checks.digest_bytes(data)
            if now != hashes[name]:
                state = "is missing" if data is None else "changed after the trial was registered"
                raise AblateError(f"{path} {state} ({REGISTRY} recorded SHA-256 {hashes[name][:12]}...); only what "
                                  f"was registered is read: restore the file, or run the trial again (delete its "
                                  f"{METRICS}, then 'ablate study --resume')")
        if data is not None:
            files[name] = data
    return files
