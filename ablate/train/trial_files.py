"""Files a trial leaves behind, each written atomically so a crash never leaves half a file."""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.train.telemetry import GRAD_NORM_COLUMNS
from ablate.spec.trial_config import TrialConfig
from ablate.train.result import TrialResult
from ablate.atomic_files import atomic_write_bytes, atomic_write_text
from ablate.train.folder_layout import CHECKPOINT, PAUSED


def _json_safe(value: Any) -> Any:
    # JSON has no NaN; null keeps the files readable by any tool.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def curves_csv(result: TrialResult) -> str:
    dev = {s: (l, a) for s, l, a in zip(result.eval_steps, result.dev_loss, result.dev_acc)}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", "train_loss", "dev_loss", "dev_acc"])
    for step, loss in enumerate(result.train_loss, start=1):
        dev_loss, dev_acc = dev.get(step, ("", ""))
        writer.writerow([step, repr(loss), repr(dev_loss) if dev_loss != "" else "", repr(dev_acc) if dev_acc != "" else ""])
    return buf.getvalue()


def grad_norms_csv(result: TrialResult) -> str:
    """The telemetry rows as a tidy table; floats as repr so they read back bit for bit, None as empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(GRAD_NORM_COLUMNS)
    for row in result.grad_norms:
        writer.writerow(["" if row[c] is None else repr(row[c]) if isinstance(row[c], float) else row[c]
                         for c in GRAD_NORM_COLUMNS])
    return buf.getvalue()


def predictions_csv(result: TrialResult) -> str:
    """Per test image (index into the test subset): label, the scored checkpoint's and the final one's prediction."""
    lines = ["index,label,pred,pred_final"]
    lines += [f"{i},{y},{p},{q}" for i, (y, p, q) in
              enumerate(zip(result.test_labels, result.test_pred, result.test_pred_final))]
    return "\n".join(lines) + "\n"


def state_dict_bytes(state: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def load_weights(path: str | os.PathLike) -> dict[str, Any]:
    """weights.pt as saved by write_trial_folder; weights_only so a crafted file cannot run code."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise AblateError(f"no weights at {path}; train with weights saved (write_trial_folder(..., weights=True))") from None
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        raise AblateError(f"cannot read weights {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                          "retrain to write it again") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AblateError(f"{path} is not a state_dict of tensors; pass a weights.pt written by ablate")
    return state


def dataset_title(name: str) -> str:
    """A named dataset as a figure names it, with its images' size: 'scikit-learn digits (8×8)'; a folder as given."""
    from ablate.data.registry import REGISTRY

    entry = REGISTRY.get(name)
    return f"{entry.title} ({entry.image_size}×{entry.image_size})" if entry else name


def plot_curves(result: TrialResult, title: str = "") -> bytes:
    """Two panels as in the reference experiment, in the analysis figures' style: train (per step) and
    dev loss, and dev accuracy in %; the best-dev step (the checkpoint scored on test) is marked.

    The title names the model (`title`, e.g. "imagenet-18 residual lr=0.01") and the dataset the
    trial actually used. Built on a matplotlib Figure, not pyplot: no global state, no display.
    """
    from matplotlib.figure import Figure

    rc = {"axes.grid": True, "grid.color": "#dddddd", "grid.linewidth": 0.6, "axes.spines.right": False,
          "axes.spines.top": False, "legend.frameon": False, "font.size": 11}
    import matplotlib

    with matplotlib.rc_context(rc):
        fig = Figure(figsize=(11, 4.8), layout="constrained")
        ax_loss, ax_acc = fig.subplots(1, 2, sharex=True)
        steps = list(range(1, len(result.train_loss) + 1))
        ax_loss.plot(steps, result.train_loss, color="#0173b2", lw=1, label="train (mini-batch)")
        ax_loss.plot(result.eval_steps, result.dev_loss, color="#de8f05", ls="--", marker="o", ms=4, label="dev")
        ax_loss.set(xlabel="training step (SGD updates)", ylabel="cross-entropy (nats)", title="loss")
        ax_loss.legend(loc="best")
        ax_acc.plot(result.eval_steps, [100 * a for a in result.dev_acc], color="#de8f05", ls="--", marker="o", ms=4,
                    label="dev")
        ax_acc.set(xlabel="training step (SGD updates)", ylabel="dev accuracy (%)", ylim=(0, 102), title="dev accuracy")
        if result.best_step:
            for ax in (ax_loss, ax_acc):
                ax.axvline(result.best_step, color="grey", ls=":", lw=1.5)
            ax_acc.plot([], [], color="grey", ls=":", label=f"best dev (step {result.best_step}): the scored checkpoint")
        ax_acc.legend(loc="best")
        dataset = dataset_title(result.dataset)
        score = "" if not math.isfinite(result.test_acc) else f"; test accuracy {100 * result.test_acc:.1f} % (best-dev checkpoint)"
        heading = f"{title + ' on ' if title else ''}{dataset}{score}"
        fig.suptitle(heading)
        buf = io.BytesIO()
        # The title also goes into the PNG's text metadata, so the file says what it shows.
        fig.savefig(buf, format="png", dpi=110, metadata={"Title": heading})
    return buf.getvalue()


def write_trial_folder(folder: str | os.PathLike, config: TrialConfig, result: TrialResult,
                       extra: dict[str, Any] | None = None, plot: bool = True, *, weights: bool = False) -> Path:
    """config.yaml, curves.csv, grad_norms.csv, predictions.csv, curves.png, weights.pt, then
    metrics.json last: its presence marks the trial finished (a checkpoint of a paused segment,
    resume.pt, is removed after it).

    grad_norms.csv is written whenever the trial recorded telemetry (a diverged trial included);
    weights.pt (the best-dev state_dict) only with `weights=True` and a result run with
    keep_best_state=True; a trial that never reached an evaluation has no weights to save.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.yaml", config.to_yaml())
    atomic_write_text(folder / "curves.csv", curves_csv(result))
    if result.grad_norms:
        atomic_write_text(folder / "grad_norms.csv", grad_norms_csv(result))
    if result.test_pred:
        atomic_write_text(folder / "predictions.csv", predictions_csv(result))
    if weights and result.best_state is not None:
        atomic_write_bytes(folder / "weights.pt", state_dict_bytes(result.best_state))
    if plot and result.train_loss:
        title = f"{config.family}-{config.depth} {'residual' if config.residual else 'plain'} lr={config.lr:g}"
        atomic_write_bytes(folder / "curves.png", plot_curves(result, title))
    metrics = {"trial_id": config.trial_id(), **result.metrics(), **(extra or {})}
    atomic_write_text(folder / "metrics.json", json.dumps({k: _json_safe(v) for k, v in metrics.items()}, indent=2) + "\n")
    (folder / CHECKPOINT).unlink(missing_ok=True)
    (folder / PAUSED).unlink(missing_ok=True)
    return folder




def write_paused(folder: str | os.PathLike, config: TrialConfig, result: TrialResult,
                 extra: dict[str, Any] | None = None) -> Path:
    """A paused segment: config.yaml, curves.csv so far, the checkpoint, then paused.json last (its
    presence says the checkpoint is complete). metrics.json is not written: the trial is not finished."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").unlink(missing_ok=True)  # an earlier attempt's error: this one got further
    atomic_write_text(folder / "config.yaml", config.to_yaml())
    atomic_write_text(folder / "curves.csv", curves_csv(result))
    atomic_write_bytes(folder / CHECKPOINT, state_dict_bytes(result.checkpoint))
    state = {"trial_id": config.trial_id(), **result.metrics(), "evaluations": len(result.eval_steps),
             "dev_acc": list(result.dev_acc), **(extra or {})}
    atomic_write_text(folder / PAUSED, json.dumps({k: _json_safe(v) for k, v in state.items()}, indent=2) + "\n")
    return folder


def read_checkpoint(folder: str | os.PathLike) -> dict[str, Any] | None:
    """A paused trial's checkpoint, or None when there is none (or it cannot be read: the segment reruns)."""
    path = Path(folder) / CHECKPOINT
    if not path.is_file() or not (Path(folder) / PAUSED).is_file():
        return None
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  a damaged checkpoint only costs a rerun of the segment
        return None
