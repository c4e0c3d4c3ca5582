"""What a study will cost before it runs: training steps per stage, time measured on this machine, disk.

The step counts follow the planner's own schedule (rounds, halving rungs, confirm seeds), assuming no
trial diverges. Time = steps x the seconds per training step measured here for each architecture
(a few steps on random data at the spec's batch size and threads), plus the dev evaluations, spread
over the trials that run at once. Disk = the weights the spec keeps, plus the checkpoints of trials
paused at a rung while a round runs. Memory = one trial's peak (trial_memory: its training step and
evaluation measured on torch's meta device, plus its data, weights and the process) against this machine's
memory for the trials that run at once (study_memory).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from ablate.errors import AblateError
from ablate.spec import Study, TrialConfig
from ablate.engine import plan_fixed_stage
from ablate.machine_memory import GpuMemory, MemoryLimits, resident_bytes, size_text


@dataclass
class Estimate:
    steps: dict[str, int]                    # training steps per stage
    seconds: float                           # wall time, training and evaluation only
    step_ms: dict[str, float] = field(default_factory=dict)  # measured per architecture
    weights_mb: float = 0.0                  # weights.pt kept at the end
    weights_files: int = 0
    checkpoint_mb: float = 0.0               # at most, while a round's trials wait at a rung
    untimed: list[str] = field(default_factory=list)  # architectures not timed: a step would not fit in memory

    def lines(self) -> list[str]:
        steps = ", ".join(f"{stage} {n:,}" for stage, n in self.steps.items())
        speeds = "; ".join(f"{arch} {ms:.0f} ms" for arch, ms in self.step_ms.items())
        untimed = "; ".join(self.untimed)
        if not self.step_ms:
            out = [f"estimate: {steps} training steps; time not estimated: a step would not fit in this machine's "
                   f"memory ({untimed})"]
        else:
            out = [f"estimate: {steps} training steps; about {_duration(self.seconds)} of training and evaluation "
                   f"at the trials-at-once above (measured here per step: {speeds}), plus Ray start-up and about a "
                   "second per trial"]
            if self.untimed:
                out[0] += f" (not timed, and left out of that time, as a step would not fit in memory: {untimed})"
        disk = f"disk: {self.weights_files} weights.pt of {self.weights_mb / max(1, self.weights_files):.1f} MB = " \
               f"{self.weights_mb:.0f} MB kept" if self.weights_files else "disk: no weights.pt kept (keep_weights: none)"
        if self.checkpoint_mb:
            disk += f"; up to {self.checkpoint_mb:.0f} MB of checkpoints while trials wait at a rung"
        out.append(disk)
        return out


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _arch(cfg: TrialConfig) -> str:
    """What a step's cost depends on, in words: the model with every axis that is not the default, the input
    (channels x size, classes) and the batch."""
    from ablate.data import expected_shape

    channels, classes = expected_shape(cfg.dataset)
    return " ".join(x for x in (cfg.model_key(), f"{channels}x{cfg.image_size}px {classes} classes batch {cfg.batch_size}",
                                cfg.precision if cfg.precision != "fp32" else "",
                                "(eager; compiled trials differ)" if cfg.compile != "none" else "") if x)


def _round_steps(study: Study, cfg: TrialConfig, size: int) -> int:
    """Training steps of one round of `size` proposals like cfg, with halving as the planner runs it."""
    evals, total = cfg.evaluation_steps(), cfg.total_steps()
    alive, reached, steps = size, 0, 0  # trials still going, steps each has run, steps run in all
    for rung in (study.halving.rungs(len(evals)) if study.halving else []):
        if alive <= 1:
            break
        steps += alive * (evals[rung - 1] - reached)
        alive, reached = math.ceil(alive / study.halving.eta), evals[rung - 1]
    return steps + alive * (total - reached)


def planned(study: Study) -> list[tuple[str, TrialConfig, int]]:
    """(stage, config, training steps) for every trial the study plans, the search space at its first values:
    each point under every tuning seed, each repeat of the search with its own confirm runs (at most: repeats
    that choose the same point share them)."""
    first = {p.name: (p.low if p.distribution != "choice" else p.choices[0]) for p in study.space}
    out: list[tuple[str, TrialConfig, int]] = []
    if study.space:
        full, rest = divmod(study.trials_per_arm, study.round_size)
        sizes = [study.round_size] * full + ([rest] if rest else [])
        for arm in study.arms:
            cfg = study.arm_config(arm, **first)
            out += [("tune", cfg, _round_steps(study, cfg, size) * len(study.tuning_seeds()))
                    for size in sizes] * study.repeats
        best = {a.name: first for a in study.arms}
        out += [("confirm", p.config, p.config.total_steps()) for p in plan_fixed_stage(study, "confirm", best)] * study.repeats
    else:
        stage = study.stages[-1]
        out += [(stage, p.config, p.config.total_steps()) for p in plan_fixed_stage(study, stage)]
    return out


def _model(cfg: TrialConfig):
    from ablate.data import expected_shape
    from ablate.models import build_trial_model

    channels, classes = expected_shape(cfg.dataset)
    return build_trial_model(cfg, channels, classes), channels, classes


def _seconds_per_step(cfg: TrialConfig) -> float:
    import torch

    from ablate.execute.step_timer import time_steps
    from ablate.train import SingleModel, torch_threads

    model, in_channels, classes = _model(cfg)
    shape = (cfg.batch_size, in_channels, cfg.image_size, cfg.image_size)
    # The training loop's own step, in the trial's precision; eager even for a compiled trial (a compile here
    # would cost more than it tells).
    trainer = SingleModel([model], [cfg.replace(compile="none")], torch.device("cpu"), shape)
    x = torch.randn(shape).contiguous(memory_format=trainer.memory_format)
    y = torch.randint(0, classes, (cfg.batch_size,))
    with torch_threads(max(1, cfg.threads)):
        return time_steps(lambda: trainer.train_step([x], [y], 0, (), []), steps=3, warmup=2).median


def _state_bytes(cfg: TrialConfig) -> int:
    model = _model(cfg)[0]
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def estimate_study(study: Study, concurrency: int, fits: Callable[[TrialConfig], bool] | None = None) -> Estimate:
    """Steps, time and disk of the study. A config for which `fits` says no (its step would not fit in this
    machine's memory) is not timed; the time then leaves its trials out and says so."""
    trials = planned(study)
    per_step: dict[str, float] = {}
    sizes: dict[str, int] = {}
    steps: dict[str, int] = {}
    untimed: list[str] = []
    compute = 0.0
    weights, files, checkpoint = 0, 0, 0
    for stage, cfg, n in trials:
        arch = _arch(cfg)
        if arch not in per_step:
            timed = fits is None or fits(cfg)
            per_step[arch] = _seconds_per_step(cfg) if timed else math.nan
            untimed += [] if timed else [arch]
            sizes[arch] = _state_bytes(cfg)
        steps[stage] = steps.get(stage, 0) + n
        evals = len(cfg.evaluation_steps())
        # an evaluation is a forward pass over the dev set: about a third of a training step per batch
        eval_steps = evals * math.ceil(cfg.dev_size / cfg.batch_size) / 3
        if not math.isnan(per_step[arch]):
            compute += (n + eval_steps) * per_step[arch]
        if study.keeps_weights(stage):
            weights += sizes[arch]
            files += 1
    if study.halving:
        # model, best-dev copy and optimizer state for every trial of a round that waits at a rung
        biggest = max(sizes.values())
        checkpoint = 3 * biggest * study.round_size * len(study.arms)
    return Estimate(steps=steps, seconds=compute / max(1, concurrency),
                    step_ms={a: 1000 * s for a, s in per_step.items() if not math.isnan(s)},
                    weights_mb=weights / 2**20, weights_files=files, checkpoint_mb=checkpoint / 2**20, untimed=untimed)

# --- memory: one trial's peak -----------------------------------------------------------------------------------
# What running a trial's first steps adds to the process beyond the tensors counted below: torch's thread pools
# and kernel caches, the C allocator's retained and fragmented memory, drawing curves.png. Measured on this
# project's AMD EPYC (2 cores, torch 2.14.1 CPU): 180-190 MB for a trial of a 0.3 M-parameter net at 16 pixels,
# and 300 MB as the median of the calibration runs below (whose tensors the allocator does not all hand back).
RUNTIME_BYTES = 300 * 2**20
# How far the estimate may be off: on the calibration runs (trial_memory's docstring) it was within 16 %; on the CI
# machine (another CPU, same torch) the one config tests/test_memory.py measures peaked at 1.37 times the estimate
# (ratio 0.73; the same config measures 0.91-1.10 here), so the allowance covers what has been seen, not only the
# calibration machine.
MEMORY_TOLERANCE = 0.30


@dataclass
class TrialMemory:
    """One trial's peak memory, estimated in pieces (bytes); trial_memory says how each is found. On a CUDA device
    (`device` True) the pieces that live on the GPU alone: subsets, weights, a step or an evaluation, records."""

    process: int  # the process before the trial: Python with torch and ablate imported
    dataset: int  # the dataset's images as its reader keeps them
    subsets: int  # train, dev and test subsets as float32 at image_size
    loading: int  # what drawing the subsets holds for a moment besides them
    weights: int  # parameters and buffers, and the best-dev copies
    step: int  # the most a training step holds at once: the batch, activations, gradients, momentum
    evaluation: int  # the most an evaluation batch holds at once
    records: int  # per-step losses and learning rates
    device: bool = False
    runtime: int = RUNTIME_BYTES  # what running adds beyond these tensors

    @property
    def peak(self) -> int:
        running = self.weights + max(self.step, self.evaluation) + self.records
        if self.device:
            return self.subsets + running
        return self.process + self.runtime + self.dataset + self.subsets + max(self.loading, running)

    @property
    def growth(self) -> int:
        """What the trial adds to its process (on a GPU: to the GPU's memory) at its peak."""
        return self.peak - (0 if self.device else self.process)

    def cannot_fit(self, limits: MemoryLimits | GpuMemory) -> str | None:
        """Why this trial can never run under `limits` (even with nothing else running), or None when it can:
        the estimate less its tolerance is above the room the tightest limit leaves."""
        room, where = limits.room()
        if self.growth * (1 - MEMORY_TOLERANCE) <= room:
            return None
        return (f"needs about {size_text(self.peak)} of memory at its peak (estimated within {MEMORY_TOLERANCE:.0%}: "
                f"{self.parts()}), more than {where} can give it")

    def not_now(self, limits: MemoryLimits | GpuMemory, at_once: int = 1, new_processes: bool = False) -> str | None:
        """Why `at_once` such trials may run out of the memory free now, or None. `new_processes`: each runs in a
        process yet to start (a study's workers), which needs its whole peak; else in the process that read
        `limits`, which holds part of it already."""
        free = limits.free()
        need = (self.peak if new_processes and not self.device else self.growth) * at_once
        if need <= free:
            return None
        each = f" ({size_text(self.peak)} each)" if at_once > 1 else ""
        return (f"need{'s' if at_once == 1 else ''} about {size_text(need)} more memory at "
                f"{'its' if at_once == 1 else 'their'} peak{each}, but {size_text(free)} is free now")

    def parts(self) -> str:
        """The largest pieces in words."""
        pieces = {"the dataset as read": 0 if self.device else self.dataset, "the subsets at image_size": self.subsets,
                  "weights and their copies": self.weights, "a training step": self.step,
                  "an evaluation batch": self.evaluation,
                  "torch and ablate": 0 if self.device else self.process + self.runtime}
        top = sorted(((v, k) for k, v in pieces.items() if v >= 2**20), reverse=True)[:3]
        return ", ".join(f"{k} {size_text(v)}" for v, k in top)


def trial_memory(cfg: TrialConfig, channels: int, classes: int, process: int, device: bool = False) -> TrialMemory:
    """One trial's peak resident memory, in pieces (bytes). `process`: the resident memory of the process before
    the trial, with torch and ablate imported (process_baseline()); `device`: the trial trains on a CUDA GPU (the
    pieces on the GPU alone).

    Method. The training step and the evaluation are measured, not modelled: the trial's own training step
    (ablate.train.loop.SingleModel, the trial's batch size, image size and optimizer, two steps so that momentum
    exists) and an evaluation batch (up to the 500 images the loop evaluates at once) run on torch's meta
    device, which works out every shape and allocates nothing, under a dispatch mode that adds up the bytes of
    the tensors alive at each moment and keeps the most (_live_bytes_mode). Run on real CPU tensors, the same
    two steps raised the process's peak resident memory by 0.88 to 1.08 times that figure (4 nets, 32 to 128
    pixels). The data are counted from their shapes: the
    dataset as its reader keeps it (uint8 at its own size: the registry's full split sizes; a folder's images
    from their headers), the three subsets as float32 at image_size, and what drawing them holds for a moment
    (the largest subset as float32 before resizing; for colour images, the float64 copies the per-channel
    statistics make). The weights count three times: the model's, the best-dev copy, and a new copy made before
    the old one is dropped. Per-step records: a float32 loss and two Python floats per step, plus one for a
    learning-rate schedule. To these come the process and RUNTIME_BYTES (torch's thread pools and kernel
    caches, the allocator's retained memory). fp32 and eager whatever the config says: bf16 holds less, a compiled
    step about as much.

    Error. Against the peak resident memory (ru_maxrss) of 11 real `ablate train` processes (digits upsampled to
    16 to 224 pixels and a folder of colour images at 64 and 128 pixels; batches of 16 to 128; ImageNet-family
    nets of depth 10, 18 and 34, CIFAR-family nets of depth 20 and 56; measured peaks of 0.9 to 2.5 GB; AMD EPYC,
    2 threads, torch 2.14.1 CPU) the estimate was 0.84 to 1.11 times the measured peak; runs of the same config
    differed by up to 10 % between them. On the CI machine the config tests/test_memory.py measures came out at 0.73
    (unexplained: more runtime memory there). MEMORY_TOLERANCE (30 %) is what the decisions and the tests allow;
    tests/test_memory.py measures one config again. Not calibrated: CUDA (the device pieces follow the same
    counts, without the CUDA context), more threads (per-thread buffers grow with them), bf16 and compiled
    trials (estimated as fp32 and eager).
    """
    weights, step, evaluation = _simulated(cfg, channels, classes)
    dataset, native = _dataset_bytes(cfg)
    image = 4 * channels * cfg.image_size ** 2
    subsets = image * (cfg.train_size + cfg.dev_size + cfg.test_size)
    loading = max(native, 2 * 2 * image * cfg.train_size if channels > 1 else 0)
    steps = cfg.total_steps()
    records = steps * (4 + 2 * 32 + (32 if cfg.schedule != "constant" or cfg.warmup_steps else 0))
    return TrialMemory(process=process, dataset=dataset, subsets=subsets, loading=loading,
                       weights=3 * weights, step=step, evaluation=evaluation, records=records, device=device)


def _live_bytes_mode():
    """A torch dispatch mode that adds up the bytes of the tensors alive at once (each new storage counted when an
    operation makes it, subtracted when torch frees it) and keeps the most in `peak`: run on the meta device, it
    measures what a training step or an evaluation holds at its peak without allocating any of it."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.now = self.peak = 0

        def _free(self, nbytes: int) -> None:
            self.now -= nbytes

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {id(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
            for t in tree_flatten(out)[0]:  # in-place results and views allocate nothing
                if isinstance(t, torch.Tensor) and id(t) not in inputs and not t._is_view():
                    nbytes = t.untyped_storage().nbytes()
                    self.now += nbytes
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(t, self._free, nbytes)
            return out

    return LiveBytes()


def _largest_batch(cfg: TrialConfig) -> int:
    """The largest batch a step trains on: a last batch of one image is folded into the batch before it."""
    n, b = cfg.train_size, cfg.batch_size
    return min(n, b) + (n > b and n % b == 1)


def _eval_batch(cfg: TrialConfig) -> int:
    """The most images an evaluation runs at once: the loop's batch (ablate.train.loop.evaluate's default), or the
    largest split it evaluates (the training subset is scored too)."""
    import inspect

    from ablate.train import evaluate

    return min(int(inspect.signature(evaluate).parameters["batch"].default),
               max(cfg.train_size, cfg.dev_size, cfg.test_size))


_SIMULATED: dict[tuple, tuple[int, int, int]] = {}


def _simulated(cfg: TrialConfig, channels: int, classes: int) -> tuple[int, int, int]:
    """(bytes of the weights and buffers, the most a training step holds at once, the most an evaluation batch
    holds at once), measured on the meta device; remembered for configs that differ in nothing they depend on."""
    key = (cfg.model_key(), channels, classes, cfg.image_size, _largest_batch(cfg), _eval_batch(cfg), cfg.momentum > 0,
           cfg.nesterov, cfg.channels_last)
    if key not in _SIMULATED:
        _SIMULATED[key] = _in_child(_simulate, cfg, channels, classes)
    return _SIMULATED[key]


def _in_child(work: Callable[..., tuple[int, ...]], *args) -> tuple[int, ...]:
    """work(*args), a tuple of ints, worked out in a forked child where this process may fork (Linux, no other Python
    thread running), else here; here too when the child fails. Why: torch's meta kernels written in Python (batch
    norm's, through torch._refs) import torch._dynamo, inductor and sympy, about 150 MB that would stay in this
    process through the trial it goes on to run (`ablate train`); the child holds them for a moment and exits."""
    import json
    import os
    import sys
    import threading

    if not sys.platform.startswith("linux") or threading.active_count() > 1:
        return work(*args)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: writes its answer and exits, whatever happens (no cleanup of the parent's state)
        code = 1
        try:
            os.close(read)
            with os.fdopen(write, "w") as out:
                json.dump([int(v) for v in work(*args)], out)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as answer:
        text = answer.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return work(*args)
    return tuple(json.loads(text))


def _simulate(cfg: TrialConfig, channels: int, classes: int) -> tuple[int, int, int]:
    import torch

    from ablate.models import build_trial_model
    from ablate.train import SingleModel

    meta = torch.device("meta")
    with meta:
        model = build_trial_model(cfg, channels, classes)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    batch = _largest_batch(cfg)
    shape = (batch, channels, cfg.image_size, cfg.image_size)
    trainer = SingleModel([model], [cfg.replace(precision="fp32", compile="none", telemetry=False)], meta, shape)
    with _live_bytes_mode() as step:
        for i in range(2):
            x = torch.empty(shape, device=meta).contiguous(memory_format=trainer.memory_format)
            y = torch.empty(batch, dtype=torch.int64, device=meta)
            trainer.train_step([x], [y], i, (), [])
            del x, y
    x = torch.empty((_eval_batch(cfg), *shape[1:]), device=meta).contiguous(memory_format=trainer.memory_format)
    model.eval()
    with _live_bytes_mode() as evaluation, torch.inference_mode():
        model(x)
    return weights, step.peak, evaluation.peak


def _dataset_bytes(cfg: TrialConfig) -> tuple[int, int]:
    """(bytes of the dataset as its reader keeps it: uint8 images at their own size, train and test parts, but for
    the IDX reader's datasets (the MNIST family) their int64 labels alone, the images being read when drawn; bytes
    of the largest subset as float32 at that size, which resizing holds for a moment). A folder's images are counted
    from their headers (ablate.data.readers.folder_pixels), as RGB; `auto` counts as MNIST, the larger; a user's data
    loader as MNIST's images held in memory (what it returns is known only once it has run)."""
    from ablate.data import FOLDER, info

    largest = max(cfg.train_size, cfg.dev_size, cfg.test_size)
    if cfg.dataset.startswith(FOLDER):
        from ablate.data import folder_pixels

        pixels, most = folder_pixels(cfg.dataset)
        return 3 * pixels, 4 * 3 * most * largest
    d = info(cfg.dataset) or info("mnist")
    image = d.channels * d.image_size ** 2
    kept = 8 if info(cfg.dataset) is d and d.reader == "idx" else image
    return (d.train_images + d.test_images) * kept, 4 * image * largest


