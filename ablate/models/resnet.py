"""ResNet variants whose residual connections can be switched off or swapped, built from a ModelSpec.

One builder covers the ImageNet-style layout (the reference Model_ResNet18 is depth 18 with
projection shortcuts) and the CIFAR layout of He et al. 2016 section 4.2, so an ablation can
toggle one factor at a time while everything else stays identical. The axes besides depth and
residual/plain (each default keeps the reference model; ablate.models.registry lists them):

- shortcut: `projection` (1x1 conv + BN where a block reshapes; He et al. option B), `identity`
  (subsample + zero-pad, no parameters; option A), `projection-all` (a 1x1 projection on every
  residual block; option C).
- block: `basic` (conv-BN-act-conv-BN, add, act) or `preact` (full pre-activation, He et al.
  2016 "Identity Mappings": BN-act-conv-BN-act-conv, added to a clean identity path; the stem
  is its conv (and max-pool) only, and one BN + activation follows the last block).
- residual_stages: the stages (1-based) whose blocks keep their residual connections; None = all.
- norm: `batch` or `none` (every BatchNorm replaced by an identity; nothing else changes, the
  initialisation included).
- zero_init_residual: the last BN of every residual branch starts with scale 0, so each residual
  block starts as its skip path alone.
- activation: `relu` or `gelu`, every activation of the network (stem, blocks, after each addition,
  the pre-activation net's final BN + activation); no parameters either way.

Each named choice resolves through a table below (ACTIVATIONS, NORMS, SHORTCUTS, BLOCKS) whose keys are the
registry's names.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ablate.errors import AblateError
from ablate.models.registry import ModelSpec, SHORTCUTS as SHORTCUT_NAMES


_IMAGENET_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
_IMAGENET_WIDTHS = (64, 128, 256, 512)
_CIFAR_WIDTHS = (16, 32, 64)

# name -> the activation module; `in_place` where the module may overwrite its input and the kind allows it.
ACTIVATIONS: dict[str, Callable[[bool], nn.Module]] = {
    "relu": lambda in_place: nn.ReLU(inplace=in_place),
    "gelu": lambda in_place: nn.GELU(),  # no in-place form
}
# name -> the normalisation layer of a number of channels.
NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "none": lambda channels: nn.Identity(),
}


def norm_layer(channels: int, norm: str = "batch") -> nn.Module:
    return NORMS[norm](channels)


def activation_layer(activation: str = "relu", in_place: bool = False) -> nn.Module:
    return ACTIVATIONS[activation](in_place)


class IdentityShortcut(nn.Module):
    """He et al. 2016 option A: subsample by the stride and zero-pad new channels; no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        if out_channels < in_channels:
            raise AblateError(
                f"identity shortcut cannot shrink channels ({in_channels} -> {out_channels}); "
                "use shortcut='projection' or out_channels >= in_channels"
            )
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        if extra:
            # F.pad pads dimensions from the last backwards: (W, W, H, H, C_before, C_after).
            x = F.pad(x, (0, 0, 0, 0, 0, extra))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def _projection(in_channels: int, out_channels: int, stride: int, norm: str, with_bn: bool) -> nn.Module:
    conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
    return nn.Sequential(conv, norm_layer(out_channels, norm)) if with_bn else nn.Sequential(conv)


# name -> the shortcut of a residual block (None: its skip is the identity): (in, out, stride, norm, with_bn).
SHORTCUTS: dict[str, Callable[[int, int, int, str, bool], nn.Module | None]] = {
    # option B: a 1x1 projection where the block reshapes
    "projection": lambda i, o, stride, norm, bn: _projection(i, o, stride, norm, bn) if stride != 1 or i != o else None,
    # option A: subsample and zero-pad where the block reshapes; no parameters
    "identity": lambda i, o, stride, norm, bn: IdentityShortcut(i, o, stride) if stride != 1 or i != o else None,
    # option C: a 1x1 projection on every block
    "projection-all": lambda i, o, stride, norm, bn: _projection(i, o, stride, norm, bn),
}


