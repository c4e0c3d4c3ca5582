"""A small vision transformer for ablate (docs/your-own-network.md): cut the image into patch x patch squares, embed
each as a token (a convolution with stride `patch`), add a learned position embedding, then `depth` pre-norm blocks,
each x + attention(LN(x)) and x + mlp(LN(x)) when `residual`, and attention(LN(x)), mlp(LN(x)) without the
additions; a final LN, the mean over the tokens and a linear classifier.

ablate calls build(in_channels=..., num_classes=..., image_size=..., residual=..., depth=..., width=..., ...): the
first three describe the data, the rest are the study's settings (spec: base and factors).
"""
import torch
from torch import nn

from ablate import Residual


class SelfAttention(nn.Module):
    """Multi-head self-attention of a token sequence (N, tokens, width): its output alone."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def block(width: int, heads: int, residual: bool) -> nn.Module:
    """Pre-norm: x -> x + attn(LN(x)) -> x + mlp(LN(x)) with the skips; attn(LN(x)) -> mlp(LN(x)) without. Each
    sublayer is an ablate.Residual (marked for lesions, signal propagation and the per-block gradient records)."""
    attention = Residual(nn.Sequential(nn.LayerNorm(width), SelfAttention(width, heads)), residual=residual)
    mlp = Residual(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                                 nn.Linear(2 * width, width)), residual=residual)
    return nn.Sequential(attention, mlp)


class ViT(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: int, residual: bool, depth: int, width: int,
                 heads: int, patch: int) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch}")
        self.embed = nn.Conv2d(in_channels, width, kernel_size=patch, stride=patch)
        self.position = nn.Parameter(0.02 * torch.randn(1, (image_size // patch) ** 2, width))
        self.blocks = nn.Sequential(*[block(width, heads, residual) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images).flatten(2).transpose(1, 2) + self.position  # (N, tokens, width)
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))


def build(in_channels: int, num_classes: int, image_size: int, residual: bool = True, depth: int = 4,
          width: int = 32, heads: int = 2, patch: int = 2) -> nn.Module:
    return ViT(in_channels, num_classes, image_size, residual, depth, width, heads, patch)
