"""Trial runner's training step vs a bare PyTorch loop: same model, data, batch and threads, one process.

Both sides train ResNet18 on the same in-memory MNIST subset; each repetition times steps 2..N
(the first step pays one-off allocation). Repetitions alternate runner/bare so drift hits both.
Prints the median seconds per step of each and their ratio (target <= 1.05).

    python benchmarks/trial_overhead.py [--steps 48] [--reps 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ablate.data import load_splits
from ablate.models import build_model
from ablate.trial import TrialConfig, run_trial, seed_everything


def time_runner(cfg: TrialConfig) -> float:
    stamps: dict[int, float] = {}
    run_trial(cfg, progress=lambda step, total: stamps.__setitem__(step, time.perf_counter()))
    last = max(stamps)
    return (stamps[last] - stamps[1]) / (last - 1)


def time_bare(cfg: TrialConfig) -> float:
    torch.set_num_threads(cfg.threads)
    splits = load_splits(cfg.dataset, None, cfg.train_size, cfg.dev_size, cfg.test_size, seed=cfg.data_seed)
    seed_everything(cfg.seed)
    model = build_model(cfg.family, cfg.depth, residual=cfg.residual, shortcut=cfg.shortcut)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    x = splits.train.x.contiguous(memory_format=torch.channels_last)
    y = splits.train.y
    gen = torch.Generator().manual_seed(cfg.seed)
    stamps = []
    for _ in range(cfg.epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
            stamps.append(time.perf_counter())
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=48, help="training steps per repetition")
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dataset", default="auto")
    args = parser.parse_args()
    batch = 64
    # Training size = whole batches so both loops take exactly `steps` steps; no dev evaluation inside.
    cfg = TrialConfig(dataset=args.dataset, train_size=batch * args.steps, dev_size=64, test_size=64,
                      epochs=1, eval_every=10**9, threads=args.threads, batch_size=batch)
    # Warm-up: imports, data cache, allocator and CPU clocks settle before anything is timed.
    time_runner(cfg)
    time_bare(cfg)
    runner, bare = [], []
    for _ in range(args.reps):
        runner.append(time_runner(cfg))
        bare.append(time_bare(cfg))
    r, b = statistics.median(runner), statistics.median(bare)
    print(f"model ResNet18 (imagenet, residual), batch {batch}, threads {args.threads}, {args.steps} steps x {args.reps} reps")
    print(f"runner: {r * 1000:.1f} ms/step ({batch / r:.0f} img/s)   per rep: {', '.join(f'{v*1000:.1f}' for v in runner)}")
    print(f"bare:   {b * 1000:.1f} ms/step ({batch / b:.0f} img/s)   per rep: {', '.join(f'{v*1000:.1f}' for v in bare)}")
    print(f"ratio runner/bare: {r / b:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
