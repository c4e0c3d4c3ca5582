"""Where and how reproducibly a trial runs: the device to rerun a recorded trial on, deterministic CUDA, seeds,
torch's thread count."""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from ablate.errors import AblateError


def recorded_device(metrics: dict[str, Any], device: str | torch.device | None) -> str:
    """The device to rerun on: the one asked for, else the one the trial recorded (CPU for old records).
    A trial recorded on CUDA cannot be rerun on CUDA without a GPU: say so instead of silently using the CPU."""
    if device is not None:
        return str(device)
    recorded = str(metrics.get("device") or "cpu")
    if recorded.startswith("cuda") and not torch.cuda.is_available():
        raise AblateError(f"this trial ran on {recorded} and no CUDA GPU is available here; pass --device cpu to "
                          "rerun it on the CPU (its numbers will then differ slightly from the recorded ones)")
    return "cuda" if recorded.startswith("cuda") else "cpu"


def deterministic_cuda() -> None:
    """The same trial gives the same numbers on the same GPU: deterministic cuDNN kernels, no autotuning,
    no TF32 (which would round matmuls and convolutions to 10-bit mantissas)."""
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` inside the block and restored after it, however the block
    ends (0 or None: left as it is). The one place ablate and its benchmarks set torch's threads."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
