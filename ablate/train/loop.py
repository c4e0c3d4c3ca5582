"""One trial from one config: train, evaluate on dev, keep the best-dev weights, score on test.

Knows nothing of Ray or Optuna: the study engine passes a `report` callback. A trial can stop
after a given number of dev evaluations ("paused") and later continue from the checkpoint it
returned; the continued trial computes exactly what an uninterrupted one would.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ablate.spec.trial_config import TrialConfig
from ablate.errors import AblateError
from ablate.train.telemetry import GradTelemetry
from ablate.train.device import deterministic_cuda, seed_everything
from ablate.train.result import TrialResult


CHECKPOINT_VERSION = 1


def _evaluate(model, split_x, split_y, memory_format, batch: int = 500, predictions: bool = False):
    """(accuracy, mean loss) over a split already on the model's device; with predictions, also the
    predicted labels as a list."""
    model.eval()
    total_loss, correct, n = 0.0, 0, split_y.numel()
    preds = []
    with torch.inference_mode():
        for start in range(0, n, batch):
            x = split_x[start : start + batch].contiguous(memory_format=memory_format)
            y = split_y[start : start + batch]
            logits = model(x)
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            pred = logits.argmax(1)
            correct += (pred == y).sum().item()
            if predictions:
                preds += pred.tolist()
    model.train()
    return (correct / n, total_loss / n, preds) if predictions else (correct / n, total_loss / n)


def data_record(splits) -> dict[str, Any]:
    """What a TrialResult records of the data it trained on (for single and fused trials alike)."""
    return {"dataset": splits.dataset, "num_classes": splits.num_classes, "in_channels": splits.in_channels,
            "channel_mean": list(splits.mean), "channel_std": list(splits.std)}


def model_for(config: TrialConfig, splits) -> torch.nn.Module:
    """The trial's model with its own seeded initialisation (what a fused member gets too)."""
    from ablate.models.resnet import build_model

    seed_everything(config.seed)
    return build_model(config.model, splits.in_channels, splits.num_classes)


