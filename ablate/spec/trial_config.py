"""The trial config: everything that decides what a trial computes, validated, serialised and hashed.

Imports neither torch nor Ray, so specs can be read and planned cheaply.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import yaml

from ablate.data import DATASETS, check_dataset, is_user_data, may_mirror, no_flip
from ablate.errors import AblateError
from ablate.models import FACTORY_INPUTS, MODEL_AXES, ModelSpec, coerce_stages
from ablate.spec.limits import (MAX_IMAGE_SIZE, MAX_IMAGES, MAX_LR, MAX_STEPS, MAX_THREADS, MAX_WEIGHT_DECAY, check_config,
                                check_most)

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Setting:
    """What ablate knows of one trial setting besides its default: what `train --help` says of it, its flag, its
    upper bound, and whether its default stays out of the trial id. The model axes carry the registry's Axis
    instead (ablate.models.registry), which says the same of them (help, flag, default_text, neutral)."""

    help: str  # what it sets, for --help (the default is added there)
    neutral: bool = False  # its default stays out of the trial id (settings added after schema 1)
    flag: str | None = None  # its command-line flag(s) when not --<name-with-dashes> (--x/--no-x for true/false)
    default_text: str | None = None  # what --help says of the default, when not the value itself
    most: int | float | None = None  # the largest value (ablate.spec.limits says why), checked before anything else
    # How a flag's text becomes the value, for a setting that is no single number or word (milestones: 0.5,0.75);
    # called with the text and the flag, it raises AblateError naming the flag.
    from_text: Callable[[str, str], Any] | None = None
    cli: bool = True  # False: no `train` flag (what the config file records of itself, not a setting)


def setting(default: Any, help: str, **meta: Any) -> Any:
    """A TrialConfig field: its default, with its Setting as metadata."""
    return field(default=default, metadata={"setting": Setting(help, **meta)})


def fractions(text: str, flag: str) -> tuple[float, ...]:
    """'0.5,0.75' -> (0.5, 0.75); the config checks the values."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise AblateError(f"{flag} must be comma-separated numbers such as 0.5,0.75, got {text!r}") from None


