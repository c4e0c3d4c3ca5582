"""Reading a study run folder into tables: trials, the rows to report, curves, gradient norms.

Everything comes from the registry (trials.jsonl) and the trial folders; trials.csv is never
read because the registry is the record the engine appends to and trials.csv is derived from it.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablate.errors import AblateError
from ablate.engine.selection import best_params
from ablate.engine.manifest import check_spec
from ablate.engine.record_checks import HASH_KEY
from ablate.engine.run_folder import RecordCheck, check_run_records, open_run_dir, read_registry_lines
from ablate.engine.seed_decisions import RuleState, rule_state
from ablate.spec.trial_config import TrialConfig
from ablate.spec.study_spec import Study, parse_study
from ablate.spec.reading import read_yaml

TIMESTAMP = re.compile(r"^(\d{8}-\d{6})")
# Registry columns read as numbers; older run folders lack some of them (they read as NaN: "n/a").
NUMERIC = ("best_dev_acc", "best_step", "test_acc", "test_loss", "final_test_acc", "final_test_loss",
           "scored_train_acc", "scored_train_loss", "final_train_loss", "steps")


@dataclass
class Run:
    """A study run folder, parsed. `reported` holds the final-stage rows behind the headline numbers."""

    run_dir: Path
    study: Study
    trials: pd.DataFrame            # every registry row, params and arm settings as columns
    final_stage: str
    reported: pd.DataFrame          # final-stage rows of each arm's reported configuration
    selected: dict[str, dict[str, Any]]   # per arm: tuned params (tune) or chosen grid point (grid)
    completeness: pd.DataFrame      # per stage and arm: finished vs planned
    manifest: dict[str, Any] = field(default_factory=dict)
    resumes: list[dict[str, Any]] = field(default_factory=list)   # manifest-resume-*.json, oldest first
    # The final stage's seeds: the spec's list, or with an adaptive seed rule (`seeds: {min, max, half_width}`)
    # the ones the rule has decided from the registered results (ablate.engine.planner.decided_seeds), and whether it is done.
    seeds: list[int] = field(default_factory=list)
    seeds_final: bool = True
    # What could not be checked of what was read (one line each): a spec or trial files recorded without hashes.
    integrity_notes: list[str] = field(default_factory=list)
    # (stage, trial id) -> the SHA-256 of each file its registry row bound it to (none for an older row)
    file_hashes: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    rule: RuleState | None = None  # what the adaptive rule saw and asked for (ablate.engine.seed_decisions)

    @property
    def arm_names(self) -> list[str]:
        return [a.name for a in self.study.arms]

    @property
    def param_names(self) -> list[str]:
        """Parameters chosen per arm (tuned or grid); a column of the summary."""
        return [p.name for p in self.study.space] + list(self.study.grid)

    @property
    def ok(self) -> pd.DataFrame:
        """Reported rows that finished normally and were scored on the test set."""
        r = self.reported
        return r[(r["status"] == "ok") & r["test_acc"].notna()]

    def missing_lines(self) -> list[str]:
        c = self.completeness
        return [f"{row.stage} stage, arm {row.arm}: {row.finished} of {row.planned} planned trials finished"
                for row in c.itertuples() if row.finished < row.planned]

    def is_depth_study(self) -> bool:
        return "depth" in self.study.factor_names

    @property
    def datasets(self) -> dict[str, int]:
        """Dataset actually used -> number of trials (any stage) that recorded it."""
        col = self.trials["dataset"].dropna() if "dataset" in self.trials else pd.Series(dtype=object)
        return {str(k): int(v) for k, v in col.value_counts().items()}

    @property
    def dataset(self) -> str:
        """The dataset the trials used; the manifest's (then the spec's) when no trial recorded one;
        several names joined by ' + ' when trials disagree (see `datasets`)."""
        used = self.datasets
        if used:
            return " + ".join(sorted(used))
        return str(self.manifest.get("dataset") or self.study.base.get("dataset", "unknown"))

    def config_value(self, key: str) -> Any:
        """A trial setting shared by every arm (the spec's base unless an arm overrides it); None when arms differ."""
        values = {repr(arm_value(self, a, key)) for a in self.arm_names}
        return arm_value(self, self.arm_names[0], key) if len(values) == 1 else None


def load_run(run_dir: Path) -> Run:
    """Parse a run folder; AblateError when it is not one or has no finished final-stage trial."""
    run_dir = open_run_dir(Path(run_dir))
    manifest = _read_json(run_dir / "manifest.json") or {}
    notes = [note for note in [check_spec(run_dir, manifest, "the analysis describes")] if note]
    study = parse_study(read_yaml(run_dir / "spec.yaml"), source=str(run_dir / "spec.yaml"))
    # Every value read back is checked (read_registry_lines), and every registered trial's files against the
    # hashes its row recorded (check_run_records): a damaged or changed record is refused, never a number here.
    lines = read_registry_lines(run_dir)
    _check_rows_belong(study, run_dir, lines)
    records = check_run_records(run_dir, lines)
    notes += [note for note in [records.note()] if note]
    rows = [row for _, row in lines]
    trials = _trials_frame(study, rows)
    final = study.stages[-1]
    rule = rule_state(study, rows)
    seeds, seeds_final = rule.seeds, rule.final
    selected = _selected_params(study, trials, final, rows)
    reported = _reported_rows(study, trials, final, selected)
    if reported.empty or not ((reported["status"] == "ok") & reported["test_acc"].notna()).any():
        raise AblateError(f"{run_dir} has no finished {final}-stage trials yet; let the study run "
                          f"(or 'ablate study --resume {run_dir}') before analysing it")
    resumes = []
    for path in sorted(run_dir.glob("manifest-resume-*.json")):
        data = _read_json(path)
        if data is not None:
            resumes.append({"file": path.name, **data})
    return Run(run_dir, study, trials, final, reported, selected, _completeness(study, trials, seeds), manifest, resumes,
               seeds, seeds_final, notes, {(r["stage"], r["trial_id"]): r[HASH_KEY] for r in rows if HASH_KEY in r},
               rule)


def integrity_notes(run_dir: Path) -> list[str]:
    """What load_run could not check in a run folder, one line each (no file is hashed here): the spec, when the
    manifest recorded none, and the trials registered without hashes."""
    run_dir = Path(run_dir)
    manifest = _read_json(run_dir / "manifest.json") or {}
    notes = [check_spec(run_dir, manifest, "the analysis describes")]
    unhashed = sum(HASH_KEY not in row for _, row in read_registry_lines(run_dir))
    if unhashed:
        notes.append(RecordCheck(unchecked=unhashed).note())
    return [note for note in notes if note]


def _check_rows_belong(study: Study, run_dir: Path, lines: list[tuple[int, dict[str, Any]]]) -> None:
    """Each registry row is of an arm and a stage of the run's spec (a row of another is an edited registry)."""
    arms, stages = {a.name for a in study.arms}, set(study.stages)
    for line, row in lines:
        for key, allowed in (("arm", arms), ("stage", stages)):
            if row[key] not in allowed:
                raise AblateError(f"{run_dir / 'trials.jsonl'} line {line}: {key} is {row[key]!r}, not one of this "
                                  f"run's {key}s ({', '.join(sorted(allowed))}); the registry was edited or damaged: "
                                  "restore it from a backup, or delete that line")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _trials_frame(study: Study, rows: list[dict[str, Any]]) -> pd.DataFrame:
    settings = {a.name: a.settings for a in study.arms}
    varied = study.varied()
    records = []
    for row in rows:
        values = {**study.base, **settings.get(row["arm"], {}), **(row.get("params") or {})}
        rec = {k: v for k, v in row.items() if k not in ("params", HASH_KEY)}
        rec.update({k: values.get(k) for k in varied})
        records.append(rec)
    columns = ["trial_id", "stage", "arm", *varied, "seed", "status", "dataset", *NUMERIC]
    df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=columns)
    for col in columns:
        if col not in df:
            df[col] = np.nan
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["total_steps"] = [_planned_steps(study, settings, row) for row in records] if records else []
    # Arms keep the spec's order everywhere (tables, legends, colours), not alphabetical order.
    df["arm"] = pd.Categorical(df["arm"], categories=[a.name for a in study.arms])
    return df


