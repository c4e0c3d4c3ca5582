"""One trial from one config: train, evaluate on dev, keep the best-dev weights, score on test.

Knows nothing of Ray or Optuna: the study engine passes a `report` callback.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from .errors import AblateError
from .telemetry import GradTelemetry

SCHEMA_VERSION = 1
STATUSES = ("ok", "diverged", "error")


@dataclass(frozen=True)
class TrialConfig:
    """Everything that decides what a trial computes; its hash names the trial."""

    # model
    family: str = "imagenet"
    depth: int = 18
    residual: bool = True
    shortcut: str = "projection"
    # optimiser (SGD)
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    # schedule
    batch_size: int = 64
    epochs: int = 5
    eval_every: int = 15
    # data
    dataset: str = "auto"
    train_size: int = 1000
    dev_size: int = 200
    test_size: int = 200
    image_size: int = 32
    data_seed: int = 0
    # execution
    seed: int = 100
    threads: int = 0  # 0: leave torch's default (all cores)
    channels_last: bool = True
    # per-layer gradient/weight norms and per-block output std at init and every evaluation (grad_norms.csv)
    telemetry: bool = True
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        from .data import DATASETS
        from .models import FAMILIES, SHORTCUTS

        if self.family not in FAMILIES:
            raise AblateError(f"unknown family {self.family!r}; valid families: {', '.join(FAMILIES)}")
        if self.depth not in FAMILIES[self.family]:
            valid = ", ".join(str(d) for d in FAMILIES[self.family])
            raise AblateError(f"unknown depth {self.depth} for family {self.family!r}; valid depths: {valid}")
        if self.shortcut not in SHORTCUTS:
            raise AblateError(f"unknown shortcut {self.shortcut!r}; valid shortcuts: {', '.join(SHORTCUTS)}")
        if self.dataset not in DATASETS:
            raise AblateError(f"unknown dataset {self.dataset!r}; valid datasets: {', '.join(DATASETS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise AblateError(f"lr must be a positive number, got {self.lr}")
        for name in ("batch_size", "epochs", "eval_every", "train_size", "dev_size", "test_size"):
            if getattr(self, name) <= 0:
                raise AblateError(f"{name} must be positive, got {getattr(self, name)}")
        if self.momentum < 0 or self.momentum >= 1:
            raise AblateError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise AblateError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.image_size < 8:
            raise AblateError(f"image_size must be at least 8, got {self.image_size}")
        if self.threads < 0:
            raise AblateError(f"threads must be >= 0 (0 = all cores), got {self.threads}")
        if self.schema > SCHEMA_VERSION:
            raise AblateError(
                f"config schema {self.schema} is newer than this toolkit's ({SCHEMA_VERSION}); upgrade ablate"
            )

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> "TrialConfig":
        if not isinstance(data, dict):
            raise AblateError(f"{source}: expected a mapping of trial settings, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise AblateError(f"{source}: unknown setting(s) {', '.join(map(str, unknown))}; valid: {', '.join(known)}")
        values = {}
        for key, value in data.items():
            values[key] = _coerce(key, value, type(getattr(cls, key)), source)
        return cls(**values)

    def replace(self, **changes: Any) -> "TrialConfig":
        return self.from_dict({**self.to_dict(), **changes})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml_file(cls, path: str | os.PathLike) -> "TrialConfig":
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except OSError as exc:
            raise AblateError(f"cannot read config {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise AblateError(f"config {path} is not UTF-8 text; pass a YAML file such as a trial's config.yaml") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise AblateError(f"malformed YAML in {path}{where}: {getattr(exc, 'problem', exc)}") from None
        return cls.from_dict(data, source=str(path))

    def trial_id(self) -> str:
        """Short hash of the full config: equal configs share one id, so finished trials can be skipped."""
        data = self.to_dict()
        # Settings added after schema 1 stay out of the hash at their default, so a config written
        # before they existed keeps its id: old run folders resume and reproduce under their names.
        for key, default in _HASH_NEUTRAL_DEFAULTS.items():
            if data[key] == default:
                del data[key]
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


_HASH_NEUTRAL_DEFAULTS = {"telemetry": True}


def _coerce(key: str, value: Any, kind: type, source: str) -> Any:
    # YAML writes 1e-3 as a string under YAML 1.1 rules and 5 for 5.0; accept those, refuse the rest.
    ok = False
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value, ok = float(value), True
    elif kind is str:
        ok = isinstance(value, str)
    if not ok:
        raise AblateError(f"{source}: {key} must be {kind.__name__}, got {value!r}")
    return value


@dataclass
class TrialResult:
    status: str
    dataset: str
    device: str
    threads: int
    best_dev_acc: float
    best_step: int
    test_acc: float
    test_loss: float
    final_train_loss: float
    train_seconds: float
    total_seconds: float
    steps: int
    train_loss: list[float] = field(default_factory=list)  # one per step, step = index + 1
    eval_steps: list[int] = field(default_factory=list)
    dev_loss: list[float] = field(default_factory=list)
    dev_acc: list[float] = field(default_factory=list)
    error: str | None = None
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    # Tidy rows of grad_norms.csv (see GRAD_NORM_COLUMNS); empty when telemetry is off.
    grad_norms: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def metrics(self) -> dict[str, Any]:
        """Scalars for metrics.json / trials.csv (curves are written separately)."""
        skip = {"train_loss", "eval_steps", "dev_loss", "dev_acc", "best_state", "grad_norms"}
        # Reading fields directly instead of dataclasses.asdict: asdict would deep-copy the curves
        # and telemetry rows only to throw them away.
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _evaluate(model, split, device, memory_format, batch: int = 500) -> tuple[float, float]:
    model.eval()
    total_loss, correct, n = 0.0, 0, split.y.numel()
    with torch.inference_mode():
        for start in range(0, n, batch):
            x = split.x[start : start + batch].to(device, memory_format=memory_format)
            y = split.y[start : start + batch].to(device)
            logits = model(x)
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    model.train()
    return correct / n, total_loss / n


def run_trial(
    config: TrialConfig,
    report: Callable[[dict[str, Any]], None] | None = None,
    *,
    device: str | torch.device | None = None,
    data_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
    keep_best_state: bool = False,
) -> TrialResult:
    """Train one model as `config` says.

    `report(metrics)` is called after every dev evaluation; `progress(step, total)` after every step.
    A loss that becomes NaN/inf ends the trial with status "diverged" instead of raising.
    With config.telemetry, result.grad_norms holds GradTelemetry rows for step 0 (the first
    batch's gradients, before any update) and every evaluation step (that step's gradients,
    before its update); telemetry only reads, so the training is the same with it off.
    """
    from .data import load_splits
    from .models import build_model

    t_start = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    splits = load_splits(
        config.dataset, data_dir, config.train_size, config.dev_size, config.test_size,
        seed=config.data_seed, image_size=config.image_size,
    )
    seed_everything(config.seed)
    model = build_model(
        config.family, config.depth, residual=config.residual, shortcut=config.shortcut,
        in_channels=splits.in_channels, num_classes=splits.num_classes,
    )
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    train_x = splits.train.x.to(device, memory_format=memory_format)
    train_y = splits.train.y.to(device)
    n = train_y.numel()
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    shuffle = torch.Generator().manual_seed(config.seed)
    # Losses stay on the device until an evaluation so the step never waits for a host sync.
    loss_buf = torch.zeros(total_steps, device=device)

    result = TrialResult(
        status="ok", dataset=splits.dataset, device=str(device), threads=torch.get_num_threads(),
        best_dev_acc=-1.0, best_step=0, test_acc=float("nan"), test_loss=float("nan"),
        final_train_loss=float("nan"), train_seconds=0.0, total_seconds=0.0, steps=0,
    )
    best_state = None
    telemetry = GradTelemetry(model) if config.telemetry else None
    step = checked = 0

    def evaluates(after: int) -> bool:  # dev evaluation (and a telemetry record) after this many steps
        return after % config.eval_every == 0 or after == total_steps

    t_train = time.perf_counter()
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=shuffle).to(device)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            # Telemetry labels: 0 is the first batch's gradients (initialisation), then every evaluation step.
            labels: tuple[int, ...] = ()
            if telemetry is not None:
                if step == 0:
                    labels += (0,)
                if evaluates(step + 1):
                    labels += (step + 1,)
            if labels:
                telemetry.arm()
                try:
                    logits = model(train_x[idx])
                finally:
                    telemetry.disarm()
            else:
                logits = model(train_x[idx])
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
            if not evaluates(step):
                continue
            seen = loss_buf[:step].tolist()
            result.train_loss = seen
            if not all(math.isfinite(v) for v in seen[checked:]):
                result.status = "diverged"
                break
            checked = step
            dev_acc, dev_loss = _evaluate(model, splits.dev, device, memory_format)
            result.eval_steps.append(step)
            result.dev_acc.append(dev_acc)
            result.dev_loss.append(dev_loss)
            if dev_acc > result.best_dev_acc:
                result.best_dev_acc, result.best_step = dev_acc, step
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if report is not None:
                report({
                    "step": step, "epoch": epoch + 1, "train_loss": seen[-1], "dev_loss": dev_loss,
                    "dev_acc": dev_acc, "best_dev_acc": result.best_dev_acc,
                })
        if result.status != "ok":
            break
    result.steps = step
    result.train_seconds = time.perf_counter() - t_train
    if telemetry is not None:
        result.grad_norms = telemetry.rows()
    if result.train_loss:
        result.final_train_loss = float(np.mean(result.train_loss[-steps_per_epoch:]))
    if result.status == "ok" and best_state is not None:
        model.load_state_dict(best_state)
        result.test_acc, result.test_loss = _evaluate(model, splits.test, device, memory_format)
    result.best_dev_acc = max(result.best_dev_acc, 0.0)
    if keep_best_state and best_state is not None:
        result.best_state = {k: v.cpu() for k, v in best_state.items()}
    result.total_seconds = time.perf_counter() - t_start
    return result

