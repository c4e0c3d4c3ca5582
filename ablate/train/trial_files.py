"""A trial's result written to its folder through the run-folder format's writers (ablate.run_folder.trial_records
and trial_state): the bytes that need torch (state dicts) and the curves figure are made here."""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Callable

from ablate.run_folder import trial_records, trial_state
from ablate.spec import TrialConfig
from ablate.train.result import TrialResult


def state_dict_bytes(state: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def dataset_title(name: str) -> str:
    """A named dataset as a figure names it, with its images' size: 'scikit-learn digits (8×8)'; a folder as given."""
    from ablate.data import REGISTRY

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
                       extra: dict[str, Any] | None = None, plot: bool = True, *, weights: bool = False,
                       timeline: Callable[[], dict[str, Any]] | None = None) -> Path:
    """config.yaml, curves.csv, grad_norms.csv, predictions.csv, curves.png, weights.pt, then
    metrics.json last: its presence marks the trial finished (a checkpoint of a paused segment,
    resume.pt, is removed after it).

    grad_norms.csv is written whenever the trial recorded telemetry (a diverged trial included);
    weights.pt (the best-dev state_dict) only with `weights=True` and a result run with
    keep_best_state=True; a trial that never reached an evaluation has no weights to save.
    `timeline()`, called once the other files are written, gives more fields of metrics.json (the study engine's
    timeline of the trial: ablate.run_folder.timeline).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trial_records.write_config(folder, config)
    trial_records.write_curves(folder, result.train_loss, result.eval_steps, result.dev_loss, result.dev_acc)
    if result.grad_norms:
        trial_records.write_grad_norms(folder, result.grad_norms)
    if result.test_pred:
        trial_records.write_predictions(folder, result.test_labels, result.test_pred, result.test_pred_final)
    if weights and result.best_state is not None:
        trial_records.write_weights(folder, state_dict_bytes(result.best_state))
    if plot and result.train_loss:
        model = (config.model_key() if config.factory else
                 f"{config.family}-{config.depth} {'residual' if config.residual else 'plain'}")
        title = f"{model} lr={config.lr:g}"
        trial_records.write_curves_plot(folder, plot_curves(result, title))
    trial_records.write_metrics(folder, {"trial_id": config.trial_id(), **result.metrics(), **(extra or {}),
                                         **(timeline() if timeline is not None else {})})
    trial_state.remove_paused(folder)
    return folder


def write_paused(folder: str | os.PathLike, config: TrialConfig, result: TrialResult,
                 extra: dict[str, Any] | None = None,
                 timeline: Callable[[], dict[str, Any]] | None = None) -> Path:
    """A paused segment: config.yaml (left as it is: the segment started with it), curves.csv so far, the
    checkpoint, then paused.json last (its presence says the checkpoint is complete). metrics.json is not written:
    the trial is not finished."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trial_records.remove_metrics(folder)  # an earlier attempt's error: this one got further
    trial_records.write_config(folder, config)
    trial_records.write_curves(folder, result.train_loss, result.eval_steps, result.dev_loss, result.dev_acc)
    state = {"trial_id": config.trial_id(), **result.metrics(), "evaluations": len(result.eval_steps),
             "dev_acc": list(result.dev_acc), **(extra or {})}
    trial_state.write_paused(folder, state_dict_bytes(result.checkpoint), state, timeline)
    return folder
