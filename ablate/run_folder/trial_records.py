"""What a trial leaves in its folder (trials/<trial id>/, or a `train --out` folder): the one writer and the one
reader of each of its records. Writes are atomic (ablate.atomic_files): a crash leaves the old file or the new one.

- config.yaml: the trial's TrialConfig as YAML (its hash is the trial id), written when the trial starts.
- metrics.json: the trial's result (status, scores, where and when it ran), written last: its presence marks the
  trial finished. JSON without NaN (a non-finite number is null).
- curves.csv: step,train_loss,dev_loss,dev_acc; a row per training step (1..steps), dev columns blank but at the
  evaluation steps; floats as Python's repr, so they read back bit for bit.
- grad_norms.csv: GRAD_NORM_COLUMNS, a row per recorded step (0 and every evaluation) and layer or block.
- predictions.csv: index,label,pred,pred_final: per test image, the scored (best-dev) and the final checkpoint's
  prediction.
- weights.pt: the best-dev state_dict (torch.save; read with weights_only).
- curves.png: `train` only, the curves drawn.

Knows nothing of torch, Ray or pandas until a weights file or a table is read.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.atomic_files import atomic_write_bytes, atomic_write_text
from ablate.errors import AblateError
from ablate.run_folder import record_checks
from ablate.run_folder.layout import CONFIG, CURVES, CURVES_PLOT, GRAD_NORMS, METRICS, PREDICTIONS, WEIGHTS
from ablate.spec import MAX_SPEC_BYTES, TrialConfig

if TYPE_CHECKING:
    import pandas as pd

CURVE_COLUMNS = ("step", "train_loss", "dev_loss", "dev_acc")
GRAD_NORM_COLUMNS = ("step", "layer", "layer_index", "block", "kind", "grad_norm", "weight_norm", "output_std")
PREDICTION_COLUMNS = ("index", "label", "pred", "pred_final")


def json_safe(value: Any) -> Any:
    """JSON has no NaN: a non-finite float is written as null, which keeps the files readable by any tool."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- config.yaml ---------------------------------------------------------------------------------------------------
def write_config(folder: str | os.PathLike, config: TrialConfig) -> Path:
    """config.yaml; a file that holds this config already is left as it is (a trial's folder gets its config when
    the trial starts, and the finished trial's writer names it again)."""
    path = Path(folder) / CONFIG
    text = config.to_yaml()
    try:
        if not path.is_symlink() and path.read_text(encoding="utf-8") == text:
            return path
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)
    return path


def read_config(folder: str | os.PathLike, sha256: str | None = None) -> TrialConfig:
    """A trial folder's config.yaml as a TrialConfig (read_config_file)."""
    path = Path(folder) / CONFIG
    if not path.is_file() and not path.is_symlink():
        raise AblateError(f"no {CONFIG} in {Path(folder)}; pass a trial folder (run_dir/trials/<trial_id>)")
    return read_config_file(path, sha256)


