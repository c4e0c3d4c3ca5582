"""ResNet variants whose residual connections can be switched off or swapped, plus a layer summary.

One builder covers the ImageNet-style layout (the reference Model_ResNet18 is depth 18 with
projection shortcuts) and the CIFAR layout of He et al. 2016 section 4.2, so an ablation can
toggle one factor at a time while everything else stays identical.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ablate.errors import AblateError

FAMILIES: dict[str, tuple[int, ...]] = {"imagenet": (10, 18, 34), "cifar": (20, 32, 44, 56, 110)}
DEFAULT_DEPTH = {"imagenet": 18, "cifar": 20}  # a family's depth when none is given
SHORTCUTS = ("projection", "identity")

_IMAGENET_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
_IMAGENET_WIDTHS = (64, 128, 256, 512)
_CIFAR_WIDTHS = (16, 32, 64)


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


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


class BasicBlock(nn.Module):
    """Two 3x3 convs; the skip connection is optional so plain and residual nets share weights' layout."""

    def __init__(self, in_channels, out_channels, stride=1, residual=True, shortcut="projection"):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise AblateError(f"unknown shortcut {shortcut!r}; valid shortcuts: {_join(SHORTCUTS)}")
        if stride < 1:
            raise AblateError(f"stride must be >= 1, got {stride}; pass a positive stride")
        self.residual = residual
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module | None = None
        # A plain block gets no shortcut module at all, so its parameter count is honest.
        reshapes = stride != 1 or in_channels != out_channels
        if residual and reshapes:
            if shortcut == "projection":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(out_channels),
                )
            else:
                self.shortcut = IdentityShortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.shortcut is None else self.shortcut(x))
        return self.relu(out)


class ResNet(nn.Module):
    """stem -> stages of BasicBlocks -> global average pool -> linear classifier."""

    def __init__(self, stem: nn.Sequential, stages: nn.ModuleList, width: int, num_classes: int):
        super().__init__()
        self.stem = stem
        self.stages = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.fc(torch.flatten(self.pool(x), 1))

    def blocks(self) -> list[tuple[str, BasicBlock]]:
        return [(name, m) for name, m in self.named_modules() if isinstance(m, BasicBlock)]


def _stages(in_ch, widths, counts, strides, residual, shortcut) -> nn.ModuleList:
    stages = nn.ModuleList()
    for width, count, stride in zip(widths, counts, strides):
        blocks = []
        for i in range(count):
            blocks.append(BasicBlock(in_ch, width, stride if i == 0 else 1, residual, shortcut))
            in_ch = width
        stages.append(nn.Sequential(*blocks))
    return stages


def build_model(family="imagenet", depth=18, residual=True, shortcut="projection",
                in_channels=1, num_classes=10, stem_bias=True) -> ResNet:
    """Build a ResNet; imagenet/18/projection/residual/stem_bias is the reference Model_ResNet18."""
    if family not in FAMILIES:
        raise AblateError(f"unknown family {family!r}; valid families: {_join(FAMILIES)}")
    if depth not in FAMILIES[family]:
        raise AblateError(
            f"unknown depth {depth} for family {family!r}; valid depths: {_join(FAMILIES[family])}"
        )
    if shortcut not in SHORTCUTS:
        raise AblateError(f"unknown shortcut {shortcut!r}; valid shortcuts: {_join(SHORTCUTS)}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise AblateError(f"in_channels must be an integer >= 1, got {in_channels!r}; MNIST uses 1")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise AblateError(f"num_classes must be an integer >= 2, got {num_classes!r}; MNIST uses 10")

    if family == "imagenet":
        stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=stem_bias),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        widths, counts, strides = _IMAGENET_WIDTHS, _IMAGENET_BLOCKS[depth], (1, 2, 2, 2)
    else:
        # He et al. keep the CIFAR stem bias-free; stem_bias only concerns the reference layout.
        stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        )
        n = (depth - 2) // 6
        widths, counts, strides = _CIFAR_WIDTHS, (n, n, n), (1, 2, 2)
    stages = _stages(widths[0], widths, counts, strides, residual, shortcut)
    return ResNet(stem, stages, widths[-1], num_classes)


_TV_LAYER = re.compile(r"^layer([1-4])\.(\d+)\.(.+)$")


