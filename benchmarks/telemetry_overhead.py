"""Cost of gradient telemetry: run_trial with telemetry on vs off, same config, one process.

The reference protocol (ResNet18, batch 64, dev evaluation every 15 steps) on 1000 training
images for one epoch, so a run records step 0, step 15 and the last step (16) as a real trial does.
Repetitions alternate on/off (and which of the two goes first) so drift from other processes on
the machine hits both sides. Printed, for whole-trial and training-loop wall seconds:

- the median of each side and their ratio (the headline, target <= 1.03);
- the median of the per-pair ratios (on and off run back to back see about the same load);
- the ratio of the minima (interference only ever adds time, so the fastest run is the cleanest).

On a machine others are using, the three disagree and the spread per side is printed to judge
by. A component check follows that does not depend on whole trials: the extra time of one
recorded step (hooks armed on the forward pass + the norms), times the records per trial, over
the median trial time.

    python benchmarks/telemetry_overhead.py [--reps 15] [--threads 2] [--dataset auto]
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from ablate.models.registry import ModelSpec
from ablate.execute.step_timer import time_steps
from ablate.models.resnet import build_model
from ablate.train.device import torch_threads
from ablate.train.loop import run_trial
from ablate.train.telemetry import GradTelemetry
from ablate.spec.trial_config import TrialConfig


def component_seconds(threads: int, reps: int = 15) -> tuple[float, float]:
    """(median seconds of a plain forward+backward, median extra seconds a recorded step adds), both timed by
    the one step timer (ablate.execute.step_timer)."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("imagenet", 18)).to(memory_format=torch.channels_last).train()
    x = torch.randn(64, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))
    telemetry = GradTelemetry(model)

    def step(record: bool) -> None:
        if record:
            telemetry.arm()
        logits = model(x)
        if record:
            telemetry.disarm()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(logits, y).backward()
        if record:
            telemetry.record((0,))

    with torch_threads(threads):
        plain = time_steps(lambda: step(False), reps, warmup=3).median
        recorded = time_steps(lambda: step(True), reps, warmup=3).median
    return plain, recorded - plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="timed runs per side")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dataset", default="auto")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    base = TrialConfig(family="imagenet", depth=18, batch_size=64, eval_every=15, train_size=1000, dev_size=200,
                       test_size=200, epochs=args.epochs, dataset=args.dataset, threads=args.threads)
    configs = {True: base.replace(telemetry=True), False: base.replace(telemetry=False)}
    # Warm-up: imports, the data cache, the allocator and CPU clocks settle before anything is timed.
    for cfg in configs.values():
        run_trial(cfg)
    total: dict[bool, list[float]] = {True: [], False: []}
    train: dict[bool, list[float]] = {True: [], False: []}
    for rep in range(args.reps):
        for on in ((True, False) if rep % 2 == 0 else (False, True)):
            result = run_trial(configs[on])
            total[on].append(result.total_seconds)
            train[on].append(result.train_seconds)
    records = len({r["step"] for r in run_trial(configs[True]).grad_norms})
    print(f"model ResNet18 (imagenet, residual), batch 64, eval_every 15, {result.steps} steps "
          f"({records} telemetry records), threads {args.threads}, {args.reps} reps per side")
    for name, runs in (("trial wall (total_seconds)", total), ("training loop wall (train_seconds)", train)):
        on, off = statistics.median(runs[True]), statistics.median(runs[False])
        paired = statistics.median(a / b for a, b in zip(runs[True], runs[False]))
        print(f"{name}: median on {on:.3f} s, off {off:.3f} s -> ratio {on / off:.3f} (target <= 1.03); "
              f"median paired ratio {paired:.3f}; ratio of minima {min(runs[True]) / min(runs[False]):.3f}")
        for side in (True, False):
            v = sorted(runs[side])
            print(f"  {'on ' if side else 'off'} min {v[0]:.3f} max {v[-1]:.3f}: {', '.join(f'{x:.3f}' for x in runs[side])}")
    step_s, extra_s = component_seconds(args.threads)
    trial_s = statistics.median(total[False])
    print(f"component: forward+backward {step_s * 1000:.1f} ms, a recorded step adds {extra_s * 1000:.2f} ms; "
          f"{records} records / {trial_s:.3f} s trial -> estimated ratio {1 + records * extra_s / trial_s:.4f}")


if __name__ == "__main__":
    main()