def read_config_file(path: str | os.PathLike, sha256: str | None = None) -> TrialConfig:
    """A trial's config file as a TrialConfig; with `sha256` (what its registry row recorded), its bytes must hash
    to it. AblateError, naming the file, when it cannot be read, is a symbolic link, changed or not a config."""
    import yaml

    from ablate.spec import load_yaml

    path = Path(path)
    if path.is_symlink():
        raise AblateError(record_checks.symlink_message(path))
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise AblateError(f"cannot read config {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise AblateError(f"{path}: larger than {MAX_SPEC_BYTES:,} bytes; a config is a few hundred bytes")
    if sha256 is not None and record_checks.digest_bytes(data) != sha256:
        raise AblateError(f"{path} changed after its trial was registered (the registry recorded SHA-256 "
                          f"{sha256[:12]}...); nothing is read from a changed record: restore the file")
    try:
        doc = load_yaml(data.decode("utf-8"), str(path))
    except UnicodeDecodeError:
        raise AblateError(f"config {path} is not UTF-8 text; pass a YAML file such as a trial's config.yaml") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise AblateError(f"malformed YAML in {path}{where}: {getattr(exc, 'problem', exc)}") from None
    return TrialConfig.from_dict(doc, source=str(path))


# --- metrics.json --------------------------------------------------------------------------------------------------
def write_metrics(folder: str | os.PathLike, metrics: dict[str, Any]) -> Path:
    """metrics.json: the trial's result (a finished trial, one that halving stopped, or one whose failure is a
    result). Written last of a trial's records: its presence says the trial is final."""
    path = Path(folder) / METRICS
    atomic_write_text(path, json.dumps({k: json_safe(v) for k, v in metrics.items()}, indent=2) + "\n")
    return path


def remove_metrics(folder: str | os.PathLike) -> None:
    """The trial is not final (a paused segment of a trial whose earlier attempt recorded an error)."""
    (Path(folder) / METRICS).unlink(missing_ok=True)


def has_metrics(folder: str | os.PathLike) -> bool:
    return (Path(folder) / METRICS).is_file()


def read_metrics(folder: str | os.PathLike) -> dict[str, Any] | None:
    """A trial folder's metrics.json, or None when it is missing, cut short or not a mapping (the trial has not
    finished: it runs again). A folder or file that is a symbolic link, or a value that its field cannot hold
    (record_checks), is refused in one line: never read as a result."""
    folder = Path(folder)
    record_checks.refuse_symlinks(folder, (METRICS,))
    try:
        data = json.loads((folder / METRICS).read_text(encoding="utf-8"), parse_constant=record_checks.parse_constant)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    record_checks.check_fields(data, str(folder / METRICS),
                               "; the file was edited or damaged: restore it, or delete it and run 'ablate study "
                               "--resume RUN_DIR' to run the trial again")
    return data


# --- curves.csv ----------------------------------------------------------------------------------------------------
def curves_text(train_loss: list[float], eval_steps: list[int], dev_loss: list[float], dev_acc: list[float]) -> str:
    dev = {s: (l, a) for s, l, a in zip(eval_steps, dev_loss, dev_acc)}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CURVE_COLUMNS)
    for step, loss in enumerate(train_loss, start=1):
        d_loss, d_acc = dev.get(step, ("", ""))
        writer.writerow([step, repr(loss), repr(d_loss) if d_loss != "" else "", repr(d_acc) if d_acc != "" else ""])
    return buf.getvalue()


def write_curves(folder: str | os.PathLike, train_loss: list[float], eval_steps: list[int], dev_loss: list[float],
                 dev_acc: list[float]) -> Path:
    """curves.csv of a finished trial, or of a paused one so far."""
    path = Path(folder) / CURVES
    atomic_write_text(path, curves_text(train_loss, eval_steps, dev_loss, dev_acc))
    return path


@dataclass
class Curves:
    """curves.csv read back: a value per row of each column, None where the file has a blank (no evaluation)."""

    step: list[int] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)
    dev_loss: list[float | None] = field(default_factory=list)
    dev_acc: list[float | None] = field(default_factory=list)

    def evaluations(self) -> list[tuple[int, float | None, float]]:
        """(step, dev loss, dev accuracy) of each evaluation, in order."""
        return [(s, loss, acc) for s, loss, acc in zip(self.step, self.dev_loss, self.dev_acc) if acc is not None]

    def columns(self) -> dict[str, list]:
        return {name: getattr(self, name) for name in CURVE_COLUMNS}


def _number(text: str) -> float | None:
    return None if text == "" else float(text)


