"""The trial config: everything that decides what a trial computes, validated, serialised and hashed.

Imports neither torch nor Ray, so specs can be read and planned cheaply.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, fields
from typing import Any

import yaml

from ablate.errors import AblateError
from ablate.models.registry import ModelSpec, coerce_stages, neutral_defaults

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TrialConfig(ModelSpec):
    """Everything that decides what a trial computes; its hash names the trial.

    The model axes are ModelSpec's fields (ablate.models.registry), at the top level of the YAML as they always
    were; `model` is them alone, the frozen ModelSpec that build_model takes."""

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
    # training recipe (at their defaults these stay out of the trial id: see _HASH_NEUTRAL_DEFAULTS)
    schedule: str = "constant"  # learning rate over training: constant | step | cosine (see learning_rate)
    warmup_steps: int = 0  # the first N steps ramp the learning rate linearly up to lr
    milestones: tuple[float, ...] = (0.5, 0.75)  # step schedule: fractions of training at which the lr drops
    milestone_factor: float = 0.1  # step schedule: what the lr is multiplied by at each milestone
    nesterov: bool = False  # Nesterov momentum (needs momentum > 0)
    augment: str = "none"  # none | crop (4-pixel padded random crop) | crop-flip (and horizontal flip)
    # how the training steps execute (ablate.train.forward; at their defaults these stay out of the trial id too)
    precision: str = "fp32"  # fp32 | bf16 (training forward passes under torch.autocast to bfloat16)
    compile: str = "none"  # none | default | reduce-overhead (torch.compile of the model for training steps)

    def __post_init__(self) -> None:
        if isinstance(self.milestones, list):  # hashable, as a frozen config must be
            object.__setattr__(self, "milestones", tuple(self.milestones))
        self.validate()

    def validate(self) -> None:
        from ablate.data.registry import check_dataset
        from ablate.spec.limits import check_config

        check_config(self)  # the upper bounds first: nothing below counts batches of a train_size of 10^20
        super().validate()  # the model axes
        check_dataset(self.dataset)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise AblateError(f"{f.name} must be a finite number, got {value}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise AblateError(f"lr must be a positive number, got {self.lr}")
        for name in ("batch_size", "epochs", "eval_every", "train_size", "dev_size", "test_size"):
            if getattr(self, name) <= 0:
                raise AblateError(f"{name} must be positive, got {getattr(self, name)}")
        if self.train_size < 2 or self.batch_size < 2:
            raise AblateError(f"batch_size and train_size must be at least 2 (BatchNorm trains on batches of 2 or more "
                              f"images), got batch_size {self.batch_size}, train_size {self.train_size}")
        if self.batch_size > self.train_size:
            raise AblateError(f"batch_size {self.batch_size:,} is more than train_size {self.train_size:,}: a batch "
                              f"cannot hold more images than the training subset (every step would train on all "
                              f"{self.train_size:,}); set batch_size to at most {self.train_size:,} (equal to it trains "
                              "full-batch)")
        if self.momentum < 0 or self.momentum >= 1:
            raise AblateError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise AblateError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.image_size < 8:
            raise AblateError(f"image_size must be at least 8, got {self.image_size}")
        if self.threads < 0:
            raise AblateError(f"threads must be >= 0 (0 = all cores), got {self.threads}")
        self._validate_recipe()
        if self.precision not in PRECISIONS:
            raise AblateError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.compile not in COMPILES:
            raise AblateError(f"unknown compile {self.compile!r}; valid: {', '.join(COMPILES)}")
        if self.schema > SCHEMA_VERSION:
            raise AblateError(
                f"config schema {self.schema} is newer than this toolkit's ({SCHEMA_VERSION}); upgrade ablate"
            )

    def _validate_recipe(self) -> None:
        from ablate.data.registry import may_mirror

        if self.schedule not in SCHEDULES:
            raise AblateError(f"unknown schedule {self.schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
        if self.augment not in AUGMENTS:
            raise AblateError(f"unknown augment {self.augment!r}; valid: {', '.join(AUGMENTS)}")
        if self.augment == "crop-flip" and not may_mirror(self.dataset):
            raise AblateError(f"augment crop-flip mirrors images, and a mirrored digit or character is not the same "
                              f"class; use augment crop (or none) with dataset {self.dataset}")
        if self.nesterov and self.momentum <= 0:
            raise AblateError("nesterov needs momentum > 0; set momentum (e.g. 0.9) or drop nesterov")
        if self.warmup_steps < 0 or self.warmup_steps >= self.total_steps():
            raise AblateError(f"warmup_steps must be from 0 to fewer than the trial's {self.total_steps()} steps, "
                              f"got {self.warmup_steps}")
        m = self.milestones
        if not (m and all(isinstance(v, float) and 0 < v < 1 for v in m) and list(m) == sorted(set(m))):
            raise AblateError(f"milestones must be increasing fractions of training strictly between 0 and 1, such as "
                              f"[0.5, 0.75], got {list(m)}")
        if not self.milestone_factor > 0:
            raise AblateError(f"milestone_factor must be a positive number, got {self.milestone_factor}")

    # --- the training schedule, known without loading any data -----------------------------------
    def batches(self) -> list[tuple[int, int]]:
        """(start, end) of each mini-batch of an epoch over the train_size shuffled images.

        BatchNorm cannot train on a batch of one image, so a last batch of one is folded into the
        batch before it (65 images at batch 64 train as one batch of 65).
        """
        n, b = self.train_size, self.batch_size
        bounds = [(s, min(s + b, n)) for s in range(0, n, b)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
            bounds[-2:] = [(bounds[-2][0], n)]
        return bounds

    def total_steps(self) -> int:
        n, b = self.train_size, self.batch_size  # len(self.batches()), without listing them
        return (-(-n // b) - (n > b and n % b == 1)) * self.epochs

    def evaluation_steps(self) -> list[int]:
        """Steps after which the dev set is evaluated: every eval_every steps and after the last one."""
        total = self.total_steps()
        steps = list(range(self.eval_every, total + 1, self.eval_every))
        return steps if steps and steps[-1] == total else [*steps, total]

    def learning_rate(self, step: int) -> float:
        """The learning rate of update `step` (1 .. total_steps, as in curves.csv).

        constant: lr. step: lr times milestone_factor for every milestone m with step > round(m * total_steps)
        (He et al.'s /10 "at 32k iterations" of 64k: update 32,001 on). cosine: lr * (1 + cos(pi * p)) / 2, p
        going from 0 at the first update after warm-up to (n - 1) / n at the last of its n updates. Warm-up
        multiplies the first warmup_steps updates by step / warmup_steps.
        """
        total, warm = self.total_steps(), self.warmup_steps
        rate = self.lr
        if self.schedule == "step":
            rate *= self.milestone_factor ** sum(step > round(m * total) for m in self.milestones)
        elif self.schedule == "cosine" and step > warm:
            rate *= (1 + math.cos(math.pi * (step - 1 - warm) / (total - warm))) / 2
        if step <= warm:
            rate *= step / warm
        return rate

    def learning_rates(self) -> list[float] | None:
        """The learning rate of every update (index step - 1); None when it never changes from lr."""
        if self.schedule == "constant" and not self.warmup_steps:
            return None
        return [self.learning_rate(step) for step in range(1, self.total_steps() + 1)]

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["residual_stages"] is not None:
            data["residual_stages"] = list(data["residual_stages"])  # YAML and JSON write lists
        return data

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
        from ablate.spec.reading import load_yaml, read_text

        try:
            data = load_yaml(read_text(path), str(path))
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


SCHEDULES = ("constant", "step", "cosine")
AUGMENTS = ("none", "crop", "crop-flip")
RECIPE_DEFAULTS = {"schedule": "constant", "warmup_steps": 0, "milestones": (0.5, 0.75), "milestone_factor": 0.1,
                   "nesterov": False, "augment": "none"}
PRECISIONS = ("fp32", "bf16")
COMPILES = ("none", "default", "reduce-overhead")
EXECUTION_DEFAULTS = {"precision": "fp32", "compile": "none"}
# Settings added after schema 1 (the model axes' own from ModelSpec's metadata): out of the id at these defaults.
_HASH_NEUTRAL_DEFAULTS = {"telemetry": True, **neutral_defaults(), **RECIPE_DEFAULTS, **EXECUTION_DEFAULTS}


def _coerce(key: str, value: Any, kind: type, source: str) -> Any:
    # A number is a number, never text: lr: "0.1" is refused (spec and config files read 1e-3 as a number:
    # ablate.spec.reading). A whole number stands for a float setting (YAML writes 5 for 5.0).
    if key == "residual_stages":
        return coerce_stages(value, source)
    ok = False
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        if isinstance(value, str):
            raise AblateError(f"{source}: {key} must be a number, got the text {value!r}; write the number without "
                              f"quotes (e.g. {key}: {getattr(TrialConfig, key)})")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value, ok = float(value), True
    elif kind is str:
        ok = isinstance(value, str)
    elif kind is tuple:  # a list of numbers (YAML writes a tuple as a list)
        if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                     for v in value):
            value, ok = tuple(float(v) for v in value), True
        kind = list
    if not ok:
        raise AblateError(f"{source}: {key} must be {kind.__name__}, got {value!r}")
    return value


FUSABLE = ("seed", "lr", "momentum", "weight_decay")  # what may differ between members of one fused trial


def fusable(configs: list[TrialConfig]) -> str | None:
    """Why these trials cannot be fused (None: they can). Fused members train through the shared training loop
    (ablate.train.loop), so schedules, warm-up, Nesterov and augmentation fuse like anything else. What cannot:
    torch.compile (the vmapped model is never compiled), bf16 (torch.autocast does not reach operations under
    torch.func.vmap: measured with torch 2.14, a vmapped convolution under autocast runs in fp32, so fused "bf16"
    members would silently train in fp32; tests/test_fused.py checks this), and trials that differ in anything
    but FUSABLE."""
    if len(configs) < 2:
        return "fusing needs at least 2 trials"
    first = configs[0]
    execution = [f"{key} {getattr(first, key)}" for key, default in EXECUTION_DEFAULTS.items()
                 if getattr(first, key) != default]
    if execution:
        return f"fused training runs in fp32 without torch.compile (autocast does not reach vmapped operations), and " \
               f"these trials set {', '.join(execution)}"
    for cfg in configs[1:]:  # attributes, not to_dict() (which writes residual_stages as a list)
        other = [f.name for f in fields(cfg) if f.name not in FUSABLE and getattr(cfg, f.name) != getattr(first, f.name)]
        if other:
            return f"the trials differ in {', '.join(other)} (only {', '.join(FUSABLE)} may differ)"
    if len({c.trial_id() for c in configs}) < len(configs):
        return "a trial appears twice"
    return None
