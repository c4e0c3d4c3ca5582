"""The model registry: `ModelSpec`, the frozen set of model axes that names one architecture, with each axis's
metadata (help text, valid names, whether its default stays out of the trial id, its command-line flag), the
checks of which combinations are valid, `key()` (a short identifier for caches and grouping) and `describe()`
(the one wording reports use). Imports no torch, so specs can be checked and described without it.

Adding a model axis: a field here (with `axis(...)` metadata and, for a named choice, a small table of names and
their words), the module table in ablate/models/resnet.py that builds it, and a test. The trial config inherits
the field (its YAML key, its check, a trial id unchanged at its default), and `train` and `summary` get its flag.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from ablate.errors import AblateError


# What ablate passes a user's model factory besides its axes (ablate.models.factory), each where it declares it.
FACTORY_INPUTS = ("in_channels", "num_classes", "image_size")
FAMILIES: dict[str, tuple[int, ...]] = {"imagenet": (10, 18, 34), "cifar": (20, 32, 44, 56, 110)}
DEFAULT_DEPTH = {"imagenet": 18, "cifar": 20}  # a family's depth when none is given
STAGES = {"imagenet": 4, "cifar": 3}
FAMILY_TITLES = {"imagenet": "ResNet-{depth}", "cifar": "CIFAR-style ResNet-{depth}"}
# The named choices of the axes: name -> the words reports use for it.
SHORTCUTS = {"projection": "projection shortcuts", "identity": "identity shortcuts",
             "projection-all": "projection shortcuts on every block"}
BLOCKS = {"basic": "basic blocks", "preact": "pre-activation blocks"}
NORMS = {"batch": "BatchNorm", "none": "no normalisation"}
ACTIVATIONS = {"relu": "ReLU", "gelu": "GELU"}


@dataclass(frozen=True)
class Axis:
    """What the registry knows of one model axis besides its default."""

    help: str  # what it sets, for --help (the default is added there)
    names: Mapping[str, str] | None = None  # the valid names and their words in reports; None: not a named choice
    neutral: bool = False  # its default stays out of the trial id (axes added after schema 1)
    flag: str | None = None  # its command-line flag(s) when not --<name-with-dashes>, e.g. "--residual/--plain"
    default_text: str | None = None  # what --help says of the default, when not the value itself
    words: Mapping[Any, str] | None = None  # a true/false axis's words for each value

    def flags(self, name: str) -> str:
        return self.flag or "--" + name.replace("_", "-")


def axis(default: Any, help: str, **meta: Any) -> Any:
    """A ModelSpec field: its default, with its Axis as metadata."""
    return field(default=default, metadata={"axis": Axis(help, **meta)})


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


@dataclass(frozen=True)
class ModelSpec:
    """One architecture: every model axis. Checked when made; build it with ablate.models.resnet.build_model."""

    family: str = axis("imagenet", "Model family: imagenet (reference layout) or cifar", names=FAMILIES)
    depth: int = axis(18, f"Network depth (imagenet: {'/'.join(map(str, FAMILIES['imagenet']))}, cifar: "
                          f"{'/'.join(map(str, FAMILIES['cifar']))})",
                      default_text="18 for imagenet, 20 for cifar")
    residual: bool = axis(True, "With or without residual connections", flag="--residual/--plain",
                          words={True: "residual", False: "plain"})
    shortcut: str = axis("projection", "projection (1x1 conv + BN where a block reshapes), identity (parameter-free) "
                                       "or projection-all (1x1 conv + BN on every block)", names=SHORTCUTS)
    # Axes added after schema 1: at their defaults they stay out of the trial id, so old ids hold.
    block: str = axis("basic", "basic (post-activation) or preact (full pre-activation)", names=BLOCKS, neutral=True)
    residual_stages: tuple[int, ...] | None = axis(
        None, "Stages that keep residual connections, e.g. 3,4", neutral=True, default_text="all")
    norm: str = axis("batch", "batch (BatchNorm) or none", names=NORMS, neutral=True)
    zero_init_residual: bool = axis(False, "Start each residual branch's last BN scale at 0", neutral=True,
                                    flag="--zero-init-residual/--no-zero-init-residual",
                                    words={True: "zero-init residual branches", False: "no zero-init"})
    activation: str = axis("relu", "relu or gelu: every activation of the network (stem, blocks, after each "
                                   "addition, the pre-activation net's last BN)", names=ACTIVATIONS, neutral=True)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse an unknown or contradictory combination of axes, in one line; residual_stages becomes a sorted
        tuple ([4, 3] and [3, 4] are one model with one id)."""
        if not isinstance(self.family, str) or self.family not in FAMILIES:
            raise AblateError(f"unknown family {self.family!r}; valid families: {_join(FAMILIES)}")
        if not isinstance(self.depth, int) or isinstance(self.depth, bool) or self.depth not in FAMILIES[self.family]:
            raise AblateError(f"unknown depth {self.depth} for family {self.family!r}; valid depths: "
                              f"{_join(FAMILIES[self.family])}")
        for f in model_fields():
            table = f.metadata["axis"].names
            value = getattr(self, f.name)
            if f.name != "family" and table is not None and (not isinstance(value, str) or value not in table):
                raise AblateError(f"unknown {f.name} {value!r}; valid {f.name}s: {_join(table)}")
        for name in ("residual", "zero_init_residual"):
            if not isinstance(getattr(self, name), bool):
                raise AblateError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.zero_init_residual and self.norm != "batch":
            raise AblateError("zero_init_residual sets the scale of each residual branch's last BatchNorm, so it needs "
                              "norm: batch")
        if self.zero_init_residual and not self.residual:
            raise AblateError("zero_init_residual needs residual: true (a plain network has no residual branch to "
                              "zero)")
        stages = self._check_stages()
        if stages != self.residual_stages:
            object.__setattr__(self, "residual_stages", stages)

    def _check_stages(self) -> tuple[int, ...] | None:
        residual_stages, family = self.residual_stages, self.family
        if residual_stages is None:
            return None
        n = STAGES[family]
        if isinstance(residual_stages, (str, bytes)) or not hasattr(residual_stages, "__iter__"):
            raise AblateError(f"residual_stages must be a list of stage numbers (1 to {n}) or null, got "
                              f"{residual_stages!r}")
        stages = list(residual_stages)
        if not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= n for s in stages):
            raise AblateError(f"residual_stages must list stage numbers from 1 to {n} (the {family} layout has {n} "
                              f"stages), got {stages}")
        if len(set(stages)) != len(stages):
            raise AblateError(f"residual_stages lists a stage twice: {stages}")
        if not self.residual:
            raise AblateError("residual_stages needs residual: true (a plain network has no residual connections to "
                              "keep)")
        if not stages:
            raise AblateError("residual_stages is empty; for a network without residual connections write residual: "
                              "false")
        if len(stages) == n:
            raise AblateError(f"residual_stages lists every stage ({sorted(stages)}); leave it out (null) for residual "
                              "connections in all stages, so one model has one trial id")
        return tuple(sorted(stages))

    @property
    def model(self) -> "ModelSpec":
        """The model axes alone, as a ModelSpec (a trial config is one with more settings)."""
        return ModelSpec(**{f.name: getattr(self, f.name) for f in model_fields()})

    def title(self) -> str:
        """'ResNet-18', 'CIFAR-style ResNet-20'."""
        return FAMILY_TITLES[self.family].format(depth=self.depth)

    def key(self) -> str:
        """A short string that identifies the architecture (equal keys, equal models), for caches and grouping:
        'imagenet-18 residual-projection', 'cifar-20 plain block=preact activation=gelu'. Axes at their default
        are left out; a plain net has no shortcut to name."""
        parts = [f"{self.family}-{self.depth}", f"residual-{self.shortcut}" if self.residual else "plain"]
        for f in model_fields():
            if f.name in ("family", "depth", "residual", "shortcut"):
                continue
            value = getattr(self, f.name)
            if value != f.default:
                parts.append(f"{f.name}={_key_value(value)}")
        return " ".join(parts)

    def describe(self) -> str:
        """The architecture in words, every axis named: 'ResNet-18 (imagenet layout), residual, projection shortcuts,
        basic blocks, BatchNorm, ReLU'; a plain net names no shortcut, zero-init is named where it is on."""
        parts = [f"{self.title()} ({self.family} layout)"]
        if self.residual:
            parts.append("residual" if self.residual_stages is None
                         else f"residual in {axis_text('residual_stages', self.residual_stages)}")
            parts.append(axis_text("shortcut", self.shortcut))
        else:
            parts.append(axis_text("residual", False))
        for f in model_fields():
            if f.name in ("family", "depth", "residual", "shortcut", "residual_stages"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) and not value:
                continue  # a switch that is off is not part of the model's description
            parts.append(axis_text(f.name, value))
        return ", ".join(parts)