class Block(nn.Module):
    """What every block shares: conv1 / conv2 on the residual branch, an optional `shortcut` module (None for a
    plain block, and for a residual block whose skip is the identity), `branch_end` (the module whose output is
    the residual branch F(x), for hooks) and `bypass` (the block with its residual branch removed)."""

    residual: bool
    shortcut: nn.Module | None

    def _make_shortcut(self, in_channels, out_channels, stride, residual, shortcut, norm, with_bn) -> None:
        if shortcut not in SHORTCUTS:
            raise AblateError(f"unknown shortcut {shortcut!r}; valid shortcuts: {', '.join(SHORTCUT_NAMES)}")
        if stride < 1:
            raise AblateError(f"stride must be >= 1, got {stride}; pass a positive stride")
        self.residual = residual
        # A plain block gets no shortcut module at all, so its parameter count is honest.
        self.shortcut = SHORTCUTS[shortcut](in_channels, out_channels, stride, norm, with_bn) if residual else None

    @property
    def branch_end(self) -> nn.Module:
        raise NotImplementedError

    def bypass(self, x: torch.Tensor, shortcut: nn.Module | None = None) -> torch.Tensor:
        raise NotImplementedError


class BasicBlock(Block):
    """Two 3x3 convs; the skip connection is optional so plain and residual nets share weights' layout."""

    def __init__(self, in_channels, out_channels, stride=1, residual=True, shortcut="projection", norm="batch",
                 activation="relu"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(out_channels, norm)
        self.act = activation_layer(activation, in_place=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(out_channels, norm)
        self._make_shortcut(in_channels, out_channels, stride, residual, shortcut, norm, with_bn=True)

    @property
    def branch_end(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.shortcut is None else self.shortcut(x))
        return self.act(out)

    def bypass(self, x: torch.Tensor, shortcut: nn.Module | None = None) -> torch.Tensor:
        """act(skip(x)): the block's skip path and the activation that ends it (`shortcut` overrides its own).
        The activation reads a copy: it may work in place, and skip(x) may be x or a view of it."""
        s = shortcut if shortcut is not None else self.shortcut
        return self.act((x if s is None else s(x)).clone())


class PreActBlock(Block):
    """Full pre-activation (He et al. 2016, Identity Mappings): x + conv(act(BN(conv(act(BN(x)))))).

    A projection shortcut (a bare 1x1 conv, as in the paper's code) reads the pre-activated input
    act(BN1(x)); an identity or option-A shortcut reads x itself, so the identity path stays clean.
    """

    def __init__(self, in_channels, out_channels, stride=1, residual=True, shortcut="projection", norm="batch",
                 activation="relu"):
        super().__init__()
        self.bn1 = norm_layer(in_channels, norm)
        # Out of place: with norm none bn1 is the identity and x is the skip input.
        self.act1 = activation_layer(activation, in_place=False)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm_layer(out_channels, norm)
        self.act2 = activation_layer(activation, in_place=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self._make_shortcut(in_channels, out_channels, stride, residual, shortcut, norm, with_bn=False)

    @property
    def branch_end(self) -> nn.Module:
        return self.conv2

    def _skip(self, x: torch.Tensor, pre: torch.Tensor, shortcut: nn.Module | None) -> torch.Tensor:
        if shortcut is None:
            return x
        return shortcut(x) if isinstance(shortcut, IdentityShortcut) else shortcut(pre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        out = self.conv2(self.act2(self.bn2(self.conv1(pre))))
        if self.residual:
            out = out + self._skip(x, pre, self.shortcut)
        return out

    def bypass(self, x: torch.Tensor, shortcut: nn.Module | None = None) -> torch.Tensor:
        """skip(x): x, its option-A shortcut, or its projection of act(BN1(x)) (`shortcut` overrides its own)."""
        s = shortcut if shortcut is not None else self.shortcut
        pre = None if s is None or isinstance(s, IdentityShortcut) else self.act1(self.bn1(x))
        return self._skip(x, pre, s)


# name -> the block class.
BLOCKS: dict[str, type[Block]] = {"basic": BasicBlock, "preact": PreActBlock}


class ResNet(nn.Module):
    """stem -> stages of blocks -> [BN + activation for pre-activation] -> global average pool -> linear classifier."""

    def __init__(self, stem: nn.Sequential, stages: nn.ModuleList, width: int, num_classes: int,
                 final: nn.Module | None = None):
        super().__init__()
        self.stem = stem
        self.stages = stages
        self.final = final
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        if self.final is not None:
            x = self.final(x)
        return self.fc(torch.flatten(self.pool(x), 1))

    def blocks(self) -> list[tuple[str, Block]]:
        return [(name, m) for name, m in self.named_modules() if isinstance(m, Block)]


def _stages(in_ch, widths, counts, strides, residual_per_stage, spec: ModelSpec) -> nn.ModuleList:
    kind = BLOCKS[spec.block]
    stages = nn.ModuleList()
    for width, count, stride, residual in zip(widths, counts, strides, residual_per_stage):
        blocks = []
        for i in range(count):
            blocks.append(kind(in_ch, width, stride if i == 0 else 1, residual, spec.shortcut, spec.norm,
                               spec.activation))
            in_ch = width
        stages.append(nn.Sequential(*blocks))
    return stages


def build_model(spec: ModelSpec, in_channels: int = 1, num_classes: int = 10, *, stem_bias: bool = True) -> ResNet:
    """The network `spec` names, for images of `in_channels` channels and `num_classes` classes (a trial's come
    from its data). ModelSpec() with stem_bias is the reference Model_ResNet18; stem_bias only concerns the
    ImageNet layout (He et al. keep the CIFAR stem bias-free)."""
    if not isinstance(spec, ModelSpec):
        raise AblateError(f"build_model takes a ModelSpec (ablate.models.registry), got {type(spec).__name__}; "
                          "pass e.g. ModelSpec(family='cifar', depth=20) or a trial config's .model")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise AblateError(f"in_channels must be an integer >= 1, got {in_channels!r}; MNIST uses 1")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise AblateError(f"num_classes must be an integer >= 2, got {num_classes!r}; MNIST uses 10")
    spec = spec.model  # the axes alone (validated when made)
    preact, norm = spec.block == "preact", spec.norm

    def act() -> nn.Module:
        return activation_layer(spec.activation, in_place=True)

    if spec.family == "imagenet":
        conv = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=stem_bias)
        pool = nn.MaxPool2d(3, stride=2, padding=1)
        # A pre-activation net's first block normalises and activates its own input.
        stem = nn.Sequential(conv, pool) if preact else nn.Sequential(conv, norm_layer(64, norm), act(), pool)
        widths, counts, strides = _IMAGENET_WIDTHS, _IMAGENET_BLOCKS[spec.depth], (1, 2, 2, 2)
    else:
        conv = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        stem = nn.Sequential(conv) if preact else nn.Sequential(conv, norm_layer(16, norm), act())
        n = (spec.depth - 2) // 6
        widths, counts, strides = _CIFAR_WIDTHS, (n, n, n), (1, 2, 2)
    keep = spec.residual_stages
    per_stage = [spec.residual and (keep is None or i + 1 in keep) for i in range(len(widths))]
    stages = _stages(widths[0], widths, counts, strides, per_stage, spec)
    final = nn.Sequential(norm_layer(widths[-1], norm), act()) if preact else None
    model = ResNet(stem, stages, widths[-1], num_classes, final)
    if spec.zero_init_residual:
        for _, b in model.blocks():
            if b.residual:
                nn.init.zeros_(b.bn2.weight)
    return model


def build(in_channels: int, num_classes: int, image_size: int | None = None, **axes) -> ResNet:
    """The shipped family as a model factory, with the contract of a user's (ablate.models.factory): the data's shape
    and the model axes (ablate.models.registry.ModelSpec's fields) as keyword arguments. The image size is not
    needed: global average pooling takes any."""
    return build_model(ModelSpec(**axes), in_channels, num_classes)
