"""TrialResult: what one trial measured (curves, scores, predictions, telemetry, a checkpoint when paused)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch


STATUSES = ("ok", "diverged", "paused")


@dataclass
class TrialResult:
    status: str  # ok | diverged | paused (stopped after stop_after_evals evaluations; see `checkpoint`)
    dataset: str
    device: str
    threads: int
    best_dev_acc: float
    best_step: int
    test_acc: float  # the best-dev checkpoint on the test subset: the trial's reported score
    test_loss: float
    final_train_loss: float  # mean mini-batch loss over the last epoch (weights changing under it)
    train_seconds: float
    total_seconds: float
    steps: int
    # The last checkpoint on test, and the scored (best-dev) checkpoint on the whole training subset
    # in eval mode: together they say what best-dev checkpointing changed.
    final_test_acc: float = float("nan")
    final_test_loss: float = float("nan")
    scored_train_acc: float = float("nan")
    scored_train_loss: float = float("nan")
    segments: int = 1  # run_trial calls that made this result (1 + continuations after pauses)
    # What the model saw: classes, input channels, and the per-channel scaling x = (pixel - mean) / std of the
    # pixels in [0, 1] (0.5 and 0.5 for greyscale; the training subset's statistics for colour images).
    num_classes: int = 10
    in_channels: int = 1
    channel_mean: list[float] = field(default_factory=lambda: [0.5])
    channel_std: list[float] = field(default_factory=lambda: [0.5])
    train_loss: list[float] = field(default_factory=list)  # one per step, step = index + 1
    eval_steps: list[int] = field(default_factory=list)
    dev_loss: list[float] = field(default_factory=list)
    dev_acc: list[float] = field(default_factory=list)
    error: str | None = None

    def record_evaluation(self, step: int, dev_acc: float, dev_loss: float) -> bool:
        """Append one dev evaluation; True when it is the best so far (the checkpoint to keep)."""
        self.eval_steps.append(step)
        self.dev_acc.append(dev_acc)
        self.dev_loss.append(dev_loss)
        if dev_acc > self.best_dev_acc:
            self.best_dev_acc, self.best_step = dev_acc, step
            return True
        return False
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    # Tidy rows of grad_norms.csv (see GRAD_NORM_COLUMNS); empty when telemetry is off.
    grad_norms: list[dict[str, Any]] = field(default_factory=list, repr=False)
    # Per test image (in the test subset's order): its label, the scored and the final checkpoint's prediction.
    test_labels: list[int] = field(default_factory=list, repr=False)
    test_pred: list[int] = field(default_factory=list, repr=False)
    test_pred_final: list[int] = field(default_factory=list, repr=False)
    # Everything a continuation needs (CPU tensors); set only when status == "paused".
    checkpoint: dict[str, Any] | None = field(default=None, repr=False)
    # When this run of the loop loaded its data, built its model and ended (time.time()), and the seconds it spent
    # in training steps and dev evaluations: the worker's part of the trial's timeline (ablate.run_folder.timeline).
    marks: dict[str, float] = field(default_factory=dict, repr=False)

    _NOT_SCALAR = ("train_loss", "eval_steps", "dev_loss", "dev_acc", "best_state", "grad_norms", "test_labels",
                   "test_pred", "test_pred_final", "checkpoint", "marks")

    def metrics(self) -> dict[str, Any]:
        """Scalars for metrics.json / trials.csv (curves are written separately)."""
        # Reading fields directly instead of dataclasses.asdict: asdict would deep-copy the curves
        # and telemetry rows only to throw them away.
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._NOT_SCALAR}
