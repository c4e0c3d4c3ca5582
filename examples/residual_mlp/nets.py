"""A residual MLP for ablate (docs/your-own-network.md): flatten the image, project it to `width` features, then
`depth` blocks of Linear + ReLU, each adding its input back when `residual`, then a linear classifier.

ablate calls build(in_channels=..., num_classes=..., image_size=..., residual=..., depth=..., width=...): the
first three describe the data, the rest are the study's settings (spec: base and factors).
"""
import torch
from torch import nn


class Block(nn.Module):
    """x -> x + relu(W x + b) with the skip, relu(W x + b) without."""

    def __init__(self, width: int, residual: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.linear(x))
        return x + out if self.residual else out


def build(in_channels: int, num_classes: int, image_size: int, residual: bool = True, depth: int = 4,
          width: int = 64) -> nn.Module:
    layers = [nn.Flatten(), nn.Linear(in_channels * image_size * image_size, width), nn.ReLU()]
    layers += [Block(width, residual) for _ in range(depth)]
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
