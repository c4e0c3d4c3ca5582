"""The training loop, one for a single trial and for trials fused into one model: prepare, step, evaluate, finish.

`TrainingLoop` trains K members together: K = 1 is one trial (`run_trial`), K >= 2 are trials fused into one
model (ablate.train.fused, `run_fused`). Everything but the model's forward pass and parameter update is the
loop's and so the same for both: data and its per-member shuffling, seeds, torch's threads, the device,
the learning-rate schedule per step, per-member augmentation, the divergence check, dev evaluations and the
best-dev checkpoint, telemetry, pausing and continuing, timing, and the TrialResults. What holds and updates
the weights is a *model* object: `SingleModel` here (torch's SGD through TrainForward: precision, compile), or
`FusedModel` (the members stacked and batched by vmap, SGD applied per member).

Knows nothing of Ray or Optuna: the study engine passes a `report` callback, and a `beat(phase, step)` callback
(its heartbeat, ablate.engine.liveness) that is called after every training step and every forward pass of an
evaluation: it must cost no more than a clock read (the engine writes a file at most every few seconds; an
exception it raises ends the trial, as the engine's does when the study cancels it). A trial can stop
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

from ablate.spec import TrialConfig
from ablate.errors import AblateError
from ablate.train import sgd
from ablate.train.telemetry import GradTelemetry, records_blocks
from ablate.train.device import deterministic_cuda, seed_everything, torch_threads
from ablate.train.result import TrialResult


CHECKPOINT_VERSION = 1


# Images per forward pass of an evaluation on the CPU. The loss is still summed per EVAL_BATCH images (one
# cross_entropy over their logits, as before the forward pass was chunked), and torch's CPU kernels give an image
# the same logits whether 7 or 500 images share its forward pass (tests/test_memory.py checks it for both arms of
# the default study on the machine it runs on), so recorded accuracies and losses are unchanged to the last bit. A
# forward pass of 500 images (the scoring on the training subset) held ~60 MB more than any training step of the
# default trial (ResNet18, 32 x 32 images): it was a worker's peak.
EVAL_BATCH = 500
CPU_EVAL_CHUNK = 100


def evaluate(model, split_x, split_y, memory_format, batch: int = EVAL_BATCH, predictions: bool = False, tick=None,
             chunk: int | None = None):
    """(accuracy, mean loss) over a split already on the model's device; with predictions, also the
    predicted labels as a list. The loss is summed over `batch` images at a time, their logits computed `chunk`
    images per forward pass (default: CPU_EVAL_CHUNK on the CPU, the whole batch elsewhere). `tick()` is called
    after each forward pass (a heartbeat)."""
    model.eval()
    total_loss, correct, n = 0.0, 0, split_y.numel()
    if chunk is None:
        chunk = CPU_EVAL_CHUNK if split_x.device.type == "cpu" else batch
    chunk = max(1, min(chunk, batch))
    preds = []
    with torch.inference_mode():
        for start in range(0, n, batch):
            end = min(start + batch, n)
            parts = []
            for at in range(start, end, chunk):
                parts.append(model(split_x[at : min(at + chunk, end)].contiguous(memory_format=memory_format)))
                if tick is not None:
                    tick()
            logits = parts[0] if len(parts) == 1 else torch.cat(parts)
            del parts
            y = split_y[start:end]
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            pred = logits.argmax(1)
            correct += (pred == y).sum().item()
            if predictions:
                preds += pred.tolist()
    model.train()
    return (correct / n, total_loss / n, preds) if predictions else (correct / n, total_loss / n)


def copy_state(state: dict[str, torch.Tensor], into: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """A copy of `state` (a model's weights and buffers): written into `into`, an earlier copy, when that holds the
    same names with tensors of the same shape, dtype and device (a trial's best-dev snapshot, taken again at
    each better evaluation: no second copy of the weights is allocated beside the first, and the allocator has no
    freed copy to scatter), else new tensors."""
    if into is not None and into.keys() == state.keys() and all(
            into[k].shape == v.shape and into[k].dtype == v.dtype and into[k].device == v.device
            for k, v in state.items()):
        with torch.no_grad():
            for k, v in state.items():
                into[k].copy_(v)
        return into
    return {k: v.detach().clone() for k, v in state.items()}


def data_record(splits) -> dict[str, Any]:
    """What a TrialResult records of the data it trained on (for single and fused trials alike)."""
    return {"dataset": splits.dataset, "num_classes": splits.num_classes, "in_channels": splits.in_channels,
            "channel_mean": list(splits.mean), "channel_std": list(splits.std)}


def model_for(config: TrialConfig, splits) -> torch.nn.Module:
    """The trial's model with its own seeded initialisation (what a fused member gets too)."""
    from ablate.models import build_trial_model

    seed_everything(config.seed)
    return build_trial_model(config, splits.in_channels, splits.num_classes)


class SingleModel:
    """One trial's weights and how a step updates them: torch's SGD (ablate.train.sgd: momentum, Nesterov, weight
    decay, the scheduled rate set before each step) on the forward pass TrainForward runs (fp32 or bf16, eager or
    compiled).

    The interface the loop trains through (FusedModel has the same): `memory_format`, `telemetry` (one
    GradTelemetry per member, or None), `train_step` (forward, backward, `update`), `current`, `snapshot`, `load`;
    for pausing, `state` and `restore`."""

    def __init__(self, models: list[torch.nn.Module], configs: list[TrialConfig], device: torch.device,
                 input_shape: tuple[int, ...]) -> None:
        from ablate.train.forward import TrainForward

        (model,), (config,) = models, configs
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=self.memory_format).train()
        # torch's SGD step (ablate.train.sgd), its rate per step worked out once from the schedule: a continued
        # trial resumes it from the step it restored.
        self.sgd = sgd.Sgd(config)
        self.named = list(self.model.named_parameters())  # walked once, not at every step
        # fp32 or bf16 autocast, eager or compiled (ablate.train.forward); evaluations always run the eager fp32 model.
        self.forward = TrainForward(self.model, config, device, input_shape)
        self.telemetry = ([GradTelemetry(self.model)] if config.telemetry and records_blocks(self.model)
                          else None)

    def train_step(self, xs: list[torch.Tensor], ys: list[torch.Tensor], step: int, labels: tuple[int, ...],
                   record: list[int]) -> torch.Tensor:
        """One update on each member's batch (xs[m], ys[m]); telemetry `labels` are recorded for the members in
        `record`. Returns each member's loss, on the device."""
        (x,), (y,) = xs, ys
        telemetry = self.telemetry[0] if labels and record else None
        if telemetry is not None:
            telemetry.arm()
            try:
                logits = self.forward(x, eager=True)  # its hooks read the block outputs: never through a compiled graph
            finally:
                telemetry.disarm()
        else:
            logits = self.forward(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        if telemetry is not None:
            telemetry.record(labels)
        self.update(step)
        # Gradients are dropped once applied, not when the next step's backward pass begins: the next forward pass
        # and the evaluations run without a second copy of the weights' size beside them.
        self.model.zero_grad(set_to_none=True)
        return loss.detach()

    def update(self, step: int) -> None:
        """Step `step`'s SGD update from the gradients the parameters hold, at the scheduled rate."""
        params = {name: p for name, p in self.named if p.grad is not None}
        self.sgd.apply(params, {name: p.grad for name, p in params.items()}, step)

    def current(self, member: int) -> torch.nn.Module:
        """A module holding the member's weights as they are now (to evaluate)."""
        return self.model

    def snapshot(self, member: int, into: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """A copy of the member's weights and buffers as they are now (the best-dev checkpoint), written into
        `into` (an earlier snapshot's tensors) where it fits (see copy_state)."""
        return copy_state(self.model.state_dict(), into)

    def load(self, member: int, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        """A module holding `state`, a snapshot of the member (to score it)."""
        self.model.load_state_dict(state)
        return self.model

    def state(self) -> dict[str, Any]:
        return {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "optimizer": self.sgd.state_dict([name for name, _ in self.named])}

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.sgd.load_state_dict(ckpt["optimizer"], dict(self.named))


class TrainingLoop:
    """K >= 1 members trained in step: `prepare()`, then `step()` while `running`, `evaluate()` whenever `due`,
    then `finish()` gives one TrialResult per member (`run()` does all of it, with torch's threads set to the
    config's and restored after).

    The members share everything but what `FUSABLE` lets differ (ablate.spec.trial_config): one data subset,
    model shape, batch size and evaluation steps. Each member has its own initialisation, data order
    (its seed), augmentation stream (its seed), learning rate per step, momentum and weight decay. A member
    whose loss is not finite at an evaluation ends as "diverged"; the others go on. Only a single trial
    (K = 1) pauses and continues (`stop_after_evals`, `resume`).
    """

    def __init__(self, configs: list[TrialConfig], model: type = SingleModel, *,
                 device: str | torch.device | None = None, data_dir: str | os.PathLike | None = None,
                 report: Callable[[dict[str, Any]], None] | None = None,
                 progress: Callable[[int, int], None] | None = None, keep_best_state: bool = False,
                 stop_after_evals: int | None = None, resume: dict[str, Any] | None = None,
                 beat: Callable[[str, int], None] | None = None) -> None:
        if not configs:
            raise ValueError("a training loop needs at least one config")
        if len(configs) > 1 and (stop_after_evals is not None or resume is not None):
            raise ValueError("fused trials run from start to end in one piece: they neither pause nor continue")
        self.configs, self.config = list(configs), configs[0]
        self.model_type = model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.data_dir, self.report, self.progress = data_dir, report, progress
        self.keep_best_state, self.stop_after_evals, self.resume = keep_best_state, stop_after_evals, resume
        self.beat = beat
        self.steps = 0

    def _ticker(self, phase: str):
        """The heartbeat's tick for each batch of an evaluation in `phase` (None without a heartbeat)."""
        if self.beat is None:
            return None
        return lambda: self.beat(phase, self.steps)

    def _phase(self, phase: str) -> None:
        if self.beat is not None:
            self.beat(phase, self.steps)

    def run(self) -> list[TrialResult]:
        with torch_threads(self.config.threads):
            self.prepare()
            while self.running:
                self.step()
                if self.due:
                    self.evaluate()
            return self.finish()

    # --- prepare -----------------------------------------------------------------------------------
    def prepare(self) -> "TrainingLoop":
        """Data on the device, the members' models, generators and results; a continuation's state restored."""
        from ablate.data import load_splits
        from ablate.train.augment import Augmenter

        self.t_start = time.perf_counter()
        cfg, device = self.config, self.device
        if device.type == "cuda":
            deterministic_cuda()
        self._phase("loading data")
        splits = load_splits(cfg.dataset, self.data_dir, cfg.train_size, cfg.dev_size, cfg.test_size,
                             seed=cfg.data_seed, image_size=cfg.image_size, data_file=cfg.data_file,
                             data_sha256=cfg.data_sha256)
        # The timeline's marks (ablate.run_folder.timeline): wall-clock times, and seconds summed per kind of work.
        self.marks = {"data": time.time(), "step_seconds": 0.0, "eval_seconds": 0.0}
        self.batches = cfg.batches()
        input_shape = (self.batches[0][1] - self.batches[0][0], *splits.train.x.shape[1:])
        self._phase("building the model")
        self.model = self.model_type([model_for(c, splits) for c in self.configs], self.configs, device, input_shape)
        self.memory_format = fmt = self.model.memory_format
        # Padding is black: the value a zero pixel has after the split's scaling. Each member its own stream.
        fill = [-m / s for m, s in zip(splits.mean, splits.std)]
        self.augment = [None if c.augment == "none" else Augmenter(c.augment, fill, device, c.seed)
                        for c in self.configs]
        # Every split lives on the device for the whole trial: no host copies inside the loop.
        self.train_x = splits.train.x.to(device, memory_format=fmt)
        self.train_y = splits.train.y.to(device)
        self.dev_x, self.dev_y = splits.dev.x.to(device), splits.dev.y.to(device)
        self.test_x, self.test_y = splits.test.x.to(device), splits.test.y.to(device)
        self.steps_per_epoch = len(self.batches)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.eval_at = set(cfg.evaluation_steps())
        self.shuffles = [torch.Generator().manual_seed(c.seed) for c in self.configs]
        self.orders: list[torch.Tensor] = []
        self.order_epoch = -1
        # Losses stay on the device until an evaluation so the step never waits for a host sync.
        self.loss_buf = torch.zeros(self.total_steps, len(self.configs), device=device)
        self.results = [TrialResult(
            status="ok", device=str(device), threads=torch.get_num_threads(),
            best_dev_acc=-1.0, best_step=0, test_acc=float("nan"), test_loss=float("nan"),
            final_train_loss=float("nan"), train_seconds=0.0, total_seconds=0.0, steps=0, **data_record(splits),
        ) for _ in self.configs]
        self.best: list[dict[str, torch.Tensor] | None] = [None] * len(self.configs)
        self.live = list(range(len(self.configs)))  # members still training (not diverged)
        self.checked = [0] * len(self.configs)  # steps whose losses were found finite, per member
        self.steps, self.paused = 0, False
        self.seconds_before = self.total_before = 0.0
        if self.resume is not None:
            self._restore(self.resume)
        self._phase("first step")
        self.marks["model"] = time.time()
        self.t_train = time.perf_counter()
        return self

    # --- step --------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.steps < self.total_steps and bool(self.live) and not self.paused

    @property
    def due(self) -> bool:
        """The step just taken is followed by a dev evaluation."""
        return self.steps in self.eval_at

    def step(self) -> None:
        """One training step of every member, each on its own batch (a diverged fused member trains on with
        the others; nothing of it is read any more)."""
        t0 = time.perf_counter()
        step = self.steps
        epoch = step // self.steps_per_epoch
        if epoch != self.order_epoch:
            self.orders = [torch.randperm(len(self.train_y), generator=g).to(self.device) for g in self.shuffles]
            self.order_epoch = epoch
        start, end = self.batches[step % self.steps_per_epoch]
        idx = [order[start:end] for order in self.orders]
        xs = [self.train_x[i] if augment is None else augment(self.train_x[i], self.memory_format)
              for i, augment in zip(idx, self.augment)]
        # Telemetry labels: 0 is the first batch's gradients (initialisation), then every evaluation step.
        labels: tuple[int, ...] = ()
        if self.model.telemetry is not None:
            labels = ((0,) if step == 0 else ()) + ((step + 1,) if step + 1 in self.eval_at else ())
        self.loss_buf[step] = self.model.train_step(xs, [self.train_y[i] for i in idx], step, labels, self.live)
        self.steps = step + 1
        self.marks["step_seconds"] += time.perf_counter() - t0
        if self.beat is not None:
            self.beat("training", self.steps)
        if self.progress is not None:
            self.progress(self.steps, self.total_steps)

    # --- evaluate ----------------------------------------------------------------------------------
    def evaluate(self) -> None:
        """After an evaluation step: each live member's losses since the last evaluation checked (one that is not
        finite ends the member as diverged), its dev accuracy recorded, its best-dev weights kept, reported; a
        single trial pauses after `stop_after_evals` evaluations (unless this was its last step)."""
        t0 = time.perf_counter()
        step = self.steps
        seen = self.loss_buf[:step].T.tolist()
        for m in list(self.live):
            result = self.results[m]
            result.train_loss = seen[m]
            if not all(math.isfinite(v) for v in seen[m][self.checked[m]:]):
                result.status, result.steps = "diverged", step
                self.live.remove(m)
                continue
            self.checked[m] = step
            dev_acc, dev_loss = evaluate(self.model.current(m), self.dev_x, self.dev_y, self.memory_format,
                                         tick=self._ticker("evaluating on dev"))
            if result.record_evaluation(step, dev_acc, dev_loss):
                self.best[m] = self.model.snapshot(m, into=self.best[m])
            if self.report is not None:
                self.report({
                    "step": step, "epoch": (step - 1) // self.steps_per_epoch + 1, "train_loss": seen[m][-1],
                    "dev_loss": dev_loss, "dev_acc": dev_acc, "best_dev_acc": result.best_dev_acc,
                })
        if (self.stop_after_evals is not None and self.live and step < self.total_steps
                and len(self.results[0].eval_steps) >= self.stop_after_evals):
            self.results[0].status, self.paused = "paused", True
        self.marks["eval_seconds"] += time.perf_counter() - t0

    # --- finish ------------------------------------------------------------------------------------
    def finish(self) -> list[TrialResult]:
        """The members' results: a paused trial's checkpoint, or each member's test scores (last and best-dev
        checkpoint), the scored checkpoint on the training subset, telemetry rows and times."""
        train_seconds = self.seconds_before + time.perf_counter() - self.t_train
        for result in self.results:
            if result.status != "diverged":
                result.steps = self.steps
            result.train_seconds = train_seconds  # fused members trained together: each took the whole time
        if self.paused:
            result = self.results[0]
            result.total_seconds = self.total_before + time.perf_counter() - self.t_start
            result.checkpoint = self._checkpoint()
            result.best_dev_acc = max(result.best_dev_acc, 0.0)
            return self._marked()
        for m, result in enumerate(self.results):
            if self.model.telemetry is not None:
                result.grad_norms = self.model.telemetry[m].rows()
            if result.train_loss:
                result.final_train_loss = float(np.mean(result.train_loss[-self.steps_per_epoch:]))
            if result.status == "ok" and self.best[m] is not None:
                result.final_test_acc, result.final_test_loss, result.test_pred_final = evaluate(
                    self.model.current(m), self.test_x, self.test_y, self.memory_format, predictions=True,
                    tick=self._ticker("scoring on test"))
                scored = self.model.load(m, self.best[m])
                result.test_acc, result.test_loss, result.test_pred = evaluate(
                    scored, self.test_x, self.test_y, self.memory_format, predictions=True,
                    tick=self._ticker("scoring on test"))
                result.scored_train_acc, result.scored_train_loss = evaluate(
                    scored, self.train_x, self.train_y, self.memory_format, tick=self._ticker("scoring on train"))
                result.test_labels = self.test_y.tolist()
            result.best_dev_acc = max(result.best_dev_acc, 0.0)
            if self.keep_best_state and self.best[m] is not None:
                result.best_state = {k: v.cpu() for k, v in self.best[m].items()}
            result.total_seconds = self.total_before + time.perf_counter() - self.t_start
        return self._marked()

    def _marked(self) -> list[TrialResult]:
        """The results, each with this run's timeline marks (the members of a fused group share them)."""
        self.marks["trained"] = time.time()
        for result in self.results:
            result.marks = dict(self.marks)
        return self.results

    # --- pause and continue (a single trial) -------------------------------------------------------
    def _checkpoint(self) -> dict[str, Any]:
        """What a continuation needs, as CPU tensors and plain values (torch.save-able with weights_only)."""
        cpu = lambda state: {k: v.detach().cpu().clone() for k, v in state.items()}  # noqa: E731
        result, best, augment = self.results[0], self.best[0], self.augment[0]
        telemetry = self.model.telemetry[0] if self.model.telemetry is not None else None
        order = self.orders[0] if self.orders else None
        return {
            "version": CHECKPOINT_VERSION, "trial_id": self.config.trial_id(), "step": self.steps,
            "segments": result.segments, **self.model.state(), "generator": self.shuffles[0].get_state(),
            "order": None if order is None else order.cpu(), "order_epoch": self.order_epoch,
            "losses": self.loss_buf[:self.steps, 0].cpu(), "train_seconds": result.train_seconds,
            "total_seconds": result.total_seconds,
            "eval_steps": list(result.eval_steps), "dev_acc": list(result.dev_acc), "dev_loss": list(result.dev_loss),
            "best_dev_acc": result.best_dev_acc, "best_step": result.best_step,
            "best_state": None if best is None else cpu(best),
            "telemetry": [] if telemetry is None else telemetry.state(),
            # The learning rate needs nothing more: it is a function of `step`.
            "augment_generator": None if augment is None else augment.generator.get_state(),
        }

    def _restore(self, ckpt: dict[str, Any]) -> None:
        config, result, device = self.config, self.results[0], self.device
        if ckpt.get("version") != CHECKPOINT_VERSION or ckpt.get("trial_id") != config.trial_id():
            raise AblateError(f"checkpoint is for trial {ckpt.get('trial_id')} (version {ckpt.get('version')}), "
                              f"not {config.trial_id()}; delete it to rerun the trial from the start")
        self.model.restore(ckpt)
        self.shuffles[0].set_state(ckpt["generator"])
        if self.augment[0] is not None:
            self.augment[0].generator.set_state(ckpt["augment_generator"])
        step = self.steps = self.checked[0] = int(ckpt["step"])
        self.loss_buf[:step, 0] = ckpt["losses"].to(device)
        result.train_loss = ckpt["losses"].tolist()
        result.eval_steps, result.dev_acc, result.dev_loss = (list(ckpt[k]) for k in ("eval_steps", "dev_acc", "dev_loss"))
        result.best_dev_acc, result.best_step = ckpt["best_dev_acc"], ckpt["best_step"]
        result.segments = ckpt["segments"] + 1
        if self.model.telemetry is not None:
            self.model.telemetry[0].load_state(ckpt["telemetry"], device)
        best = ckpt["best_state"]
        # copies: a later best-dev snapshot is written into these tensors, never into the caller's checkpoint
        self.best[0] = None if best is None else {k: v.to(device, copy=True) for k, v in best.items()}
        self.order_epoch, self.seconds_before = ckpt["order_epoch"], ckpt["train_seconds"]
        self.total_before = ckpt["total_seconds"]
        self.orders = [ckpt["order"].to(device)] if ckpt["order"] is not None else []


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
    beat: Callable[[str, int], None] | None = None,
) -> TrialResult:
    """Train one model as `config` says (a TrainingLoop of one member).

    train_seconds and total_seconds of a continued trial add up all of its segments.

    `report(metrics)` is called after every dev evaluation; `progress(step, total)` after every step;
    `beat(phase, step)` after every step and every evaluation batch (the study's heartbeat).
    A loss that becomes NaN/inf ends the trial with status "diverged" instead of raising.
    With `stop_after_evals=k` the trial stops after its k-th evaluation (unless that is its last)
    with status "paused" and `result.checkpoint`; `run_trial(config, resume=checkpoint)` continues
    it, bit for bit as if it had never stopped (on the same device and thread count).
    With config.telemetry, result.grad_norms holds GradTelemetry rows for step 0 (the first
    batch's gradients, before any update) and every evaluation step (that step's gradients,
    before its update); telemetry only reads, so the training is the same with it off (except with
    config.compile: telemetry steps run eagerly, and eager and compiled kernels round differently).
    """
    return TrainingLoop([config], device=device, data_dir=data_dir, report=report, progress=progress,
                        keep_best_state=keep_best_state, stop_after_evals=stop_after_evals, resume=resume,
                        beat=beat).run()[0]
