"""What a study will cost before it runs: training steps per stage, time measured on this machine, disk.

The step counts follow the planner's own schedule (rounds, halving rungs, confirm seeds), assuming no
trial diverges. Time = steps x the seconds per training step measured here for each architecture
(a few steps on random data at the spec's batch size and threads), plus the dev evaluations, spread
over the trials that run at once. Disk = the weights the spec keeps, plus the checkpoints of trials
paused at a rung while a round runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ablate.spec.trial_config import TrialConfig
from ablate.spec.study_spec import Study
from ablate.engine.trial_plan import plan_fixed_stage


@dataclass
class Estimate:
    steps: dict[str, int]                    # training steps per stage
    seconds: float                           # wall time, training and evaluation only
    step_ms: dict[str, float] = field(default_factory=dict)  # measured per architecture
    weights_mb: float = 0.0                  # weights.pt kept at the end
    weights_files: int = 0
    checkpoint_mb: float = 0.0               # at most, while a round's trials wait at a rung

    def lines(self) -> list[str]:
        steps = ", ".join(f"{stage} {n:,}" for stage, n in self.steps.items())
        speeds = "; ".join(f"{arch} {ms:.0f} ms" for arch, ms in self.step_ms.items())
        out = [f"estimate: {steps} training steps; about {_duration(self.seconds)} of training and evaluation "
               f"at the trials-at-once above (measured here per step: {speeds}), plus Ray start-up and about a "
               "second per trial"]
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
    from ablate.data.readers import expected_shape

    channels, classes = expected_shape(cfg.dataset)
    return " ".join(x for x in (cfg.model.key(), f"{channels}x{cfg.image_size}px {classes} classes batch {cfg.batch_size}",
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
    from ablate.data.readers import expected_shape
    from ablate.models.resnet import build_model

    channels, classes = expected_shape(cfg.dataset)
    return build_model(cfg.model, channels, classes), channels, classes


def _seconds_per_step(cfg: TrialConfig) -> float:
    import torch

    from ablate.execute.step_timer import time_steps
    from ablate.train.device import torch_threads
    from ablate.train.loop import SingleModel

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


def estimate(study: Study, concurrency: int) -> Estimate:
    trials = planned(study)
    per_step: dict[str, float] = {}
    sizes: dict[str, int] = {}
    steps: dict[str, int] = {}
    compute = 0.0
    weights, files, checkpoint = 0, 0, 0
    for stage, cfg, n in trials:
        arch = _arch(cfg)
        if arch not in per_step:
            per_step[arch] = _seconds_per_step(cfg)
            sizes[arch] = _state_bytes(cfg)
        steps[stage] = steps.get(stage, 0) + n
        evals = len(cfg.evaluation_steps())
        # an evaluation is a forward pass over the dev set: about a third of a training step per batch
        eval_steps = evals * math.ceil(cfg.dev_size / cfg.batch_size) / 3
        compute += (n + eval_steps) * per_step[arch]
        if study.keeps_weights(stage):
            weights += sizes[arch]
            files += 1
    if study.halving:
        # model, best-dev copy and optimizer state for every trial of a round that waits at a rung
        biggest = max(sizes.values())
        checkpoint = 3 * biggest * study.round_size * len(study.arms)
    return Estimate(steps=steps, seconds=compute / max(1, concurrency),
                    step_ms={a: 1000 * s for a, s in per_step.items()}, weights_mb=weights / 2**20,
                    weights_files=files, checkpoint_mb=checkpoint / 2**20)