def _key_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def model_fields():
    """The dataclass fields of the model axes, in order (a trial config has these and more)."""
    return [f for f in fields(ModelSpec)]


MODEL_AXES = tuple(f.name for f in model_fields())


def axis_meta(name: str) -> Axis:
    return next(f.metadata["axis"] for f in model_fields() if f.name == name)


def neutral_defaults() -> dict[str, Any]:
    """The model axes whose default stays out of the trial id, with that default."""
    return {f.name: f.default for f in model_fields() if f.metadata["axis"].neutral}


def axis_text(name: str, value: Any) -> str:
    """One level of one model axis in words, as reports write it: 'residual' / 'plain', 'depth 20', 'stage 1
    only', 'identity shortcuts', 'pre-activation blocks', 'no normalisation', 'GELU', 'cifar layout'."""
    meta = axis_meta(name)
    if name == "family":
        return f"{value} layout"
    if name == "depth":
        return f"depth {value}"
    if name == "residual_stages":
        if value is None:
            return "all stages"
        stages = list(value)
        return f"stage {stages[0]} only" if len(stages) == 1 else "stages " + ", ".join(map(str, stages))
    if meta.words is not None and value in meta.words:
        return meta.words[value]
    if meta.names is not None and isinstance(value, str) and value in meta.names:
        return meta.names[value]
    return f"{name} {value}"


def coerce_stages(value: Any, source: str) -> tuple[int, ...] | None:
    """residual_stages: null, a list of stage numbers, or (from a command line) a string such as "3,4"."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = [int(part) for part in value.replace(" ", "").split(",") if part]
        except ValueError:
            raise AblateError(f"{source}: residual_stages must be stage numbers such as 3,4, got {value!r}") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise AblateError(f"{source}: residual_stages must be a list of stage numbers or null, got {value!r}")
    return tuple(value)
