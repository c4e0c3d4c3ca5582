"""ResNet variants whose residual connections can be switched off or swapped, plus a layer summary.

One builder covers the ImageNet-style layout (the reference Model_ResNet18 is depth 18 with
projection shortcuts) and the CIFAR layout of He et al. 2016 section 4.2, so an ablation can
toggle one factor at a time while everything else stays identical. The axes besides depth and
residual/plain (each default keeps the reference model):

- shortcut: `projection` (1x1 conv + BN where a block reshapes; He et al. option B), `identity`
  (subsample + zero-pad, no parameters; option A), `projection-all` (a 1x1 projection on every
  residual block; option C).
- block: `basic` (conv-BN-ReLU-conv-BN, add, ReLU) or `preact` (full pre-activation, He et al.
  2016 "Identity Mappings": BN-ReLU-conv-BN-ReLU-conv, added to a clean identity path; the stem
  is its conv (and max-pool) only, and one BN + ReLU follows the last block).
- residual_stages: the stages (1-based) whose blocks keep their residual connections; None = all.
- norm: `batch` or `none` (every BatchNorm replaced by an identity; nothing else changes, the
  initialisation included).
- zero_init_residual: the last BN of every residual branch starts with scale 0, so each residual
  block starts as its skip path alone.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ablate.errors import AblateError
from ablate.models.registry import FAMILIES, SHORTCUTS, _join, check_axes


_IMAGENET_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
_IMAGENET_WIDTHS = (64, 128, 256, 512)
_CIFAR_WIDTHS = (16, 32, 64)


def norm_layer(channels: int, norm: str = "batch") -> nn.Module:
    return nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()


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


class Block(nn.Module):
    """What every block shares: conv1 / conv2 on the residual branch, an optional `shortcut` module (None for a
    plain block, and for a residual block whose skip is the identity), `branch_end` (the module whose output is
    the residual branch F(x), for hooks) and `bypass` (the block with its residual branch removed)."""

    residual: bool
    shortcut: nn.Module | None

    def _make_shortcut(self, in_channels, out_channels, stride, residual, shortcut, norm, with_bn) -> None:
        if shortcut not in SHORTCUTS:
            raise AblateError(f"unknown shortcut {shortcut!r}; valid shortcuts: {_join(SHORTCUTS)}")
        if stride < 1:
            raise AblateError(f"stride must be >= 1, got {stride}; pass a positive stride")
        self.residual = residual
        self.shortcut = None
        # A plain block gets no shortcut module at all, so its parameter count is honest.
        reshapes = stride != 1 or in_channels != out_channels
        if residual and (shortcut == "projection-all" or (reshapes and shortcut == "projection")):
            layers = [nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)]
            self.shortcut = nn.Sequential(*layers, norm_layer(out_channels, norm)) if with_bn else nn.Sequential(*layers)
        elif residual and reshapes:
            self.shortcut = IdentityShortcut(in_channels, out_channels, stride)

    @property
    def branch_end(self) -> nn.Module:
        raise NotImplementedError

    def bypass(self, x: torch.Tensor, shortcut: nn.Module | None = None) -> torch.Tensor:
        raise NotImplementedError


class BasicBlock(Block):
    """Two 3x3 convs; the skip connection is optional so plain and residual nets share weights' layout."""

    def __init__(self, in_channels, out_channels, stride=1, residual=True, shortcut="projection", norm="batch"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(out_channels, norm)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(out_channels, norm)
        self._make_shortcut(in_channels, out_channels, stride, residual, shortcut, norm, with_bn=True)

    @property
    def branch_end(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.shortcut is None else self.shortcut(x))
        return self.relu(out)

    def bypass(self, x: torch.Tensor, shortcut: nn.Module | None = None) -> torch.Tensor:
        """ReLU(skip(x)): the block's skip path and the ReLU that ends it (`shortcut` overrides its own)."""
        s = shortcut if shortcut is not None else self.shortcut
        return F.relu(x if s is None else s(x))


class PreActBlock(Block):
    """Full pre-activation (He et al. 2016, Identity Mappings): x + conv(ReLU(BN(conv(ReLU(BN(x)))))).

    A projection shortcut (a bare 1x1 conv, as in the paper's code) reads the pre-activated input
    ReLU(BN1(x)); an identity or option-A shortcut reads x itself, so the identity path stays clean.
    """

    def __init__(self, in_channels, out_channels, stride=1, residual=True, shortcut="projection", norm="batch"):
        super().__init__()
        self.bn1 = norm_layer(in_channels, norm)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm_layer(out_channels, norm)
        self.relu = nn.ReLU(inplace=True)
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
        pre = F.relu(self.bn1(x))  # out of place: with norm none bn1 is the identity and x is the skip input
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        if self.residual:
            out = out + self._skip(x, pre, self.shortcut)
        return out

    def bypass(self, x: torch.Tensor, shortcut: nn.Module | None = None) -> torch.Tensor:
        """skip(x): x, its option-A shortcut, or its projection of ReLU(BN1(x)) (`shortcut` overrides its own)."""
        s = shortcut if shortcut is not None else self.shortcut
        pre = None if s is None or isinstance(s, IdentityShortcut) else F.relu(self.bn1(x))
        return self._skip(x, pre, s)


class ResNet(nn.Module):
    """stem -> stages of blocks -> [BN + ReLU for pre-activation] -> global average pool -> linear classifier."""

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


def _stages(in_ch, widths, counts, strides, residual_per_stage, shortcut, block, norm) -> nn.ModuleList:
    kind = PreActBlock if block == "preact" else BasicBlock
    stages = nn.ModuleList()
    for width, count, stride, residual in zip(widths, counts, strides, residual_per_stage):
        blocks = []
        for i in range(count):
            blocks.append(kind(in_ch, width, stride if i == 0 else 1, residual, shortcut, norm))
            in_ch = width
        stages.append(nn.Sequential(*blocks))
    return stages


def model_kwargs(cfg: Any) -> dict[str, Any]:
    """build_model's model axes from a trial config (anything with these attributes)."""
    return dict(residual=cfg.residual, shortcut=cfg.shortcut, block=cfg.block, residual_stages=cfg.residual_stages,
                norm=cfg.norm, zero_init_residual=cfg.zero_init_residual)


def build_model(family="imagenet", depth=18, residual=True, shortcut="projection",
                in_channels=1, num_classes=10, stem_bias=True, *, block="basic", residual_stages=None,
                norm="batch", zero_init_residual=False) -> ResNet:
    """Build a ResNet; imagenet/18/projection/residual/stem_bias is the reference Model_ResNet18."""
    if family not in FAMILIES:
        raise AblateError(f"unknown family {family!r}; valid families: {_join(FAMILIES)}")
    if depth not in FAMILIES[family]:
        raise AblateError(
            f"unknown depth {depth} for family {family!r}; valid depths: {_join(FAMILIES[family])}"
        )
    keep = check_axes(family, residual, shortcut, block, residual_stages, norm, zero_init_residual)
    if not isinstance(in_channels, int) or in_channels < 1:
        raise AblateError(f"in_channels must be an integer >= 1, got {in_channels!r}; MNIST uses 1")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise AblateError(f"num_classes must be an integer >= 2, got {num_classes!r}; MNIST uses 10")

    preact = block == "preact"
    if family == "imagenet":
        conv = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=stem_bias)
        pool = nn.MaxPool2d(3, stride=2, padding=1)
        # A pre-activation net's first block normalises and activates its own input.
        stem = nn.Sequential(conv, pool) if preact else nn.Sequential(conv, norm_layer(64, norm), nn.ReLU(inplace=True), pool)
        widths, counts, strides = _IMAGENET_WIDTHS, _IMAGENET_BLOCKS[depth], (1, 2, 2, 2)
    else:
        # He et al. keep the CIFAR stem bias-free; stem_bias only concerns the reference layout.
        conv = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        stem = nn.Sequential(conv) if preact else nn.Sequential(conv, norm_layer(16, norm), nn.ReLU(inplace=True))
        n = (depth - 2) // 6
        widths, counts, strides = _CIFAR_WIDTHS, (n, n, n), (1, 2, 2)
    per_stage = [residual and (keep is None or i + 1 in keep) for i in range(len(widths))]
    stages = _stages(widths[0], widths, counts, strides, per_stage, shortcut, block, norm)
    final = nn.Sequential(norm_layer(widths[-1], norm), nn.ReLU(inplace=True)) if preact else None
    model = ResNet(stem, stages, widths[-1], num_classes, final)
    if zero_init_residual:
        for _, b in model.blocks():
            if b.residual:
                nn.init.zeros_(b.bn2.weight)
    return model
