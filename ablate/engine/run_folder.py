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
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.atomic_files import atomic_write_text
from ablate.slug import child
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
CSV_METRICS = ["status", "best_dev_acc", "best_step", "test_acc", "test_loss", "final_test_acc", "final_test_loss",
               "scored_train_acc", "scored_train_loss", "final_train_loss", "train_seconds", "total_seconds", "steps", "dataset", "device", "node", "pid", "started_at",
               "ended_at", "error", "fused_with"]


def registry_key(row: dict[str, Any]) -> tuple:
    """What a registry row is about: one tuning seed of a proposed point (arm, repeat of the search, round, index,
    seed: two proposals may share a trial), else a trial of its stage."""
    if row.get("round") is not None:
        return (row["stage"], row["arm"], row.get("repeat") or 0, row["round"], row["index"], row.get("seed"))
    return (row["stage"], row["trial_id"])


ROW_START = '{"trial_id": '  # how every registry row begins (registry_row puts the trial id first)


def read_registry(run_dir: Path) -> list[dict[str, Any]]:
    """Rows appended as trials end; the last row per key wins. A line cut short by a crash (the start of a row
    that never ended) is ignored; anything else that is not a row means the file was damaged, and is refused."""
    path = Path(run_dir) / REGISTRY
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise AblateError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows: dict[tuple, dict] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("ascii"))  # rows are written as ASCII JSON
        except (UnicodeDecodeError, json.JSONDecodeError):
            text = raw.decode("ascii", errors="replace")
            if text.startswith(ROW_START) or ROW_START.startswith(text):
                continue  # cut short by a crash: the trial is registered again from its folder
            row = None
        if not (isinstance(row, dict) and "trial_id" in row and "stage" in row):
            raise AblateError(f"{path} is damaged: line {number} is not a trial record ({_excerpt(raw)}); delete "
                              "that line (or restore the file from a backup): 'ablate study --resume' registers "
                              "again every trial whose folder holds its result")
        rows[registry_key(row)] = row
    return list(rows.values())


def _excerpt(raw: bytes) -> str:
    shown = raw[:24].decode("ascii", errors="replace").encode("unicode_escape").decode("ascii")
    return f"it starts {shown!r}" + (f", {len(raw)} bytes" if len(raw) > 24 else "")


def append_registry(run_dir: Path, row: dict[str, Any]) -> None:
    path = Path(run_dir) / REGISTRY
    line = (json.dumps(row, default=_json_default, allow_nan=False) + "\n").encode("ascii")
    # A whole line with O_APPEND, on a line of its own: a line that a crash cut short (readers skip it) must
    # not swallow the start of this one.
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        while line:  # a short write (a full disk) goes on where it stopped, or raises
            line = line[os.write(fd, line):]
        os.fsync(fd)
    finally:
        os.close(fd)


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
    """A trial folder's metrics.json, or None when it is missing, cut short or not a mapping."""
    try:
        data = json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_trials_csv(study: Study, run_dir: Path) -> None:
    atomic_write_text(run_dir / "trials.csv", trials_csv(study, read_registry(run_dir)))
