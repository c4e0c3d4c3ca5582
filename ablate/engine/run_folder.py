"""Run folders: the append-only trial registry, trials.csv, the manifest, and what is still to run."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.atomic_files import atomic_write_text
from ablate.slug import child
from ablate.engine import record_checks
from ablate.engine.trial_plan import TrialPlan
from ablate.spec.study_spec import Study


REGISTRY = "trials.jsonl"
# What trials.csv shows of each trial: results only, so that two runs of one spec give identical files
# (where, when and how fast a trial ran stay in trials.jsonl and the trial's metrics.json). fused_with names the
# trials a fused trial trained with (space-separated ids; blank: it trained alone): fusing changes a trial's
# numbers slightly, so a fused row must never look like the same trial run alone.
RESULT_COLUMNS = ["status", "best_dev_acc", "best_step", "steps", "test_acc", "test_loss", "final_test_acc",
                  "final_test_loss", "scored_train_acc", "scored_train_loss", "final_train_loss", "dataset", "error",
                  "fused_with"]
CSV_METRICS = ["status", "best_dev_acc", "best_step", "test_acc", "test_loss", "final_test_acc", "final_test_loss", "num_classes",
               "scored_train_acc", "scored_train_loss", "final_train_loss", "train_seconds", "total_seconds", "steps", "dataset", "device", "node", "pid", "started_at",
               "ended_at", "error", "fused_with"]


def registry_key(row: dict[str, Any]) -> tuple:
    """What a registry row is about: one tuning seed of a proposed point (arm, repeat of the search, round, index,
    seed: two proposals may share a trial), else a trial of its stage."""
    if row.get("round") is not None:
        return (row["stage"], row["arm"], row.get("repeat") or 0, row["round"], row["index"], row.get("seed"))
    return (row["stage"], row["trial_id"])


ROW_START = '{"trial_id": '  # how every registry row begins (registry_row puts the trial id first)
REQUIRED = ("trial_id", "stage", "arm")


def _registry_hint(run_dir: Path) -> str:
    return (f"; the registry was edited or damaged: restore it from a backup, or delete that line and run "
            f"'ablate study --resume {run_dir}' to register the trial again from its folder")


def read_registry_lines(run_dir: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of each registry row that counts: the last row per key wins. A line cut short by a
    crash (the start of a row that never ended) is ignored; anything else that is not a row, and a row with a value
    that none of its fields can hold (ablate.engine.record_checks: an accuracy of 1.7, NaN, a string where a number
    belongs), means the file was damaged, and is refused in one line naming the line, the field and the value."""
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
    hint = _registry_hint(run_dir)
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
    folder = Path(run_dir) / "trials" / str(row.get("trial_id"))
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


def registry_row(trial: TrialPlan, metrics: dict[str, Any], repeats: bool = False) -> dict[str, Any]:
    """A trial's registry row: what it is (stage, arm, params, seed; a tuning trial's round and index, and its
    repeat of the search when the search repeats) and its results."""
    row = {"trial_id": trial.trial_id, "stage": trial.stage, "arm": trial.arm, "params": trial.params,
           "seed": trial.config.seed}
    if trial.round is not None:
        row.update({"round": trial.round, "index": trial.index})
    if repeats and trial.stage == "tune":
        row["repeat"] = trial.repeat
    for key in CSV_METRICS:
        value = metrics.get(key)
        row[key] = None if isinstance(value, float) and not math.isfinite(value) else value
    return row


def trials_csv(study: Study, rows: list[dict[str, Any]]) -> str:
    """One row per registry row, in an order that does not depend on when trials finished."""
    arm_settings = {a.name: a.settings for a in study.arms}
    arm_order = {a.name: i for i, a in enumerate(study.arms)}
    varied = study.varied()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    repeat = ["repeat"] if study.repeats > 1 else []  # the search's repeat, where it is repeated
    writer.writerow(["trial_id", "stage", "arm", *repeat, "round", "index", *varied, "seed", *RESULT_COLUMNS])
    order = {s: i for i, s in enumerate(["tune", "grid", "confirm"])}
    key = lambda r: (order.get(r["stage"], 9), arm_order.get(r["arm"], 99), str(r["arm"]), r.get("repeat") or 0,  # noqa: E731
                     r.get("round") or 0, r.get("index") or 0, r.get("seed") or 0, r["trial_id"])
    for row in sorted(rows, key=key):
        values = {**study.base, **arm_settings.get(row["arm"], {}), **row.get("params", {})}
        writer.writerow([row["trial_id"], row["stage"], row["arm"], *([_blank(row.get("repeat"))] if repeat else []),
                         _blank(row.get("round")), _blank(row.get("index")), *(values.get(k, "") for k in varied),
                         row.get("seed"), *(_blank(row.get(k)) for k in RESULT_COLUMNS)])
    return buf.getvalue()


