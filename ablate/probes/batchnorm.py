"""BatchNorm running statistics estimated from a set of images: for fixed statistics at initialisation (shattered
gradients) and after a lesion (`analyze --lesion --lesion-recalibrate`), always from batch statistics in train
mode, then the model back in eval mode."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

CHUNK = 256


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def estimate_statistics(model: nn.Module, x: torch.Tensor, chunk: int = CHUNK) -> None:
    """Every BatchNorm's running mean and variance set to the average over chunks of `x` of the chunks' batch
    statistics (BatchNorm's cumulative average, momentum None), then eval mode: afterwards each input is normalised
    by fixed numbers. One chunk (len(x) <= chunk) gives exactly that batch's statistics."""
    norms = batchnorms(model)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, len(x), chunk):
                model(x[start:start + chunk])
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()


@contextlib.contextmanager
def kept_statistics(model: nn.Module) -> Iterator[None]:
    """Within, the BatchNorm running statistics may change; on exit they, and the model's mode, are as before."""
    norms = batchnorms(model)
    saved = [{k: v.detach().clone() for k, v in m.named_buffers(recurse=False)} for m in norms]
    was_training = model.training
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for k, v in buffers.items():
                    getattr(m, k).copy_(v)
        model.train(was_training)
