"""What one GPU does for ablate, measured side by side in one run, printed as one table.

Rows (img/s = training images per second, summed over the trials that run together):
  one trial, fp32 eager        the trial runner as a study runs it (ResNet18, 1x32x32, batch 64)
  one trial, bf16 eager        the same trial with precision: bf16 (autocast)
  one trial, fp32 compiled ... with compile: default, and with compile: reduce-overhead (CUDA graphs);
                               the first compiled step (the compile itself) is not timed
  one trial, bf16 compiled ... with both (not with --smoke)
  K packed processes           K separate trial processes sharing the device
  K fused members              K trials as one vmapped model (ablate.train.fused), one process
  N at once (gpu plan)         on CUDA: ablate.execute.gpu_plan's measurement of 1, 2, 4, 8 concurrent training loops,
                               the count a study would choose, written to the cache a study reads
  study residual-ablation      wall time of `study residual-ablation --gpus 1` (only where Ray is installed)
Data: scikit-learn's digits resized to 32x32 (nothing to download). Needs only torch, torchvision,
numpy, scikit-learn, PyYAML (no Ray, no Optuna for the trial-level rows).

    PYTHONPATH=. python benchmarks/gpu_check.py [--device cuda] [--ks 4 8 16] [--steps 60]
    PYTHONPATH=. python benchmarks/gpu_check.py --device cpu --ks 2 --steps 8   # ResNet18 on a CPU
    PYTHONPATH=. python benchmarks/gpu_check.py --device cpu --smoke            # every row, a tiny model: the script itself
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ablate.spec.trial_config import TrialConfig

BATCH = 64
DIGITS_TRAIN = 1_437  # digits' training images: a pass of the timed loop holds at most this many

CHILD = r"""
import json, sys
sys.path.insert(0, {root!r})
from ablate.spec.trial_config import TrialConfig
sys.path.insert(0, {here!r})
from gpu_check import timed_loop
times = timed_loop([TrialConfig.from_dict(json.loads({cfg!r}))], {device!r})
print(json.dumps({{"first": times.start, "last": times.end, "steps": times.steps}}))
"""


SMOKE = {"family": "imagenet", "depth": 10, "image_size": 8}  # compiles in seconds, not minutes, on a CPU
VARIANTS = [("fp32", "none"), ("bf16", "none"), ("fp32", "default"), ("fp32", "reduce-overhead"),
            ("bf16", "reduce-overhead")]


def config(steps: int, threads: int, batch: int = BATCH, **over) -> TrialConfig:
    """Whole batches of digits (at most 20 a pass: digits has 1,437 training images), as many passes as
    `steps` needs, no evaluation inside the timed steps (only after the last one)."""
    per_epoch = min(steps, 20)
    return TrialConfig(dataset="digits", train_size=batch * per_epoch, dev_size=64, test_size=64, batch_size=batch,
                       epochs=-(-steps // per_epoch), eval_every=10**6, threads=threads, **{"image_size": 32, **over})


def variant_name(precision: str, compile_mode: str) -> str:
    return f"one trial, {precision} " + ("eager" if compile_mode == "none" else f"compiled {compile_mode}")


def timed_loop(configs: list[TrialConfig], device: str):
    """The training loop's steps (one trial, or the configs fused) timed as one span by the one step timer, as a
    study runs them; steps 1 (telemetry, eager) and 2 (the compile, when compiled) are not timed."""
    from ablate.execute.step_timer import time_steps
    from ablate.train.device import torch_threads
    from ablate.train.fused import FusedModel
    from ablate.train.loop import SingleModel, TrainingLoop

    with torch_threads(configs[0].threads):
        loop = TrainingLoop(configs, SingleModel if len(configs) == 1 else FusedModel, device=device).prepare()
        return time_steps(loop.step, configs[0].total_steps() - 2, warmup=2, device=device, each=False)


def one_trial(cfg: TrialConfig, device: str) -> float:
    """img/s of one trial."""
    return cfg.batch_size / timed_loop([cfg], device).mean


def gpu_plan_rows(cfg: TrialConfig) -> list[tuple[str, float]]:
    """ablate.execute.gpu_plan's own measurement on this GPU (1, 2, 4, 8 training loops at once), cached for studies."""
    from ablate.execute import gpu_plan

    table = gpu_plan.measure_table(cfg, 1, "cuda")
    where = gpu_plan.write_cache(gpu_plan.shape_key(cfg, 1, gpu_plan.device_name()), table)
    chosen = gpu_plan.choose(table)
    print(f"gpu plan: {chosen} trial(s) per GPU would be chosen; cached in {where}")
    return [(f"{k} at once (gpu plan){' *' if k == chosen else ''}", v) for k, v in sorted(table.items())]