def _planned_steps(study: Study, settings: dict[str, dict], row: dict[str, Any]) -> float:
    """SGD steps the trial was configured to run (NaN when its config cannot be rebuilt)."""
    try:
        return float(TrialConfig.from_dict({**study.base, **settings.get(row["arm"], {}), **(row.get("params") or {})},
                                           source="registry row").total_steps())
    except AblateError:
        return math.nan


def completed(trials: pd.DataFrame) -> pd.Series:
    """Trials that trained to their last step: ok, or marked stopped although they reached it."""
    reached = trials["steps"].notna() & trials["total_steps"].notna() & (trials["steps"] >= trials["total_steps"])
    return (trials["status"] == "ok") | ((trials["status"] == "stopped") & reached)


def _selected_params(study: Study, trials: pd.DataFrame, final: str,
                     rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    if study.space:
        # A search repeated under several sampler seeds (`repeat` in the tuning rows) confirmed every repeat's
        # choice; the headline numbers are those of the first search (repeat 0), the others are in the report's
        # tuning-luck paragraph.
        tune = [r for r in rows if r.get("stage") == "tune"]
        repeated = len({int(r.get("repeat") or 0) for r in tune}) > 1
        out = best_params(study, [r for r in tune if not int(r.get("repeat") or 0)] if repeated else rows)
        # Otherwise the confirm rows carry the params actually run; prefer them over a re-derivation.
        conf = trials[trials["stage"] == final]
        for arm, group in conf.groupby("arm", observed=True):
            ran = {p.name: group.iloc[0][p.name] for p in study.space}
            if not repeated or str(arm) not in out:
                out[str(arm)] = ran
        return out
    if study.grid:
        # Each arm is reported at its best grid point by mean dev accuracy over seeds: choosing by
        # test accuracy would bias the reported test numbers upwards.
        keys = list(study.grid)
        grid = trials[(trials["stage"] == final) & (trials["status"] == "ok")]
        out = {}
        for arm, group in grid.groupby("arm", observed=True):
            means = group.groupby(keys, dropna=False)["best_dev_acc"].mean()
            best = means.idxmax()
            best = best if isinstance(best, tuple) else (best,)
            out[str(arm)] = dict(zip(keys, best))
        return out
    return {}


def _reported_rows(study: Study, trials: pd.DataFrame, final: str, selected: dict) -> pd.DataFrame:
    """The final-stage rows of each arm's reported configuration (a grid point, or with a repeated search the
    first repeat's choice; a single search confirmed one configuration per arm)."""
    rows = trials[trials["stage"] == final]
    names = [p.name for p in study.space if p.name in rows]
    several = bool(names) and (rows.groupby("arm", observed=True)[names].nunique(dropna=False) > 1).any(axis=None)
    if not study.grid and not several:
        return rows.copy()
    keep = np.zeros(len(rows), dtype=bool)
    for arm, point in selected.items():
        mask = (rows["arm"] == arm).to_numpy().copy()
        for key, value in point.items():
            mask &= (rows[key] == value).to_numpy()
        keep |= mask
    return rows[keep].copy()


def _completeness(study: Study, trials: pd.DataFrame, seeds: list[int]) -> pd.DataFrame:
    """Per stage and arm: planned vs finished trials. The final stage plans the seeds decided so far (all of the
    spec's, or an adaptive rule's), not the rule's candidates up to its maximum."""
    planned = {"tune": study.trials_per_arm, "confirm": len(seeds), "grid": len(study.grid_points()) * len(seeds)}
    out = []
    for stage in study.stages:
        for arm in study.arms:
            sel = trials[(trials["stage"] == stage) & (trials["arm"] == arm.name)]
            out.append({"stage": stage, "arm": arm.name, "planned": planned[stage], "finished": len(sel),
                        "ok": int((sel["status"] == "ok").sum()),
                        "diverged": int((sel["status"] == "diverged").sum()),
                        "stopped": int((sel["status"] == "stopped").sum()),
                        "error": int((sel["status"] == "error").sum())})
    return pd.DataFrame(out)


def load_curves(run: Run) -> pd.DataFrame:
    """curves.csv of every reported ok trial, with arm and seed columns; empty frame when none."""
    frames = []
    for row in run.ok.itertuples():
        path = run.run_dir / "trials" / row.trial_id / "curves.csv"
        try:
            df = pd.read_csv(path)
        except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        frames.append(df.assign(arm=row.arm, seed=row.seed, trial_id=row.trial_id))
    if not frames:
        return pd.DataFrame(columns=["step", "train_loss", "dev_loss", "dev_acc", "arm", "seed", "trial_id"])
    out = pd.concat(frames, ignore_index=True)
    out["arm"] = pd.Categorical(out["arm"], categories=run.arm_names)
    return out


def load_grad_norms(run: Run) -> pd.DataFrame | None:
    """grad_norms.csv of every reported ok trial that has one, or None when no trial has one."""
    frames = []
    for row in run.ok.itertuples():
        path = run.run_dir / "trials" / row.trial_id / "grad_norms.csv"
        if not path.is_file():
            continue
        try:
            df = pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        if not {"step", "layer_index", "kind", "grad_norm"} <= set(df.columns) or df.empty:
            continue
        frames.append(df.assign(arm=row.arm, seed=row.seed, trial_id=row.trial_id))
    if not frames:
        return None
    out = pd.concat(frames, ignore_index=True)
    out["grad_norm"] = pd.to_numeric(out["grad_norm"], errors="coerce")
    out["arm"] = pd.Categorical(out["arm"], categories=run.arm_names)
    # A projection shortcut shares its block's layer index; the profiles follow the main path only,
    # so one value per (trial, step, index) is left: the first, which is the main-path conv.
    if "layer" in out:
        out = out[~((out["kind"] == "layer") & out["layer"].astype(str).str.contains("shortcut"))]
    return out.drop_duplicates(subset=["trial_id", "step", "kind", "layer_index"], keep="first").reset_index(drop=True)


def load_predictions(run: Run) -> pd.DataFrame | None:
    """predictions.csv of every reported ok trial that has one, with arm, seed and `images`: a key
    naming the test subset it was scored on (dataset, data seed, test size, image size), so two
    trials with equal keys saw the same images in the same order. None when no trial has one."""
    frames = []
    for row in run.ok.itertuples():
        folder = run.run_dir / "trials" / row.trial_id
        path = folder / "predictions.csv"
        if not path.is_file():
            continue
        try:
            df = pd.read_csv(path)
            cfg = TrialConfig.from_yaml_file(folder / "config.yaml")
        except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError, AblateError):
            continue
        if not {"index", "label", "pred", "pred_final"} <= set(df.columns) or df.empty:
            continue
        dataset = row.dataset if isinstance(row.dataset, str) else cfg.dataset
        key = f"{dataset}/data_seed={cfg.data_seed}/test_size={cfg.test_size}/image_size={cfg.image_size}"
        frames.append(df.assign(arm=row.arm, seed=row.seed, trial_id=row.trial_id, images=key))
    if not frames:
        return None
    out = pd.concat(frames, ignore_index=True)
    out["arm"] = pd.Categorical(out["arm"], categories=run.arm_names)
    return out