@dataclass(frozen=True)
class TrialConfig(ModelSpec):
    """Everything that decides what a trial computes; its hash names the trial.

    The model axes are ModelSpec's fields (ablate.models.registry), at the top level of the YAML as they always
    were; `model` is them alone, the frozen ModelSpec that build_model takes. Every other setting is a field made by
    `setting(...)`: its metadata gives `train` its flag and help (ablate.cli.trial_options), its upper bound, and
    whether its default stays out of the trial id. Adding a setting: a field here with its metadata (neutral=True,
    so that the ids of existing trials hold), its check in validate, what it does, and a test."""

    # optimiser (SGD)
    lr: float = setting(0.01, "SGD learning rate", most=MAX_LR)
    momentum: float = setting(0.0, "SGD momentum")
    weight_decay: float = setting(0.0, "SGD weight decay", most=MAX_WEIGHT_DECAY)
    # schedule
    batch_size: int = setting(64, "Mini-batch size", most=MAX_IMAGES)
    epochs: int = setting(5, "Training epochs", most=MAX_STEPS)
    eval_every: int = setting(15, "Evaluate on dev every N steps", most=MAX_STEPS)
    # data
    dataset: str = setting("auto", ", ".join(DATASETS[:-1]) + ", folder:PATH (PATH/train/<class>/*.png|jpg, "
                                   "PATH/test/<class>/...), or a data loader of yours: MODULE:FUNCTION or "
                                   "FILE.py:FUNCTION")
    train_size: int = setting(1000, "Training images", most=MAX_IMAGES)
    dev_size: int = setting(200, "Dev images (from the training split)", most=MAX_IMAGES)
    test_size: int = setting(200, "Test images (from the test split)", most=MAX_IMAGES)
    image_size: int = setting(32, "Height and width the images are resized to, in pixels", most=MAX_IMAGE_SIZE)
    data_seed: int = setting(0, "Seed of the subset draw")
    # execution
    seed: int = setting(100, "Training seed (init, shuffling)")
    threads: int = setting(0, "Torch threads (0 = all cores)", most=MAX_THREADS)
    channels_last: bool = setting(True, "Train in the channels-last memory format (NHWC) instead of NCHW")
    # per-layer gradient/weight norms and per-block output std at init and every evaluation (grad_norms.csv)
    telemetry: bool = setting(True, "Record per-layer gradient and weight norms and per-block output std at "
                                    "initialisation and every evaluation (grad_norms.csv)", neutral=True)
    schema: int = setting(SCHEMA_VERSION, "The config format's version", cli=False)
    # training recipe (at their defaults these stay out of the trial id)
    schedule: str = setting("constant", "Learning rate over training: constant, step (times --milestone-factor at "
                                        "each milestone) or cosine (to zero)", neutral=True)  # see learning_rate
    warmup_steps: int = setting(0, "Ramp the learning rate linearly up to --lr over the first N steps", neutral=True,
                                most=MAX_STEPS)
    milestones: tuple[float, ...] = setting(
        (0.5, 0.75), "Step schedule: fractions of training at which the learning rate drops, comma-separated",
        neutral=True, default_text="0.5,0.75", from_text=fractions)
    milestone_factor: float = setting(0.1, "Step schedule: factor applied at each milestone", neutral=True)
    nesterov: bool = setting(False, "Nesterov momentum (needs --momentum > 0)", neutral=True)
    augment: str = setting("none", "On-device augmentation drawn from the seed: none, crop (random crop after padding "
                                   "by 4 black pixels) or crop-flip (and mirror left-right). Never flip digits or "
                                   "characters: a mirrored 2 is no digit, so crop-flip is refused with "
                                   f"{', '.join(no_flip())}", neutral=True)
    # how the training steps execute (ablate.train.forward; at their defaults these stay out of the trial id too)
    precision: str = setting("fp32", "Training forward passes in fp32 or bf16 (autocast)", neutral=True)
    compile: str = setting("none", "torch.compile the model for training: none, default or reduce-overhead (CUDA "
                                   "graphs)", neutral=True)
    # a user's network (the spec's `model`, ablate.spec.user_ref): its reference, its source file and that file's
    # SHA-256, and the axes its factory is called with. Empty: the shipped ResNet of the model axes above. With a
    # factory the model axes are unused (left out of config.yaml and the trial id) and every setting that is not
    # ablate's own is an axis; factory_file is where this machine found the source, never part of the trial id.
    factory: str = setting("", "The user's model factory (the spec's model)", neutral=True, cli=False)
    factory_file: str = setting("", "Where the factory's source file was found", neutral=True, cli=False)
    factory_sha256: str = setting("", "SHA-256 of the factory's source file", neutral=True, cli=False)
    axes: tuple = setting((), "The factory's keyword arguments besides in_channels, num_classes and image_size",
                          neutral=True, cli=False)
    # a user's data loader (dataset MODULE:FUNCTION or FILE.py:FUNCTION, ablate.data.user_data): where its source file
    # was found (never part of the trial id) and that file's SHA-256. Empty for the shipped datasets and folders.
    data_file: str = setting("", "Where the data loader's source file was found", neutral=True, cli=False)
    data_sha256: str = setting("", "SHA-256 of the data loader's source file", neutral=True, cli=False)

    def __post_init__(self) -> None:
        if isinstance(self.milestones, list):  # hashable, as a frozen config must be
            object.__setattr__(self, "milestones", tuple(self.milestones))
        if isinstance(self.axes, dict):
            object.__setattr__(self, "axes", tuple(sorted(self.axes.items(), key=lambda item: str(item[0]))))
        self.validate()

    def validate(self) -> None:
        for f in fields(self):  # the upper bounds first: nothing below counts batches of a train_size of 10^20
            meta = f.metadata.get("setting")
            if meta is not None and meta.most is not None:
                check_most(f.name, getattr(self, f.name), meta.most)
        check_config(self)  # the seeds, and the steps the sizes make
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
        self._validate_factory()
        self._validate_data()

    def _validate_data(self) -> None:
        if not is_user_data(self.dataset):
            if self.data_file or self.data_sha256:
                raise AblateError(f"data_file and data_sha256 belong to a data loader of the user's, not to dataset "
                                  f"{self.dataset}")
            return
        if not (len(self.data_sha256) == 64 and all(c in "0123456789abcdef" for c in self.data_sha256)) \
                or not self.data_file:
            raise AblateError(f"dataset {self.dataset} is a data loader: it needs data_file and data_sha256 (its source "
                              "file and that file's SHA-256), which a spec's base.dataset or the --dataset flag "
                              "records; a loader cannot be an arm's, a factor's or a search's value")

    def _validate_factory(self) -> None:
        if not self.factory:
            if self.axes or self.factory_file or self.factory_sha256:
                raise AblateError("axes, factory_file and factory_sha256 belong to a user model: set factory too")
            return
        if not (len(self.factory_sha256) == 64 and all(c in "0123456789abcdef" for c in self.factory_sha256)):
            raise AblateError(f"factory_sha256 must be the SHA-256 of the factory's source file, got "
                              f"{self.factory_sha256!r}")
        if not self.factory_file:
            raise AblateError(f"factory {self.factory} needs factory_file, the path of its source")
        for name, value in self.axes:
            if not isinstance(name, str) or not name.isidentifier() or name in FACTORY_INPUTS or name in OWN_SETTINGS:
                raise AblateError(f"{name!r} cannot be an axis of model factory {self.factory} (an axis is a keyword "
                                  f"argument name; {', '.join(FACTORY_INPUTS)} are ablate's)")
            if not (value is None or isinstance(value, (bool, int, float, str))):
                raise AblateError(f"axis {name} of model factory {self.factory} must be a number, text, true/false "
                                  f"or null, got {value!r}")

    # --- the model -----------------------------------------------------------------------------
    def model_key(self) -> str:
        """A short string that identifies the network, for caches and grouping: ModelSpec.key() for the shipped
        ResNet; the factory, its source hash and its axes for a user's."""
        if not self.factory:
            return self.model.key()
        axes = " ".join(f"{k}={v}" for k, v in self.axes)
        return f"{self.factory}@{self.factory_sha256[:12]}" + (f" {axes}" if axes else "")

    def settings(self) -> dict[str, Any]:
        """The config as one flat mapping of setting to value, as a spec writes them: a user model's axes beside
        ablate's own settings (config.yaml nests them under axes). from_dict reads it back."""
        data = self.to_dict()
        return {**{k: v for k, v in data.items() if k != "axes"}, **data["axes"]}

    def _validate_recipe(self) -> None:
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
        # Every field is a number, a string, a bool or a tuple (of numbers, or of axis name/value pairs), so a
        # shallow copy is what dataclasses.asdict would make, at a tenth of its cost (the planner hashes hundreds of
        # configs a registration).
        data = {name: getattr(self, name) for name in _field_names(type(self))}
        if data["residual_stages"] is not None:
            data["residual_stages"] = list(data["residual_stages"])  # YAML and JSON write lists
        data["axes"] = dict(self.axes)
        if self.factory:  # the ResNet's axes do not describe a user's network
            data = {k: v for k, v in data.items() if k not in MODEL_AXES}
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> "TrialConfig":
        if not isinstance(data, dict):
            raise AblateError(f"{source}: expected a mapping of trial settings, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        if data.get("factory"):
            data = _user_axes(data, source)
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise AblateError(f"{source}: unknown setting(s) {', '.join(map(str, unknown))}; valid: {', '.join(known)}")
        values = {}
        for key, value in data.items():
            if key == "axes" and not isinstance(value, dict):
                raise AblateError(f"{source}: axes must be a mapping of a model factory's keyword arguments, got "
                                  f"{value!r}")
            values[key] = value if key == "axes" else _coerce(key, value, type(getattr(cls, key)), source)
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
        """Short hash of the full config: equal configs share one id, so finished trials can be skipped. Computed
        once per config (a frozen one never changes; the planner asks for each id many times a registration)."""
        known = self.__dict__.get("_trial_id")
        if known is None:
            known = self._hash_id()
            object.__setattr__(self, "_trial_id", known)
        return known

    def _hash_id(self) -> str:
        data = self.to_dict()
        # Settings added after schema 1 stay out of the hash at their default, so a config written
        # before they existed keeps its id: old run folders resume and reproduce under their names.
        for key, default in id_neutral_defaults(type(self)).items():
            if key in data and (data[key] == default or (key == "axes" and not data[key])):
                del data[key]
        data.pop("factory_file", None)  # where this machine keeps the source: the hash names what it is
        data.pop("data_file", None)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _user_axes(data: dict[str, Any], source: str) -> dict[str, Any]:
    """A user model's settings: ablate's own stay; every other name (the model axes' names among them: residual,
    depth) is an axis the factory is called with. config.yaml nests the axes under `axes`; a flat mapping (a spec's
    merged settings, TrialConfig.settings) holds them beside the rest, and those win."""
    axes = data.get("axes") or {}
    if isinstance(axes, (list, tuple)):
        axes = dict(axes)
    if not isinstance(axes, dict):
        raise AblateError(f"{source}: axes must be a mapping of the model factory's keyword arguments, got {axes!r}")
    own = {k: v for k, v in data.items() if k in OWN_SETTINGS or k in FACTORY_FIELDS}
    flat = {k: v for k, v in data.items() if k not in own}
    return {**own, "axes": {**axes, **flat}}


SCHEDULES = ("constant", "step", "cosine")
AUGMENTS = ("none", "crop", "crop-flip")
PRECISIONS = ("fp32", "bf16")
COMPILES = ("none", "default", "reduce-overhead")


def setting_meta(f: dataclasses.Field) -> Any:
    """A TrialConfig field's metadata: its Setting, or for a model axis the registry's Axis; both say `help`, `flag`,
    `default_text` and `neutral`."""
    return f.metadata.get("setting") or f.metadata["axis"]


def _defaults(*names: str) -> dict[str, Any]:
    return {f.name: f.default for f in fields(TrialConfig) if f.name in names}


RECIPE_DEFAULTS = _defaults("schedule", "warmup_steps", "milestones", "milestone_factor", "nesterov", "augment")
EXECUTION_DEFAULTS = _defaults("precision", "compile")


@functools.cache
def id_neutral_defaults(config: type = TrialConfig) -> dict[str, Any]:
    """The settings added after schema 1, the model axes' among them, with the defaults at which they stay out of
    the trial id (their metadata's `neutral`)."""
    return {f.name: f.default for f in fields(config) if setting_meta(f).neutral}


_HASH_NEUTRAL_DEFAULTS = id_neutral_defaults(TrialConfig)
FACTORY_FIELDS = ("factory", "factory_file", "factory_sha256", "axes")  # set by the spec's `model`, not by name
DATA_FIELDS = ("data_file", "data_sha256")  # set by a data loader's reference (the spec's dataset), not by name
# ablate's own settings: what a user model's factory never receives (the model axes and the factory's fields aside)
OWN_SETTINGS = frozenset(f.name for f in fields(TrialConfig)) - set(MODEL_AXES) - set(FACTORY_FIELDS)


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