def _blank(value: Any) -> Any:
    if isinstance(value, list):  # fused_with
        return " ".join(map(str, value))
    return "" if value is None else value


def create_run_dir(study: Study, out: Path | None, files: dict[str, str]) -> Path:
    """Make the run folder with its first files in one step: it either does not exist or holds spec.yaml, and
    trials.csv (its header: no trial has run), so that trials.csv is there at every moment the folder is."""
    files = {**files, "trials.csv": files.get("trials.csv", trials_csv(study, []))}
    run_dir = out or child(Path("runs"), study.name) / time.strftime("%Y%m%d-%H%M%S")  # the name is spec text
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if (run_dir / "spec.yaml").is_file():
            raise AblateError(f"run folder {run_dir} holds a study run already; use --resume {run_dir} to finish it, "
                              "or another --out")
        raise AblateError(f"{run_dir} exists and is not empty (and is not a study run folder); choose another --out")
    created = [p for p in [*reversed(run_dir.parents)] if not p.exists()]
    staging = None
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
        for name, text in files.items():
            atomic_write_text(staging / name, text)
        os.rename(staging, run_dir)  # replaces an empty folder too
    except OSError as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for parent in reversed(created):
            try:
                parent.rmdir()
            except OSError:
                pass
        raise AblateError(f"cannot create run folder {run_dir}: {exc.strerror or exc}; choose another --out") from None
    return run_dir


def open_run_dir(run_dir: Path) -> Path:
    if not (run_dir / "spec.yaml").is_file():
        raise AblateError(f"{run_dir} is not a study run folder (no spec.yaml); pass a folder made by 'study'")
    return run_dir


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """A trial folder's metrics.json, or None when it is missing, cut short or not a mapping (the trial has not
    finished: it runs again). A folder or file that is a symbolic link, or a value that its field cannot hold
    (record_checks), is refused in one line: never read as a result."""
    folder = Path(folder)
    record_checks.refuse_symlinks(folder, ("metrics.json",))
    try:
        data = json.loads((folder / "metrics.json").read_text(encoding="utf-8"),
                          parse_constant=record_checks.parse_constant)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    record_checks.check_fields(data, str(folder / "metrics.json"),
                               "; the file was edited or damaged: restore it, or delete it and run 'ablate study "
                               "--resume RUN_DIR' to run the trial again")
    return data


def metrics_changed(row: dict[str, Any], folder: Path) -> bool:
    """Whether the trial folder's metrics.json is not the one `row` was registered with (the trial ran again:
    a resume reruns a trial that ended in an error, or whose metrics.json was deleted). False for a row registered
    without hashes."""
    recorded = (row.get(record_checks.HASH_KEY) or {}).get("metrics.json")
    return recorded is not None and record_checks.digest_file(Path(folder) / "metrics.json") != recorded


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
            f"{path.parent / 'metrics.json'} and run 'ablate study --resume {run_dir}' to run the trial again")


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
    folder = run_dir / "trials" / row["trial_id"]
    record_checks.refuse_symlinks(folder, names)
    recorded = row.get(record_checks.HASH_KEY)
    if recorded is None:
        return "unchecked"
    metrics_path = folder / "metrics.json"
    if row.get("status") == "error":
        if resuming and "metrics.json" in recorded:
            now = record_checks.digest_file(metrics_path)
            if now is not None and now != recorded["metrics.json"]:
                metrics = read_metrics(folder) or {}
                if metrics.get("status") != "error":
                    raise AblateError(_changed_message(metrics_path, registry, line, row, recorded["metrics.json"],
                                                       now, run_dir))
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
    if "metrics.json" in recorded and "metrics.json" in names:
        metrics = read_metrics(folder) or {}
        for key in CSV_METRICS:
            then = metrics.get(key)
            then = None if isinstance(then, float) and not math.isfinite(then) else then
            if row.get(key) != then:
                raise AblateError(f"{registry} line {line}: {key} is {record_checks.shown(row.get(key))}, but trial "
                                  f"{row['trial_id']} recorded {record_checks.shown(then)} in {metrics_path}"
                                  f"{_registry_hint(run_dir)}")
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
        trials = run_dir / "trials"
        record_checks.refuse_symlinks(trials, ())
        if trials.is_dir():
            for entry in sorted(os.scandir(trials), key=lambda e: e.name):
                if entry.is_symlink():
                    raise AblateError(record_checks.symlink_message(Path(entry.path)))
                if entry.is_dir():
                    record_checks.refuse_symlinks(Path(entry.path))
    return found


def write_trials_csv(study: Study, run_dir: Path) -> None:
    atomic_write_text(run_dir / "trials.csv", trials_csv(study, read_registry(run_dir)))
