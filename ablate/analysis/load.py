"""Reading a study run folder into tables: trials, the rows to report, curves, gradient norms.

Everything comes from the registry (trials.jsonl) and the trial folders, through the run folder's readers
(ablate.run_folder); trials.csv is never read because the registry is the record the engine appends to and
trials.csv is derived from it. Each trial's settings are those its config.yaml recorded (checked against its
registry row's hash); a trial whose folder holds none (an error, an older run) takes the spec's.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablate.errors import AblateError
from ablate.engine import RuleState, best_params, check_spec, rule_state
from ablate.run_folder import (HASH_KEY, REGISTRY, RecordCheck, SPEC, check_run_records, open_run_dir, read_curves,
    read_grad_norms, read_manifest, read_predictions, read_registry_lines, read_resume_manifests, read_spec,
    recorded_configs, table_records, trial_dir)
from ablate.spec import Study, TrialConfig

TIMESTAMP = re.compile(r"^(\d{8}-\d{6})")
GRAD_NORMS_READ = ("step", "layer_index", "kind", "grad_norm")  # the columns of grad_norms.csv the profiles need
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
    # trial id -> the config its config.yaml recorded (ablate.run_folder.integrity.recorded_configs)
    configs: dict[str, TrialConfig] = field(default_factory=dict)

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

    def reported_config(self, arm: str) -> TrialConfig:
        """The config an arm's reported trials ran with: the first one's recorded config.yaml (they differ in the
        seed alone), else the spec's arm at its selected point."""
        for trial_id in self.reported.loc[self.reported["arm"] == arm, "trial_id"]:
            if trial_id in self.configs:
                return self.configs[trial_id]
        spec_arm = next(a for a in self.study.arms if a.name == arm)
        return self.study.arm_config(spec_arm, **self.selected.get(arm, {}))


def load_run(run_dir: Path) -> Run:
    """Parse a run folder; AblateError when it is not one or has no finished final-stage trial."""
    run_dir = open_run_dir(Path(run_dir))  # of a format this ablate reads
    manifest = read_manifest(run_dir)
    notes = [note for note in [check_spec(run_dir, manifest, "the analysis describes")] if note]
    study = read_spec(run_dir)
    # Every value read back is checked (read_registry_lines), and every registered trial's files against the
    # hashes its row recorded (check_run_records): a damaged or changed record is refused, never a number here.
    lines = read_registry_lines(run_dir)
    _check_rows_belong(study, run_dir, lines)
    records = check_run_records(run_dir, lines)
    notes += [note for note in [records.note()] if note]
    rows = [row for _, row in lines]
    configs = recorded_configs(run_dir, rows)
    trials = _trials_frame(study, rows, configs)
    final = study.stages[-1]
    rule = rule_state(study, rows)
    seeds, seeds_final = rule.seeds, rule.final
    selected = _selected_params(study, trials, final, rows)
    reported = _reported_rows(study, trials, final, selected)
    if reported.empty or not ((reported["status"] == "ok") & reported["test_acc"].notna()).any():
        raise AblateError(f"{run_dir} has no finished {final}-stage trials yet; let the study run "
                          f"(or 'ablate study --resume {run_dir}') before analysing it")
    return Run(run_dir, study, trials, final, reported, selected, _completeness(study, trials, seeds), manifest,
               read_resume_manifests(run_dir), seeds, seeds_final, notes,
               {(r["stage"], r["trial_id"]): r[HASH_KEY] for r in rows if HASH_KEY in r}, rule, configs)


def integrity_notes(run_dir: Path) -> list[str]:
    """What load_run could not check in a run folder, one line each (no file is hashed here): the spec, when the
    manifest recorded none, and the trials registered without hashes."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
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
                raise AblateError(f"{run_dir / REGISTRY} line {line}: {key} is {row[key]!r}, not one of this "
                                  f"run's {key}s ({', '.join(sorted(allowed))}); the registry was edited or damaged: "
                                  "restore it from a backup, or delete that line")


def _trials_frame(study: Study, rows: list[dict[str, Any]], configs: dict[str, TrialConfig]) -> pd.DataFrame:
    """The per-trial table (ablate.run_folder.trial_table.table_records, which trials.csv is written from too) as
    a DataFrame: every registry field but params and hashes, each varied setting as the trial's recorded config
    holds it (the spec's where it recorded none), and the steps it was configured to run."""
    varied = study.varied()
    records = []
    steps = []
    for record in table_records(study, rows, {i: _settings(c) for i, c in configs.items()}):
        records.append({**record.fields(), **{k: record.settings.get(k) for k in varied}})
        config = configs.get(record.row["trial_id"])
        steps.append(float(config.total_steps()) if config is not None else _planned_steps(record.settings))
    columns = ["trial_id", "stage", "arm", *varied, "seed", "status", "dataset", *NUMERIC]
    df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=columns)
    for col in columns:
        if col not in df:
            df[col] = np.nan
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["total_steps"] = steps
    # Arms keep the spec's order everywhere (tables, legends, colours), not alphabetical order.
    df["arm"] = pd.Categorical(df["arm"], categories=[a.name for a in study.arms])
    return df


def _settings(config: TrialConfig) -> dict[str, Any]:
    """A recorded config's settings as its config.yaml writes them (lists, not tuples), a user model's axes beside
    ablate's own settings (TrialConfig.settings)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.settings().items()}


def _planned_steps(settings: dict[str, Any]) -> float:
    """SGD steps a trial of these settings is configured to run (NaN when they make no config)."""
    try:
        return float(TrialConfig.from_dict(settings, source="registry row").total_steps())
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
        try:
            curves = read_curves(trial_dir(run.run_dir, row.trial_id))
        except AblateError:
            continue
        if curves is None:
            continue
        df = pd.DataFrame(curves.columns()).astype({"train_loss": float, "dev_loss": float, "dev_acc": float})
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
        try:
            df = read_grad_norms(trial_dir(run.run_dir, row.trial_id), GRAD_NORMS_READ)
        except AblateError:
            continue
        if df is None or df.empty:
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
        cfg = run.configs.get(row.trial_id)  # the config it recorded: the test subset it was scored on
        if cfg is None:
            continue
        try:
            df = read_predictions(trial_dir(run.run_dir, row.trial_id))
        except AblateError:
            continue
        if df is None or df.empty:
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
    """A setting's value in an arm as the spec declares it (Study.trial_settings: the arm's own setting, else the spec's
    base), else the trial default."""
    settings = run.study.trial_settings(next(a for a in run.study.arms if a.name == arm))
    return settings.get(key, getattr(TrialConfig, key, None))


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
    candidates = [p.parent for pattern in (f"*/{SPEC}", f"*/*/{SPEC}") for p in runs_root.glob(pattern)]

    def when(path: Path) -> float:
        m = TIMESTAMP.match(path.name)
        if m:
            try:
                return time.mktime(time.strptime(m.group(1), "%Y%m%d-%H%M%S"))
            except ValueError:
                pass
        return path.stat().st_mtime

    return sorted(candidates, key=lambda p: (when(p), p.stat().st_mtime), reverse=True)
