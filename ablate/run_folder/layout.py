"""The name of every file and folder of a study run folder and of a trial folder: the one place they are named.

Format 2 is format 1 with `format_version: 2` in manifest.json; ablate reads both alike. Format 3 (this one) differs
in one default: a spec.yaml without `keep_weights` keeps no weights.pt (formats 1 and 2 kept the final stage's), so
a resume of an older folder goes on saving what it saved. A folder whose manifest records a newer format than
FORMAT_VERSION was made by a newer ablate and is refused, naming both.
Imports nothing of ablate, so that every part of ablate can name a run folder's files."""
from __future__ import annotations

from pathlib import Path

FORMAT_VERSION = 3
FORMAT_KEY = "format_version"  # in manifest.json (absent: format 1)
FIRST_FORMAT = 1  # what a run folder whose manifest records no format is

# --- the run folder ----------------------------------------------------------------------------------------------
SPEC = "spec.yaml"  # the study spec as run (budget applied, dataset and threads pinned): written once, at creation
MANIFEST = "manifest.json"  # what launched the run, on what, the spec it started with, format_version
RESUME_MANIFEST_PREFIX = "manifest-resume-"  # manifest-resume-<YYYYmmdd-HHMMSS>.json: one per resume that ran work
RESUME_MANIFEST_SUFFIX = ".json"
REGISTRY = "trials.jsonl"  # the append-only registry: one JSON row per registered result
TRIALS_CSV = "trials.csv"  # the registry as a table, rewritten from it (never read back by ablate)
TRIALS = "trials"  # trials/<trial id>/: one folder per trial
OPTUNA_DB = "optuna.db"  # the Optuna studies of a tuned run (absent with --storage, a grid or fixed configs)
LOCK = ".lock"  # held (flock) by the one study process working on the folder
RAY_TMP = ".ray_tmp"  # the path of Ray's session folder while a study runs (removed when it ends)
TENSORBOARD = "tensorboard"  # with study --tensorboard: event files per registered trial
MODEL_SOURCE = "model_source.py"  # a user model's source file as the run used it (the spec's model; its SHA-256 there)
DATA_SOURCE = "data_source.py"  # a user's data loader's source file as the run used it (base.dataset; its SHA-256 there)
ANALYSIS = "analysis"  # analyze's default output folder (its files are analyze's own products, not this format)

# --- a trial folder: trials/<trial id>/ ----------------------------------------------------------------------------
CONFIG = "config.yaml"  # the trial's config (its hash is the trial id), runnable with `train --config`
METRICS = "metrics.json"  # the trial's result; its presence marks the trial finished (ok, diverged, stopped, error)
CURVES = "curves.csv"  # per step: train loss; per evaluation: dev loss and accuracy
CURVES_PLOT = "curves.png"  # `train` only: the curves drawn
GRAD_NORMS = "grad_norms.csv"  # per evaluation and layer: gradient and weight norms, block output std (telemetry)
PREDICTIONS = "predictions.csv"  # per test image: label, the scored checkpoint's and the final one's prediction
WEIGHTS = "weights.pt"  # the best-dev state_dict (final-stage trials by default; keep_weights)
CHECKPOINT = "resume.pt"  # a paused trial's checkpoint (successive halving): what its continuation needs
PAUSED = "paused.json"  # written after resume.pt: its presence says the checkpoint is complete
HEARTBEAT = "heartbeat.json"  # while an attempt runs: where it is (phase, step, ticks); gone when it ends
FAILURE = "failure.json"  # one record per failed attempt (kind, type, message, where); cleared on success
ERROR_TEXT = "error.txt"  # the traceback of the last failed attempt (also a `train` folder's crash traceback)
CANCEL = "cancel"  # the study asks a running attempt to stop: a seed run ahead that the seed rule did not ask for


def trials_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / TRIALS


def trial_dir(run_dir: str | Path, trial_id: str) -> Path:
    """run_dir/trials/<trial id> (the id is checked where it is read: record_checks.field_problem)."""
    return Path(run_dir) / TRIALS / str(trial_id)


def resume_manifest_name(stamp: str) -> str:
    return f"{RESUME_MANIFEST_PREFIX}{stamp}{RESUME_MANIFEST_SUFFIX}"


def resume_manifests(run_dir: str | Path) -> list[Path]:
    """The run's resume manifests, oldest first (their names sort by time)."""
    return sorted(Path(run_dir).glob(f"{RESUME_MANIFEST_PREFIX}*{RESUME_MANIFEST_SUFFIX}"))


def is_run_folder(path: str | Path) -> bool:
    """A study run folder holds its spec from the moment it exists (run_files.create_run_dir)."""
    return (Path(path) / SPEC).is_file()
