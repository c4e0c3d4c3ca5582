"""Whether a study fuses trials (`--fuse off|auto|K`, off by default), and the step-time measurement `auto`
decides by.

Fused trials (ablate.train.fused) train K trials that share one architecture as one model batched over K. A
fused member's numbers are not those of the same trial run alone (the batched kernels round differently and
training amplifies it), so fusing is never the default: `off` trains every trial alone, and a study fuses only
when asked, its fused trials marked in trials.csv (`fused_with`). `auto` never fuses on a CPU (measured slower
than running the members in turn); on a GPU it fuses when one step of K fused members is measured faster than
the chosen number of separate trials, so whether it fuses depends on the machine.
"""
from __future__ import annotations

from ablate.engine import Resources
from ablate.errors import AblateError
from ablate.spec import Study, TrialConfig


FUSE_MEMBERS = 4  # members per fused group when `--fuse auto` decides to fuse
OFF = ("off: every trial trains alone (the default; --fuse auto or K trains trials batched as one model, faster on a "
       "GPU but with slightly different numbers, marked in trials.csv's fused_with column)")


def fuse_plan(option: str, res: Resources, spec: Study, table: dict[int, float] | None = None,
              in_channels: int = 1, num_classes: int = 10) -> tuple[int, str]:
    """How many trials train as one fused model (1: none), and why, in words for the manifest. `table` is the
    GPU plan's measured total img/s per count of separate trials at once, when it measured one; `in_channels`
    and `num_classes` are the study's data's (the launcher knows them), so the measured model is the trials' own."""
    from ablate.spec import fusable

    option = str(option).strip().lower()
    tuning = ""
    if spec.space and spec.halving:
        tuning = ("; tuning trials are not fused: halving pauses them at rungs with a checkpoint each, so only "
                  "confirm and grid trials are")
    if option == "off":
        return 1, OFF
    if option != "auto" and not option.isdigit():
        raise AblateError(f"--fuse must be auto, off or a number of members (2 or more), got {option!r}")
    if option.isdigit() and int(option) < 2:
        raise AblateError(f"--fuse {option}: a fused group needs at least 2 members; use --fuse off not to fuse")
    cfg = spec.first_config()
    why_not = fusable([cfg, cfg.replace(seed=cfg.seed + 1)])
    if why_not:
        return 1, f"{option}: not fused: {why_not}"
    if option.isdigit():
        k = int(option)
        return k, f"up to {k} trials per fused model, as asked" + tuning
    if res.gpus == 0 or res.address:
        where = "on a CPU" if res.gpus == 0 else "when attached to a cluster (nothing to measure here)"
        return 1, (f"auto: not fused {where}; on a CPU a fused model was measured slower than its members trained in "
                   "turn (benchmarks/gpu_check.sh measures both)")

    single, fused = measure(cfg, FUSE_MEMBERS, "cuda", in_channels=in_channels, num_classes=num_classes)
    fused_ips = FUSE_MEMBERS * cfg.batch_size / fused
    slots = max(1, round(1 / res.gpu_share()))
    if table and slots in table:
        # Against what the chosen number of separate trials per GPU was measured to do together.
        gain, against = fused_ips / table[slots], f"{table[slots]:,.0f} img/s measured for {slots} separate trials at once"
    else:
        # Separately, `slots` trials share a GPU at best `slots` times as fast as one.
        gain = FUSE_MEMBERS * single / min(slots, FUSE_MEMBERS) / fused
        against = f"the best case of {slots} separate trials per GPU ({single * 1e3:.1f} ms a step alone)"
    if gain > 1:
        return FUSE_MEMBERS, (f"auto: {FUSE_MEMBERS} trials per fused model, measured on this GPU: {FUSE_MEMBERS} fused "
                              f"members {fused_ips:,.0f} img/s ({fused * 1e3:.1f} ms a step), {gain:.2f}x {against}"
                              + tuning)
    return 1, (f"auto: not fused, measured on this GPU: {FUSE_MEMBERS} fused members {fused_ips:,.0f} img/s "
               f"({fused * 1e3:.1f} ms a step), {gain:.2f}x {against}")


def measure(config: TrialConfig, k: int, device: str, steps: int = 4, *, in_channels: int = 1,
            num_classes: int = 10) -> tuple[float, float]:
    """Seconds per training step of one trial alone and of k fused members, on random data of the config's
    shape: the trial's own model (every axis), for `in_channels`-channel images of `num_classes` classes, through
    the training loop's own steps (ablate.train.loop.SingleModel, ablate.train.fused.FusedModel), timed by
    ablate.execute.step_timer. What `study --fuse auto` decides by."""
    import torch

    from ablate.execute.step_timer import time_steps
    from ablate.models import build_trial_model
    from ablate.train import FusedModel, SingleModel

    device = torch.device(device)
    shape = (config.batch_size, in_channels, config.image_size, config.image_size)

    def make():
        return build_trial_model(config, in_channels, num_classes).to(device)

    single = SingleModel([make()], [config], device, shape)
    fused = FusedModel([make() for _ in range(k)], [config.replace(seed=config.seed + i) for i in range(k)], device,
                       shape)
    x, y = torch.randn(shape, device=device), torch.randint(0, num_classes, shape[:1], device=device)
    one = x.contiguous(memory_format=single.memory_format)
    alone = time_steps(lambda: single.train_step([one], [y], 0, (), []), steps, device=device)
    together = time_steps(lambda: fused.train_step([x] * k, [y] * k, 0, (), []), steps, device=device)
    return alone.median, together.median