def packed(cfg: TrialConfig, device: str, k: int) -> float:
    """K trial processes at once; img/s over the span in which all of them were training."""
    procs = [subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT), here=str(ROOT / "benchmarks"),
                                                                  cfg=json.dumps(cfg.replace(seed=s).to_dict()), device=device)],
                              stdout=subprocess.PIPE, text=True) for s in range(k)]
    out = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("a packed trial process failed")
    span = max(o["last"] for o in out) - min(o["first"] for o in out)
    return cfg.batch_size * sum(o["steps"] for o in out) / span


def fused(cfg: TrialConfig, device: str, k: int) -> float:
    """img/s of k trials fused into one model."""
    return k * cfg.batch_size / timed_loop([cfg.replace(seed=s) for s in range(k)], device).mean


def study_seconds(device: str) -> str:
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("optuna") is None:
        return "skipped: Ray or Optuna not installed here"
    import tempfile

    gpus = ["--gpus", "1"] if device.startswith("cuda") else []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, str(ROOT / "cli.py"), "study", "residual-ablation", "--dataset", "digits",
                              "--out", str(Path(tmp) / "run"), *gpus], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    return f"{wall:.1f} s wall" if run.returncode == 0 else f"failed: {run.stderr.strip().splitlines()[-1:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--steps", type=int, default=60, help="training steps per measurement")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-study", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="ResNet-10 at 8x8 instead of ResNet18 at 32x32: every "
                        "row runs on a CPU in a minute or two (checks the script; its numbers describe nothing)")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"batch size (default {BATCH})")
    parser.add_argument("--compile-modes", nargs="*", default=["default", "reduce-overhead"],
                        choices=["default", "reduce-overhead"], help="the compiled rows to measure (default: both)")
    args = parser.parse_args()
    if args.batch < 1 or args.batch * min(args.steps, 20) > DIGITS_TRAIN:
        parser.error(f"--batch x min(--steps, 20) images a pass must be from 1 to {DIGITS_TRAIN} (digits' training "
                     f"images), got --batch {args.batch}")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU here; pass --device cpu to check the script itself")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"
    cfg = config(args.steps, args.threads, args.batch, **(SMOKE if args.smoke else {}))
    one_trial(cfg.replace(train_size=cfg.batch_size * 4, epochs=1), args.device)  # warm-up: imports, data cache, allocator
    variants = [(p, c) for p, c in (VARIANTS[:-1] if args.smoke else VARIANTS)  # smoke: one compile fewer
                if c == "none" or c in args.compile_modes]
    rows = [(variant_name(p, c), one_trial(cfg.replace(precision=p, compile=c), args.device)) for p, c in variants]
    for k in args.ks:
        rows.append((f"{k} packed processes", packed(cfg, args.device, k)))
    for k in args.ks:
        rows.append((f"{k} fused members", fused(cfg, args.device, k)))
    if args.device.startswith("cuda"):
        rows += gpu_plan_rows(cfg)
    base = rows[0][1]
    model = f"{cfg.family} ResNet-{cfg.depth} (residual), 1x{cfg.image_size}x{cfg.image_size}"
    print(f"device: {name}; {model}, batch {cfg.batch_size}, {cfg.total_steps()} steps, "
          f"{args.threads} thread(s) per process; torch {torch.__version__}")
    print(f"{'what':42s} {'img/s':>10s} {'x one trial':>12s}")
    for what, ips in rows:
        print(f"{what:42s} {ips:10.0f} {ips / base:12.2f}")
    if not args.device.startswith("cuda"):
        print(f"{'N at once (gpu plan)':42s} not measured: no GPU")
    if not args.no_study:
        print(f"{'study residual-ablation':42s} {study_seconds(args.device)}")


if __name__ == "__main__":
    main()
