"""The per-trial table: one record per registry row, with the settings its trial ran with. trials.csv is this
table written for people (results only, in an order that does not depend on when trials finished); the analysis
reads the same records (ablate.analysis.load)."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.atomic_files import atomic_write_text
from ablate.run_folder.layout import TRIALS_CSV
from ablate.run_folder.record_checks import HASH_KEY
from ablate.run_folder.registry import read_registry
from ablate.spec import Study

# What trials.csv shows of each trial: results only, so that two runs of one spec give identical files
# (where, when and how fast a trial ran stay in trials.jsonl and the trial's metrics.json). fused_with names the
# trials a fused trial trained with (space-separated ids; blank: it trained alone): fusing changes a trial's
# numbers slightly, so a fused row must never look like the same trial run alone.
RESULT_COLUMNS = ["status", "best_dev_acc", "best_step", "steps", "test_acc", "test_loss", "final_test_acc",
                  "final_test_loss", "scored_train_acc", "scored_train_loss", "final_train_loss", "dataset", "error",
                  "fused_with"]
STAGE_ORDER = {s: i for i, s in enumerate(["tune", "grid", "confirm"])}


@dataclass
class TrialRecord:
    """A registry row and the settings of its trial: `settings` maps trial settings to their values, from the
    trial's recorded config.yaml where the caller read one, else from the spec (Study.trial_settings: the base, the
    arm's settings, the row's search or grid point and seed)."""

    row: dict[str, Any]
    settings: dict[str, Any]

    def fields(self) -> dict[str, Any]:
        """The row's own fields, without the point (`params`, which `settings` holds) and the file hashes."""
        return {k: v for k, v in self.row.items() if k not in ("params", HASH_KEY)}


def table_records(study: Study, rows: list[dict[str, Any]],
                 configs: dict[str, dict[str, Any]] | None = None) -> list[TrialRecord]:
    """One TrialRecord per registry row, in the rows' order. `configs`: trial id -> the settings its config.yaml
    records (ablate.run_folder.integrity.recorded_configs); a row whose trial has none there takes the spec's."""
    arms = {a.name: a for a in study.arms}
    configs = configs or {}
    out = []
    for row in rows:
        recorded = configs.get(row["trial_id"])
        settings = recorded if recorded is not None else \
            study.trial_settings(arms.get(row["arm"]), row.get("params") or {}, row.get("seed"))
        out.append(TrialRecord(row, settings))
    return out


def trials_csv(study: Study, rows: list[dict[str, Any]]) -> str:
    """trials.csv: one row per registry row, in an order that does not depend on when trials finished; the varied
    settings (Study.varied) as the spec gives them for the row (Study.trial_settings; the trial id, which is its
    config's hash, binds the trial's config.yaml to the same values)."""
    arm_order = {a.name: i for i, a in enumerate(study.arms)}
    varied = study.varied()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    repeat = ["repeat"] if study.repeats > 1 else []  # the search's repeat, where it is repeated
    writer.writerow(["trial_id", "stage", "arm", *repeat, "round", "index", *varied, "seed", *RESULT_COLUMNS])
    def key(record: TrialRecord) -> tuple:
        r = record.row
        return (STAGE_ORDER.get(r["stage"], 9), arm_order.get(r["arm"], 99), str(r["arm"]), r.get("repeat") or 0,
                r.get("round") or 0, r.get("index") or 0, r.get("seed") or 0, r["trial_id"])

    for record in sorted(table_records(study, rows), key=key):
        row, values = record.row, record.settings
        writer.writerow([row["trial_id"], row["stage"], row["arm"], *([_blank(row.get("repeat"))] if repeat else []),
                         _blank(row.get("round")), _blank(row.get("index")), *(values.get(k, "") for k in varied),
                         row.get("seed"), *(_blank(row.get(k)) for k in RESULT_COLUMNS)])
    return buf.getvalue()


def _blank(value: Any) -> Any:
    if isinstance(value, list):  # fused_with
        return " ".join(map(str, value))
    return "" if value is None else value


def write_trials_csv(study: Study, run_dir: Path, rows: list[dict[str, Any]] | None = None) -> None:
    """trials.csv from `rows` (the registry's rows that count; read from trials.jsonl when None)."""
    atomic_write_text(Path(run_dir) / TRIALS_CSV, trials_csv(study, read_registry(run_dir) if rows is None else rows))
