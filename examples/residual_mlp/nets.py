"""A residual MLP for ablate (docs/your-own-network.md): flatten the image, project it to `width` features, then
`depth` blocks of Linear + ReLU, each adding its input back when `residual`, then a linear classifier.

ablate calls build(in_channels=..., num_classes=..., image_size=..., residual=..., depth=..., width=...): the
first three describe the data, the rest are the study's settings (spec: base and factors). Each block is an
ablate.Residual, which marks it for the lesions, the signal-propagation diagnostic and the per-block gradient
records; with residual=False it is the same block without its skip.
"""
from torch import nn

from ablate import Residual


def block(width: int, residual: bool) -> nn.Module:
    """x -> x + relu(W x + b) with the skip, relu(W x + b) without."""
    return Residual(nn.Sequential(nn.Linear(width, width), nn.ReLU()), residual=residual)


def build(in_channels: int, num_classes: int, image_size: int, residual: bool = True, depth: int = 4,
          width: int = 64) -> nn.Module:
    layers = [nn.Flatten(), nn.Linear(in_channels * image_size * image_size, width), nn.ReLU()]
    layers += [block(width, residual) for _ in range(depth)]
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