def torchvision_state_dict_to_ablate(tv_state: dict) -> dict:
    """Rename torchvision resnet18/34 keys to this module's layout; values are shared, not copied."""
    out = {}
    for key, value in tv_state.items():
        if key.startswith("conv1."):
            new = "stem.0." + key[len("conv1."):]
        elif key.startswith("bn1."):
            new = "stem.1." + key[len("bn1."):]
        elif key.startswith("fc."):
            new = key
        else:
            match = _TV_LAYER.match(key)
            if match is None:
                raise AblateError(
                    f"unexpected key {key!r} in torchvision state dict; "
                    "pass the state_dict() of torchvision.models.resnet18 or resnet34"
                )
            layer, index, rest = match.groups()
            rest = re.sub(r"^downsample\.", "shortcut.", rest)
            new = f"stages.{int(layer) - 1}.{index}.{rest}"
        out[new] = value
    return out


def _randomize_batchnorm(model: nn.Module) -> None:
    # Fresh BN layers are all weight 1 / bias 0 / mean 0 / var 1, so a mapping that mixed up
    # two BN layers would still match; distinct random values make such a mix-up show.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)


def verify_torchvision(batch_size=4, image_size=64, seed=0, depth=18, copy_weights=True) -> float:
    """Max |output difference| between torchvision's resnet and ours after copying its weights.

    copy_weights=False keeps our own random init, which must give a large difference; it exists
    to show the comparison can fail.
    """
    import torchvision  # only this check needs it

    constructors = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34}
    if depth not in constructors:
        raise AblateError(f"no torchvision counterpart for depth {depth}; valid depths: 18, 34")
    if batch_size < 1 or image_size < 1:
        raise AblateError(
            f"batch_size and image_size must be >= 1, got {batch_size} and {image_size}"
        )
    torch.manual_seed(seed)
    reference = constructors[depth](weights=None)
    _randomize_batchnorm(reference)
    ours = build_model("imagenet", depth, residual=True, shortcut="projection",
                       in_channels=3, num_classes=1000, stem_bias=False)
    if copy_weights:
        ours.load_state_dict(torchvision_state_dict_to_ablate(reference.state_dict()), strict=True)
    reference.eval()
    ours.eval()
    x = torch.randn(batch_size, 3, image_size, image_size,
                    generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return (reference(x) - ours(x)).abs().max().item()


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple
    params: int
    macs: int


@dataclass
class ModelSummary:
    rows: list[LayerRow]
    total_params: int
    total_macs: int


def _first_conv(model: nn.Module) -> nn.Conv2d | None:
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def summarize(model, in_channels=1, input_size=32) -> ModelSummary:
    """One eval-mode forward pass; MACs come from torch's FlopCounterMode (flops / 2)."""
    if not isinstance(in_channels, int) or in_channels < 1:
        raise AblateError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    if not isinstance(input_size, int) or input_size < 1:
        raise AblateError(f"input_size must be an integer >= 1, got {input_size!r}")
    conv = _first_conv(model)
    if conv is not None and conv.in_channels != in_channels:
        raise AblateError(
            f"model expects {conv.in_channels} input channels but in_channels={in_channels}; "
            f"pass in_channels={conv.in_channels}"
        )
    leaves = [(name, m) for name, m in model.named_modules() if name and not any(m.children())]
    shapes: dict[str, tuple] = {}

    def hook_for(name):
        def hook(_module, _inputs, output):
            # A module called twice (a block's ReLU) keeps the shape of its first call.
            shapes.setdefault(name, tuple(output.shape))
        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in leaves]
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, in_channels, input_size, input_size)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    counts = counter.get_flop_counts()
    # The counter names modules by path from the root, prefixed with the root's class name.
    prefix = type(model).__name__ + "."
    rows = []
    for name, m in leaves:
        if name not in shapes:
            continue  # registered but never called, so it neither computes nor shapes the output
        flops = sum(counts.get(prefix + name, {}).values())
        params = sum(p.numel() for p in m.parameters(recurse=False))
        rows.append(LayerRow(name, type(m).__name__, shapes[name], params, flops // 2))
    total_params = sum(p.numel() for p in model.parameters())
    return ModelSummary(rows, total_params, counter.get_total_flops() // 2)


def format_summary(summary: ModelSummary) -> str:
    header = ("Layer", "Type", "Output shape", "Params", "MACs")
    body = [
        (r.name, r.kind, "x".join(str(d) for d in r.output_shape), f"{r.params:,}", f"{r.macs:,}")
        for r in summary.rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    numeric = {3, 4}  # right-align numbers so digits line up

    def line(cells):
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "-" * len(line(header))
    lines = [line(header), rule, *(line(row) for row in body), rule]
    lines.append(f"Total params: {summary.total_params:,}")
    lines.append(f"Total MACs: {summary.total_macs:,} ({summary.total_macs / 1e6:.2f} M)")
    return "\n".join(lines)
