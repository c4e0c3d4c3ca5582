"""The summary table for a paper (LaTeX, CSV, Markdown), the terminal table, and the exported trial configs."""
from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pandas as pd

from ablate.errors import AblateError
from ablate.atomic_files import atomic_write_bytes, atomic_write_text
from ablate.run_folder import (CONFIG, CURVES, GRAD_NORMS, METRICS, PREDICTIONS, read_registered, symlink_message,
                               trial_dir)
from ..statistics.compare import compare, supported_best
from ..load import load_predictions, load_run
from ..statistics.summary import summarize
from ..formats import CUT_NOTE
from .tables import any_cut, caption, to_csv, to_latex, to_markdown, to_text

FORMATS = ("latex", "csv", "markdown")


def writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AblateError(f"cannot create output folder {path}: {exc.strerror or exc}; choose another --out") from None
    if not os.access(path, os.W_OK):
        raise AblateError(f"output folder {path} is not writable; choose another --out")
    return path


def export(run_dir: Path, fmt: str) -> str:
    """The summary table as LaTeX, CSV or Markdown text (no figures drawn); each names the dataset used."""
    key = str(fmt).lower()
    if key not in FORMATS:
        raise AblateError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    run = load_run(Path(run_dir))
    summary = summarize(run)
    if key == "csv":
        return to_csv(summary)
    comparisons = compare(run, load_predictions(run))
    best = supported_best(run, comparisons)
    if key == "latex":
        return to_latex(summary, run, comparisons, best)
    cut = f" {CUT_NOTE}" if any_cut(summary) else ""
    return to_markdown(summary, run, best) + "\n" + caption(run, summary, delta=False) + cut + "\n"


def terminal_table(run_dir: Path) -> str:
    """The table `analyze` prints, from the same code: what `study` shows when it ends."""
    run = load_run(Path(run_dir))
    summary = summarize(run)
    best = supported_best(run, compare(run, load_predictions(run)))
    return to_text(summary, run, best)


def arm_slug(arm: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", arm.replace("=", "-").replace(",", "_")).strip("-_") or "arm"


# What an export copies of each final-stage trial: its config and what it recorded (not its weights).
EXPORTED = (CONFIG, METRICS, CURVES, GRAD_NORMS, PREDICTIONS)
INDEX = "index.csv"  # the export's own list of what it holds
INDEX_COLUMNS = ["folder", "arm", "seed", "trial_id", "status", "test_acc", "dataset"]


def check_configs_dest(dest: Path) -> None:
    """`export --configs DEST` writes only into a new or empty folder, or over an earlier export (its index.csv),
    so that no file of the user's is overwritten."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise AblateError(f"{dest} exists and is not a folder; pass a folder for --configs")
    if dest.is_dir() and any(dest.iterdir()):
        try:
            header = (dest / INDEX).read_text(encoding="utf-8").splitlines()[:1]
        except (OSError, UnicodeDecodeError):
            header = []
        if header != [",".join(INDEX_COLUMNS)]:
            raise AblateError(f"{dest} is not empty and holds no earlier export (no index.csv of one); choose an "
                              "empty or new folder for --configs")


def export_configs(run_dir: Path, dest: Path) -> list[Path]:
    """Every final-stage trial as dest/<arm-slug>_seed<seed>_<trial_id>/: its config.yaml (runnable with
    `train --config`) with what it recorded beside it (metrics.json, curves.csv, grad_norms.csv,
    predictions.csv), so `reproduce dest/<folder>` can check it anywhere; dest/index.csv (CSV-quoted: arm names
    hold commas) lists them. `dest` must be new, empty or an earlier export (check_configs_dest).

    What is copied is what was registered: each file's bytes are read once and checked against the hash its
    registry row recorded (a trial registered by an older ablate has none: not checked), and a file that changed
    since is refused, naming it. Nothing is written through a symbolic link: a folder or file in `dest` that is
    one is refused. Every check comes before the first write. Returns the config paths."""
    run = load_run(Path(run_dir))  # every registered trial checked: values, hashes, no symbolic links
    dest = Path(dest)
    check_configs_dest(dest)
    rows = run.trials[run.trials["stage"] == run.final_stage]
    sources = [(r, trial_dir(run.run_dir, r.trial_id)) for r in rows.itertuples()]
    sources = [(r, folder) for r, folder in sources if (folder / CONFIG).is_file()]
    if not sources:
        raise AblateError(f"no {run.final_stage}-stage trial of {run.run_dir} has a {CONFIG} to export")
    plan = []
    for r, folder in sorted(sources, key=lambda x: (str(x[0].arm), x[0].seed, x[0].trial_id)):
        name = f"{arm_slug(str(r.arm))}_seed{r.seed}_{r.trial_id}"
        files = read_registered(folder, EXPORTED, run.file_hashes.get((run.final_stage, r.trial_id)))
        _refuse_links(dest, name)
        plan.append((r, name, files))
    if (dest / INDEX).is_symlink():
        raise AblateError(symlink_message(dest / INDEX))
    writable_dir(dest)
    out, index = [], []
    for r, name, files in plan:
        target = dest / name
        target.mkdir(exist_ok=True)
        for file in EXPORTED:
            if file in files:
                atomic_write_bytes(target / file, files[file])
            else:
                (target / file).unlink(missing_ok=True)  # an earlier export's copy of a file this trial lacks
        out.append(target / CONFIG)
        acc = "" if pd.isna(r.test_acc) else f"{r.test_acc:.6g}"
        index.append([name, str(r.arm), r.seed, r.trial_id, r.status, acc, getattr(r, "dataset", "") or ""])
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    writer.writerows(index)
    atomic_write_text(dest / INDEX, text.getvalue())
    return out


def _refuse_links(dest: Path, name: str) -> None:
    """A trial's folder in an earlier export, or a file in it, that is a symbolic link (or not a folder) is
    refused: an export never writes through one."""
    target = dest / name
    if target.is_symlink():
        raise AblateError(symlink_message(target))
    if target.exists() and not target.is_dir():
        raise AblateError(f"{target} exists and is not a folder; remove it or choose another --configs folder")
    for file in EXPORTED:
        if (target / file).is_symlink():
            raise AblateError(symlink_message(target / file))