def run_trial(
    config: TrialConfig,
    report: Callable[[dict[str, Any]], None] | None = None,
    *,
    device: str | torch.device | None = None,
    data_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
    keep_best_state: bool = False,
    stop_after_evals: int | None = None,
    resume: dict[str, Any] | None = None,
) -> TrialResult:
    """Train one model as `config` says.

    train_seconds and total_seconds of a continued trial add up all of its segments.

    `report(metrics)` is called after every dev evaluation; `progress(step, total)` after every step.
    A loss that becomes NaN/inf ends the trial with status "diverged" instead of raising.
    With `stop_after_evals=k` the trial stops after its k-th evaluation (unless that is its last)
    with status "paused" and `result.checkpoint`; `run_trial(config, resume=checkpoint)` continues
    it, bit for bit as if it had never stopped (on the same device and thread count).
    With config.telemetry, result.grad_norms holds GradTelemetry rows for step 0 (the first
    batch's gradients, before any update) and every evaluation step (that step's gradients,
    before its update); telemetry only reads, so the training is the same with it off (except with
    config.compile: telemetry steps run eagerly, and eager and compiled kernels round differently).
    """
    from ablate.data.splits import load_splits
    from ablate.train.forward import TrainForward
    from ablate.train.augment import Augmenter

    t_start = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        deterministic_cuda()
    splits = load_splits(
        config.dataset, data_dir, config.train_size, config.dev_size, config.test_size,
        seed=config.data_seed, image_size=config.image_size,
    )
    model = model_for(config, splits)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )
    # The schedule is a function of the step, worked out once: a step only sets a number, and a continued
    # trial resumes it from the step it restored.
    rates = config.learning_rates()
    # Padding is black: the value a zero pixel has after the split's scaling.
    augment = None if config.augment == "none" else Augmenter(
        config.augment, [-m / s for m, s in zip(splits.mean, splits.std)], device, config.seed)
    # Every split lives on the device for the whole trial: no host copies inside the loop.
    train_x = splits.train.x.to(device, memory_format=memory_format)
    train_y = splits.train.y.to(device)
    dev_x, dev_y = splits.dev.x.to(device), splits.dev.y.to(device)
    test_x, test_y = splits.test.x.to(device), splits.test.y.to(device)
    n = train_y.numel()
    batches = config.batches()
    # fp32 or bf16 autocast, eager or compiled (ablate.train.forward); evaluations always run the eager fp32 model.
    forward = TrainForward(model, config, device, (batches[0][1] - batches[0][0], *train_x.shape[1:]))
    steps_per_epoch = len(batches)
    total_steps = steps_per_epoch * config.epochs
    eval_at = set(config.evaluation_steps())
    shuffle = torch.Generator().manual_seed(config.seed)
    # Losses stay on the device until an evaluation so the step never waits for a host sync.
    loss_buf = torch.zeros(total_steps, device=device)

    result = TrialResult(
        status="ok", device=str(device), threads=torch.get_num_threads(),
        best_dev_acc=-1.0, best_step=0, test_acc=float("nan"), test_loss=float("nan"),
        final_train_loss=float("nan"), train_seconds=0.0, total_seconds=0.0, steps=0, **data_record(splits),
    )
    best_state = None
    telemetry = GradTelemetry(model) if config.telemetry else None
    step = checked = 0
    order, order_epoch = None, -1
    seconds_before = total_before = 0.0
    if resume is not None:
        total_before = resume["total_seconds"]
        step, order_epoch, seconds_before, best_state = _restore(
            resume, config, model, optimizer, shuffle, loss_buf, result, telemetry, device, augment)
        checked = step
        order = resume["order"].to(device) if resume["order"] is not None else None

    t_train = time.perf_counter()
    while step < total_steps:
        epoch = step // steps_per_epoch
        if epoch != order_epoch:
            order, order_epoch = torch.randperm(n, generator=shuffle).to(device), epoch
        start, end = batches[step % steps_per_epoch]
        idx = order[start:end]
        x = train_x[idx] if augment is None else augment(train_x[idx], memory_format)
        if rates is not None:
            for group in optimizer.param_groups:
                group["lr"] = rates[step]
        # Telemetry labels: 0 is the first batch's gradients (initialisation), then every evaluation step.
        labels: tuple[int, ...] = ()
        if telemetry is not None:
            if step == 0:
                labels += (0,)
            if step + 1 in eval_at:
                labels += (step + 1,)
        if labels:
            telemetry.arm()
            try:
                logits = forward(x, eager=True)  # its hooks read the block outputs: never through a compiled graph
            finally:
                telemetry.disarm()
        else:
            logits = forward(x)
        loss = F.cross_entropy(logits, train_y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if labels:
            telemetry.record(labels)
        optimizer.step()
        loss_buf[step] = loss.detach()
        step += 1
        if progress is not None:
            progress(step, total_steps)
        if step not in eval_at:
            continue
        seen = loss_buf[:step].tolist()
        result.train_loss = seen
        if not all(math.isfinite(v) for v in seen[checked:]):
            result.status = "diverged"
            break
        checked = step
        dev_acc, dev_loss = _evaluate(model, dev_x, dev_y, memory_format)
        if result.record_evaluation(step, dev_acc, dev_loss):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if report is not None:
            report({
                "step": step, "epoch": epoch + 1, "train_loss": seen[-1], "dev_loss": dev_loss,
                "dev_acc": dev_acc, "best_dev_acc": result.best_dev_acc,
            })
        if stop_after_evals is not None and len(result.eval_steps) >= stop_after_evals and step < total_steps:
            result.status = "paused"
            break
    result.steps = step
    result.train_seconds = seconds_before + time.perf_counter() - t_train
    if result.status == "paused":
        result.total_seconds = total_before + time.perf_counter() - t_start
        result.checkpoint = _checkpoint(config, model, optimizer, shuffle, order, order_epoch, step, loss_buf,
                                        result, best_state, telemetry, augment)
        result.best_dev_acc = max(result.best_dev_acc, 0.0)
        return result
    if telemetry is not None:
        result.grad_norms = telemetry.rows()
    if result.train_loss:
        result.final_train_loss = float(np.mean(result.train_loss[-steps_per_epoch:]))
    if result.status == "ok" and best_state is not None:
        result.final_test_acc, result.final_test_loss, result.test_pred_final = _evaluate(
            model, test_x, test_y, memory_format, predictions=True)
        model.load_state_dict(best_state)
        result.test_acc, result.test_loss, result.test_pred = _evaluate(
            model, test_x, test_y, memory_format, predictions=True)
        result.scored_train_acc, result.scored_train_loss = _evaluate(model, train_x, train_y, memory_format)
        result.test_labels = test_y.tolist()
    result.best_dev_acc = max(result.best_dev_acc, 0.0)
    if keep_best_state and best_state is not None:
        result.best_state = {k: v.cpu() for k, v in best_state.items()}
    result.total_seconds = total_before + time.perf_counter() - t_start
    return result


def _checkpoint(config, model, optimizer, shuffle, order, order_epoch, step, loss_buf, result, best_state,
                telemetry, augment) -> dict[str, Any]:
    """What a continuation needs, as CPU tensors and plain values (torch.save-able with weights_only)."""
    cpu = lambda state: {k: v.detach().cpu().clone() for k, v in state.items()}  # noqa: E731
    return {
        "version": CHECKPOINT_VERSION, "trial_id": config.trial_id(), "step": step, "segments": result.segments,
        "model": cpu(model.state_dict()), "optimizer": optimizer.state_dict(), "generator": shuffle.get_state(),
        "order": None if order is None else order.cpu(), "order_epoch": order_epoch,
        "losses": loss_buf[:step].cpu(), "train_seconds": result.train_seconds,
        "total_seconds": result.total_seconds,
        "eval_steps": list(result.eval_steps), "dev_acc": list(result.dev_acc), "dev_loss": list(result.dev_loss),
        "best_dev_acc": result.best_dev_acc, "best_step": result.best_step,
        "best_state": None if best_state is None else cpu(best_state),
        "telemetry": [] if telemetry is None else telemetry.state(),
        # The learning rate needs nothing more: it is a function of `step`.
        "augment_generator": None if augment is None else augment.generator.get_state(),
    }


def _restore(ckpt, config, model, optimizer, shuffle, loss_buf, result, telemetry, device, augment):
    if ckpt.get("version") != CHECKPOINT_VERSION or ckpt.get("trial_id") != config.trial_id():
        raise AblateError(f"checkpoint is for trial {ckpt.get('trial_id')} (version {ckpt.get('version')}), "
                          f"not {config.trial_id()}; delete it to rerun the trial from the start")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    shuffle.set_state(ckpt["generator"])
    if augment is not None:
        augment.generator.set_state(ckpt["augment_generator"])
    step = int(ckpt["step"])
    loss_buf[:step] = ckpt["losses"].to(device)
    result.train_loss = ckpt["losses"].tolist()
    result.eval_steps, result.dev_acc, result.dev_loss = (list(ckpt[k]) for k in ("eval_steps", "dev_acc", "dev_loss"))
    result.best_dev_acc, result.best_step = ckpt["best_dev_acc"], ckpt["best_step"]
    result.segments = ckpt["segments"] + 1
    if telemetry is not None:
        telemetry.load_state(ckpt["telemetry"], device)
    best = ckpt["best_state"]
    best_state = None if best is None else {k: v.to(device) for k, v in best.items()}
    return step, ckpt["order_epoch"], ckpt["train_seconds"], best_state
