"""Model helpers for tests."""
from __future__ import annotations

import torch
from torch import nn


def randomize_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics, so eval-mode BN is not the identity and mix-ups would show."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.rand(t.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def build(family: str = "imagenet", depth: int = 18, *, in_channels: int = 1, num_classes: int = 10,
          stem_bias: bool = True, **axes) -> nn.Module:
    """build_model(ModelSpec(family, depth, **axes), in_channels, num_classes): the tests' short spelling."""
    from ablate.models.registry import ModelSpec
    from ablate.models.resnet import build_model

    return build_model(ModelSpec(family, depth, **axes), in_channels, num_classes, stem_bias=stem_bias)
