"""One way to time a training step, for every speed measurement ablate makes (the dry run's estimate, the fuse
decision, the GPU plan) and for the benchmarks.

`time_steps(step, steps, warmup)` runs `warmup` steps untimed (the first steps pay one-off costs: allocation,
lazy initialisation, a compile), then times `steps` more. On CUDA it synchronises before the clock starts and
after every timed step (or, timing one span, after the last one), so a time covers the kernels a step
launched, not only their launch. The answer is the median seconds per step: other processes only ever add
time, and the median ignores a few disturbed steps.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class StepTimes:
    seconds: list[float]  # each timed step's seconds (empty when timed as one span: each=False)
    start: float  # time.perf_counter() when the first timed step began
    end: float  # ... and when the last one had finished
    steps: int

    @property
    def median(self) -> float:
        """Seconds per step: the median step, or the span's mean when steps were timed as one span."""
        return statistics.median(self.seconds) if self.seconds else self.mean

    @property
    def mean(self) -> float:
        return (self.end - self.start) / self.steps


def time_steps(step: Callable[[], Any], steps: int, warmup: int = 2, device: Any = None, each: bool = True,
               ready: Callable[[], None] | None = None) -> StepTimes:
    """Run `step()` warmup + steps times and time the last `steps`.

    `each=False` times the steps as one span with no synchronisation between them (the way a trial runs: the
    host queues the next step while the device works), for throughput; `each=True` times every step on its
    own. `ready()`, when given, runs after the warm-up and before the clock starts (the GPU plan's processes
    say they are ready there and wait to be told to go)."""
    if steps < 1:
        raise ValueError(f"time at least one step, got {steps}")
    sync = _synchroniser(device)
    for _ in range(warmup):
        step()
    sync()
    if ready is not None:
        ready()
    seconds: list[float] = []
    start = last = time.perf_counter()
    for _ in range(steps):
        step()
        if each:
            sync()
            now = time.perf_counter()
            seconds.append(now - last)
            last = now
    sync()
    return StepTimes(seconds, start, time.perf_counter(), steps)


def _synchroniser(device: Any) -> Callable[[], None]:
    if device is None or "cuda" not in str(device):
        return lambda: None
    import torch

    return torch.cuda.synchronize