def process_baseline() -> int:
    """The resident memory of this process with torch and ablate's training loop imported: what a trial's process
    (a `train` command, a study's worker) holds before its trial starts. A study's Ray worker also holds Ray:
    about 40 MB more, measured here."""
    import ablate.train.loop  # noqa: F401  imports torch

    return resident_bytes()


def _probe_configs(study: Study) -> list[TrialConfig]:
    """Every config whose memory may differ: the planned trials, and each arm with each searched parameter at each
    of its bounds or choices (a searched batch_size or image_size peaks at its top)."""
    configs = [cfg for _, cfg, _ in planned(study)]
    first = {p.name: (p.low if p.distribution != "choice" else p.choices[0]) for p in study.space}
    for arm in study.arms:
        for p in study.space:
            for value in ([p.low, p.high] if p.distribution != "choice" else list(p.choices)):
                configs.append(study.arm_config(arm, **{**first, p.name: value}))
    return configs


@dataclass
class StudyMemory:
    """The largest trial of a study against what this machine (or its GPU) has, for trials run `at_once`."""

    trial: TrialMemory
    what: str  # the largest trial's model, input and batch, in words
    at_once: int
    limits: MemoryLimits | GpuMemory
    cpus_per_trial: int = 1
    torch_cuda: str | None = None  # the CUDA version torch was built for (torch.version.cuda), None: a CPU-only build

    def lines(self) -> list[str]:
        room, where = self.limits.room()
        on = "on its GPU" if self.trial.device else "in its process"
        total = self.trial.peak * self.at_once
        out = [f"memory: a trial peaks at about {size_text(self.trial.peak)} {on} (estimated within "
               f"{MEMORY_TOLERANCE:.0%}: {self.trial.parts()}; largest: {self.what}), {self.at_once} at once about "
               f"{size_text(total)}; {where}, {size_text(self.limits.free())} free now"]
        if self.torch_cuda and not self.trial.device:
            out.append(f"memory: this torch is built for CUDA {self.torch_cuda} and the trials run on the CPU: every "
                       "trial's process loads torch's CUDA libraries all the same (part of 'torch and ablate' above); "
                       "PyTorch's CPU-only wheels leave them out (README, Install)")
        return out

    def warnings(self) -> list[str]:
        never = self.trial.cannot_fit(self.limits)
        if never:
            return [f"a trial of {self.what} {never}: it cannot run here; lower image_size or batch_size"]
        short = self.trial.not_now(self.limits, self.at_once, new_processes=True)
        if short:
            fewer = max(1, self.limits.free() // max(1, self.trial.peak))
            how = f"run fewer at once (--cpus {fewer * self.cpus_per_trial})" if fewer < self.at_once else \
                "free some memory"
            return [f"{self.at_once} trials of {self.what} at once {short}: {how}, or lower image_size or batch_size"]
        return []


def study_memory(study: Study, resources, baseline: int) -> StudyMemory:
    """The study's largest trial (over _probe_configs) against this machine's memory, or its GPU's when the study
    runs on GPUs (trials sharing a GPU by the plan's share)."""
    from ablate.data import expected_shape
    from ablate.machine_memory import gpu_memory, memory_limits

    on_gpu = bool(resources.gpus)
    largest, what = None, ""
    for cfg in _probe_configs(study):
        channels, classes = expected_shape(cfg.dataset)
        memory = trial_memory(cfg, channels, classes, baseline, device=on_gpu)
        if largest is None or memory.peak > largest.peak:
            largest, what = memory, _arch(cfg)
    if on_gpu:
        limits = gpu_memory(0)
        at_once = max(1, round(1 / resources.gpu_share()))
    else:
        limits, at_once = memory_limits(), resources.concurrency()
    import torch

    # A cluster's trials run on its nodes' torch, which this machine's does not tell.
    cuda = None if resources.address else torch.version.cuda
    return StudyMemory(largest, what, at_once, limits, resources.cpus_per_trial(), cuda)


def out_of_memory(exc: BaseException, memory: TrialMemory, before: MemoryLimits | GpuMemory) -> tuple[int, str]:
    """(exit code, what happened and what to change) for a trial that ran out of memory (`exc`), `memory` being its
    estimate and `before` the limits read before it started. 2, the config's: the failed allocation crossed a
    limit of the process itself (ulimit), or the trial needs more than the tightest limit could ever give it
    (the estimate, or what it held when it failed plus what it asked for, whichever is more). 3, the machine's:
    it would fit, but other programs held the memory it needed then."""
    from ablate.machine_memory import gpu_memory, memory_limits, requested_bytes

    asked = requested_bytes(exc)
    if memory.device:
        import torch

        held = torch.cuda.memory_reserved(before.index)
        free = gpu_memory(before.index).free()
    else:
        now = memory_limits()
        for limit, used, name in now.rlimits:
            if used + asked > limit:
                return 2, (f"out of memory: this trial asked for {size_text(asked)} more with {size_text(used)} "
                           f"already in use, past this process's {name} of {size_text(limit)}; raise the limit, or "
                           f"lower image_size or batch_size (the trial needs about {size_text(memory.peak)} at its "
                           "peak, estimated)")
        held, free = now.resident - memory.process, now.free()
    need = max(memory.growth * (1 - MEMORY_TOLERANCE), held + asked)
    room, where = before.room()
    if need > room:
        return 2, (f"out of memory: this trial needs about {size_text(max(memory.peak, need))} of memory at its peak, "
                   f"more than {where} can give it ({memory.parts()}); lower image_size or batch_size")
    return 3, (f"out of memory: this trial needs about {size_text(memory.peak)} at its peak and {where} could give it "
               f"that, but other programs held the memory it needed ({size_text(free)} free now); free some memory, "
               "then run the same command again")


def check_data_fits(cfg: TrialConfig, limits: MemoryLimits) -> None:
    """Refuse (one line) a config whose data alone, the dataset as read and its subsets at image_size, can never be
    held here: a study loads them before its dry run can say anything, and would be ended by the allocator or the
    kernel instead. Counted exactly from their shapes (trial_memory), no tolerance needed."""
    from ablate.data import expected_shape

    dataset, _ = _dataset_bytes(cfg)
    subsets = 4 * expected_shape(cfg.dataset)[0] * cfg.image_size ** 2 * (cfg.train_size + cfg.dev_size + cfg.test_size)
    room, where = limits.room()
    if dataset + subsets > room:
        raise AblateError(f"the data alone need {size_text(dataset + subsets)} of memory ({size_text(subsets)} for the "
                          f"train, dev and test subsets at image_size {cfg.image_size}), more than {where} can give: "
                          "lower image_size or the subset sizes")
