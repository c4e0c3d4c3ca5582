"""On-device augmentation: random crops after padding by 4 pixels, and horizontal flips, for a whole batch at once.

The random draws come from a generator on the batch's own device, seeded from the trial's seed, so a step
needs no host work and no host synchronisation, and a trial is reproducible (and can pause and continue: the
generator's state travels in the checkpoint). The learning-rate schedule is `TrialConfig.learning_rate`.
"""
from __future__ import annotations

import hashlib

import torch

PAD = 4


def augment_seed(seed: int) -> int:
    """The augmentation generator's seed, derived from the trial's seed: its own stream, not the shuffle's."""
    return int.from_bytes(hashlib.sha256(f"augment/{seed}".encode()).digest()[:8], "big") >> 1


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor | None,
              fill: torch.Tensor) -> torch.Tensor:
    """Image i of the batch x (N, C, H, W), padded by PAD pixels of `fill` (per channel) on every side, cropped
    back to H x W at offset (dy[i], dx[i]) in 0 .. 2 * PAD, then mirrored left-right where flip[i].

    One gather, no padded copy: out[i, :, r, c] = x[i, :, dy + r - PAD, dx + c' - PAD] (c' = W - 1 - c when
    flipped, else c), or `fill` where that falls outside the image. The result is channels-last in memory.
    """
    n, _, h, w = x.shape
    rows = dy[:, None] - PAD + torch.arange(h, device=x.device)  # (N, H)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if flip is not None:
        cols = torch.where(flip[:, None], w - 1 - cols, cols)
    cols = dx[:, None] - PAD + cols  # (N, W)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    picked = x[torch.arange(n, device=x.device)[:, None, None], :, rows.clamp(0, h - 1)[:, :, None],
               cols.clamp(0, w - 1)[:, None, :]]  # (N, H, W, C): the sliced channel dimension goes last
    return torch.where(inside[..., None], picked, fill).permute(0, 3, 1, 2)


class Augmenter:
    """`augment(batch)`: crop (and flip) drawn for each image from `generator` (on the batch's device)."""

    def __init__(self, kind: str, fill: list[float], device: torch.device, seed: int) -> None:
        if kind not in ("crop", "crop-flip"):
            raise ValueError(f"unknown augmentation {kind!r}")
        self.flip = kind == "crop-flip"
        self.fill = torch.tensor(fill, dtype=torch.float32, device=device)
        self.generator = torch.Generator(device=device).manual_seed(augment_seed(seed))

    def __call__(self, x: torch.Tensor, memory_format: torch.memory_format = torch.channels_last) -> torch.Tensor:
        n = x.shape[0]
        offsets = torch.randint(0, 2 * PAD + 1, (2, n), generator=self.generator, device=x.device)
        flip = torch.randint(0, 2, (n,), generator=self.generator, device=x.device).bool() if self.flip else None
        return crop_flip(x, offsets[0], offsets[1], flip, self.fill).contiguous(memory_format=memory_format)