def read_curves(folder: str | os.PathLike) -> Curves | None:
    """A trial folder's curves.csv (None when it has none); AblateError, naming the file, when it is not a
    curves table."""
    path = Path(folder) / CURVES
    out = Curves()
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                out.step.append(int(row["step"]))
                out.train_loss.append(_number(row["train_loss"]))
                out.dev_acc.append(_number(row.get("dev_acc") or ""))
                out.dev_loss.append(_number(row.get("dev_loss") or ""))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AblateError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (KeyError, ValueError, TypeError, UnicodeDecodeError, csv.Error) as exc:
        raise AblateError(f"{path} is not a curves table ({exc}); pass a folder written by ablate") from None
    return out


# --- grad_norms.csv and predictions.csv ------------------------------------------------------------------------------
def grad_norms_text(rows: list[dict[str, Any]]) -> str:
    """The telemetry rows as a tidy table; floats as repr so they read back bit for bit, None as empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(GRAD_NORM_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else repr(row[c]) if isinstance(row[c], float) else row[c]
                         for c in GRAD_NORM_COLUMNS])
    return buf.getvalue()


def write_grad_norms(folder: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    path = Path(folder) / GRAD_NORMS
    atomic_write_text(path, grad_norms_text(rows))
    return path


def predictions_text(labels: list[int], pred: list[int], pred_final: list[int]) -> str:
    lines = [",".join(PREDICTION_COLUMNS)]
    lines += [f"{i},{y},{p},{q}" for i, (y, p, q) in enumerate(zip(labels, pred, pred_final))]
    return "\n".join(lines) + "\n"


def write_predictions(folder: str | os.PathLike, labels: list[int], pred: list[int], pred_final: list[int]) -> Path:
    path = Path(folder) / PREDICTIONS
    atomic_write_text(path, predictions_text(labels, pred, pred_final))
    return path


def _table(path: Path, required: tuple[str, ...], what: str) -> "pd.DataFrame | None":
    """A CSV record as a pandas table (floats read back exactly), None when the file is missing; AblateError when
    it is not a table with the `required` columns."""
    import pandas as pd

    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise AblateError(f"{path} is not {what} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                          "pass a folder written by ablate") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise AblateError(f"{path} is not {what} (no column {', '.join(missing)}); expected columns "
                          f"{','.join(required)}")
    return frame


def read_grad_norms(folder: str | os.PathLike, required: tuple[str, ...] = GRAD_NORM_COLUMNS) -> "pd.DataFrame | None":
    """A trial folder's grad_norms.csv as a table (None when the trial recorded no telemetry); `required`: the
    columns the reader needs (a table of an older ablate may lack later ones)."""
    return _table(Path(folder) / GRAD_NORMS, required, "a grad_norms table")


def read_predictions(folder: str | os.PathLike) -> "pd.DataFrame | None":
    """A trial folder's predictions.csv as a table (None when it has none)."""
    return _table(Path(folder) / PREDICTIONS, PREDICTION_COLUMNS, "a predictions table")


# --- weights.pt and curves.png ---------------------------------------------------------------------------------------
def write_weights(folder: str | os.PathLike, data: bytes) -> Path:
    """weights.pt: the best-dev state_dict as torch.save wrote it (ablate.train.trial_files makes the bytes)."""
    path = Path(folder) / WEIGHTS
    atomic_write_bytes(path, data)
    return path


def has_weights(folder: str | os.PathLike) -> bool:
    return (Path(folder) / WEIGHTS).is_file()


def load_weights(folder: str | os.PathLike) -> dict[str, Any]:
    """A trial folder's weights.pt as a state_dict of tensors on the CPU; weights_only, so that a crafted file
    cannot run code."""
    import pickle

    import torch

    path = Path(folder) / WEIGHTS
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise AblateError(f"no weights at {path}; train with weights saved (write_trial_folder(..., weights=True))") \
            from None
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AblateError(f"cannot read weights {path}: {first}; retrain to write it again") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AblateError(f"{path} is not a state_dict of tensors; pass a {WEIGHTS} written by ablate")
    return state


def write_curves_plot(folder: str | os.PathLike, png: bytes) -> Path:
    path = Path(folder) / CURVES_PLOT
    atomic_write_bytes(path, png)
    return path