def arm_value(run: Run, arm: str, key: str) -> Any:
    """A setting's value in an arm: the arm's own setting, else the spec's base, else the trial default."""
    settings = next(a.settings for a in run.study.arms if a.name == arm)
    return settings.get(key, run.study.base.get(key, getattr(TrialConfig, key, None)))


def series_of(run: Run, arm: str) -> str:
    """An arm's line in a depth plot: its settings other than depth, 'plain'/'residual' when that is all."""
    settings = {k: v for k, v in next(a.settings for a in run.study.arms if a.name == arm).items() if k != "depth"}
    if set(settings) <= {"residual"}:
        return "residual" if arm_value(run, arm, "residual") else "plain"
    return ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in settings.items())


def latest_run(runs_root: Path = Path("runs")) -> Path:
    """The newest study run folder under runs_root (runs/<study>/<time>/), by its name's timestamp, else mtime."""
    runs = study_runs(runs_root)
    if not runs:
        raise AblateError(f"no study run folders under {Path(runs_root)}/; run 'ablate study NAME' first or pass RUN_DIR")
    return runs[0]


def study_runs(runs_root: Path) -> list[Path]:
    """The study run folders under runs_root (runs/<study>/<time>/ or <time>/), newest first."""
    runs_root = Path(runs_root)
    candidates = [p.parent for pattern in ("*/spec.yaml", "*/*/spec.yaml") for p in runs_root.glob(pattern)]

    def when(path: Path) -> float:
        m = TIMESTAMP.match(path.name)
        if m:
            try:
                return time.mktime(time.strptime(m.group(1), "%Y%m%d-%H%M%S"))
            except ValueError:
                pass
        return path.stat().st_mtime

    return sorted(candidates, key=lambda p: (when(p), p.stat().st_mtime), reverse=True)
