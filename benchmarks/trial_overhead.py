"""Trial runner's training step vs a bare PyTorch loop: same model, data, batch and threads, one process.

Both sides train ResNet18 on the same in-memory MNIST subset, and both are timed by the one step timer
(ablate.execute.step_timer): the runner's step is the shared training loop's (ablate.train.loop.TrainingLoop.step,
the step every single and fused trial takes), the bare side a hand-written step; the first step pays one-off
allocation and is not timed. Repetitions alternate runner/bare so drift hits both. Prints the median seconds
per step of each and their ratio (target <= 1.05), and the ratio of the fastest repetitions, the one to read on
a machine shared with other jobs.

With a recipe (--schedule, --warmup-steps, --augment, --nesterov) the bare loop does the same work: it sets
the scheduled learning rate before each step and augments each batch with the same on-device Augmenter.

    python benchmarks/trial_overhead.py [--steps 48] [--reps 5] [--threads 2]
    python benchmarks/trial_overhead.py --schedule cosine --warmup-steps 8 --augment crop --nesterov
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from ablate.data.splits import load_splits
from ablate.execute.step_timer import time_steps
from ablate.models.resnet import build_model
from ablate.train.augment import Augmenter
from ablate.spec.trial_config import TrialConfig
from ablate.train.loop import TrainingLoop
from ablate.train.device import seed_everything, torch_threads


def time_runner(cfg: TrialConfig) -> float:
    """Median seconds of the training loop's step (steps 2 .. N of one epoch)."""
    with torch_threads(cfg.threads):
        loop = TrainingLoop([cfg]).prepare()
        return time_steps(loop.step, cfg.total_steps() - 1, warmup=1).median


def time_bare(cfg: TrialConfig) -> float:
    """Median seconds of a hand-written step on the same data (steps 2 .. N of one epoch)."""
    splits = load_splits(cfg.dataset, None, cfg.train_size, cfg.dev_size, cfg.test_size, seed=cfg.data_seed)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, splits.in_channels, splits.num_classes)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    x = splits.train.x.contiguous(memory_format=torch.channels_last)
    y = splits.train.y
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.seed))
    rates = cfg.learning_rates()
    augment = None if cfg.augment == "none" else Augmenter(
        cfg.augment, [-m / s for m, s in zip(splits.mean, splits.std)], torch.device("cpu"), cfg.seed)
    done = [0]

    def step() -> None:  # one epoch: the benchmark's training subset is exactly its steps' batches
        start = done[0] * cfg.batch_size
        idx = order[start:start + cfg.batch_size]
        batch = x[idx] if augment is None else augment(x[idx])
        if rates is not None:
            for group in opt.param_groups:
                group["lr"] = rates[done[0]]
        done[0] += 1
        loss = F.cross_entropy(model(batch), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()

    with torch_threads(cfg.threads):
        return time_steps(step, cfg.total_steps() - 1, warmup=1).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=48, help="training steps per repetition")
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dataset", default="auto")
    parser.add_argument("--schedule", default="constant", help="constant, step or cosine")
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--augment", default="none", help="none, crop or crop-flip (not on digits)")
    parser.add_argument("--nesterov", action="store_true", help="Nesterov momentum 0.9 (else momentum 0)")
    args = parser.parse_args()
    batch = 64
    # Training size = whole batches so both loops take exactly `steps` steps; no dev evaluation inside.
    cfg = TrialConfig(dataset=args.dataset, train_size=batch * args.steps, dev_size=64, test_size=64,
                      epochs=1, eval_every=10**7, threads=args.threads, batch_size=batch, schedule=args.schedule,
                      warmup_steps=args.warmup_steps, augment=args.augment, nesterov=args.nesterov,
                      momentum=0.9 if args.nesterov else 0.0)
    # Warm-up: imports, data cache, allocator and CPU clocks settle before anything is timed.
    time_runner(cfg)
    time_bare(cfg)
    runner, bare = [], []
    for _ in range(args.reps):
        runner.append(time_runner(cfg))
        bare.append(time_bare(cfg))
    r, b = statistics.median(runner), statistics.median(bare)
    print(f"model ResNet18 (imagenet, residual), batch {batch}, threads {args.threads}, {args.steps} steps x {args.reps} reps; "
          f"recipe: schedule {cfg.schedule}, warm-up {cfg.warmup_steps}, augment {cfg.augment}, nesterov {cfg.nesterov}")
    print(f"runner: {r * 1000:.1f} ms/step ({batch / r:.0f} img/s)   per rep: {', '.join(f'{v*1000:.1f}' for v in runner)}")
    print(f"bare:   {b * 1000:.1f} ms/step ({batch / b:.0f} img/s)   per rep: {', '.join(f'{v*1000:.1f}' for v in bare)}")
    print(f"ratio runner/bare: {r / b:.3f} (target <= 1.05)")
    # Other processes only ever add time: on a shared machine the fastest repetitions are the least disturbed.
    print(f"ratio of the fastest reps: {min(runner) / min(bare):.3f} (runner {min(runner) * 1000:.1f} ms, "
          f"bare {min(bare) * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
