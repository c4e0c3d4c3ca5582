"""How many trials share a GPU, and how many CPU cores each trial gets, chosen from measured throughput.

A small model leaves most of a GPU idle, so several trials share one; how many pays depends on the GPU, the
model and the batch. `measure_table` runs 1, 2, 4 and 8 trial-shaped training loops at once on the GPU (each
its own process, as Ray runs trials) and records the total images per second of each count; `choose` takes the
smallest count within 10 % of the best total (more trials at once than that only add memory and contention).
Each trial then gets an equal share of the CPU cores, at least its spec's threads, and never fewer than one core
per trial: a GPU trial's Python thread launches every kernel, and a trial without a core of its own starves the
GPU. `--gpus-per-trial` overrides the choice. Measurements are cached per GPU model, torch version and trial
shape in `$ABLATE_CACHE_DIR/gpu-throughput.json` (default ~/.cache/ablate); `benchmarks/gpu_check.py` fills
the same cache.

The choosing (`choose`, `plan`) is pure and tested with given tables; the measuring needs a GPU to mean anything.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.spec import TrialConfig

COUNTS = (1, 2, 4, 8)  # trials at once on one GPU, as measured
TOLERANCE = 0.10  # the smallest count within this fraction of the best total img/s is chosen
DEFAULT_SHARE = 0.25  # where nothing was measured and nothing asked: four trials per GPU
CACHE_ENV = "ABLATE_CACHE_DIR"


def choose(table: dict[int, float], tolerance: float = TOLERANCE) -> int:
    """The smallest count of concurrent trials whose total img/s is within `tolerance` of the best total."""
    if not table:
        raise ValueError("no throughput measured")
    best = max(table.values())
    return min(count for count, ips in table.items() if ips >= (1 - tolerance) * best)


@dataclass
class GpuPlan:
    gpus: int
    trials_per_gpu: int  # 0 without a GPU
    gpu_share: float  # what Ray gives each trial of a GPU (0 without one)
    cpus_per_trial: int  # CPU cores Ray reserves for each trial
    trials_at_once: int
    source: str  # where the numbers came from, in words
    table: dict[int, float] = field(default_factory=dict)  # concurrent trials -> total img/s, where measured
    fuse: str = ""  # the fuse decision, in words (set by the launcher)

    def lines(self) -> list[str]:
        if not self.gpus:
            out = [f"GPU plan: no GPU; {self.trials_at_once} trials at a time on the CPU, {self.cpus_per_trial} "
                   f"core(s) each ({self.source})"]
        else:
            out = [f"GPU plan: {self.trials_per_gpu} trial(s) per GPU (a {self.gpu_share:g} share each) on "
                   f"{self.gpus} GPU(s), {self.trials_at_once} at a time, {self.cpus_per_trial} CPU core(s) reserved "
                   f"per trial ({self.source})"]
        if self.table:
            out.append("  measured total img/s: " + ", ".join(f"{k} at once {v:,.0f}" for k, v in sorted(self.table.items())))
        if self.fuse:
            out.append(f"  fusing: {self.fuse}")
        return out


def plan(cpus: int, gpus: int, threads: int, table: dict[int, float] | None, source: str,
         gpus_per_trial: float | None = None) -> GpuPlan:
    """Trials per GPU and CPU cores per trial, from a measured table (count -> total img/s) or as asked.

    Without a GPU: `threads` cores per trial (as many trials as the cores allow). With one: the count asked
    for (`gpus_per_trial`), else the smallest within TOLERANCE of the best among the counts the CPUs can feed
    (count x gpus x threads <= cpus), else DEFAULT_SHARE; then each trial gets cpus // trials at once cores,
    at least its threads."""
    threads = max(1, threads)
    if gpus <= 0:
        each = max(1, min(threads, cpus))
        return GpuPlan(0, 0, 0.0, each, max(1, cpus // each), source)
    table = dict(table or {})
    if gpus_per_trial is not None:
        per_gpu = max(1, int(1 / gpus_per_trial + 1e-9))
        share, why = gpus_per_trial, f"--gpus-per-trial {gpus_per_trial:g}, as asked"
    elif table:
        fed = {k: v for k, v in table.items() if k * gpus * threads <= cpus} or {min(table): table[min(table)]}
        per_gpu = choose(fed)
        why = f"the fewest trials within {TOLERANCE:.0%} of the best total img/s, {source}"
        if choose(table) > per_gpu:
            why += (f"; the GPU would take {choose(table)}, but {cpus} CPU cores feed at most {max(fed)} trial(s) per "
                    f"GPU at {threads} thread(s) each")
        share = 1 / per_gpu
    else:
        per_gpu, share = round(1 / DEFAULT_SHARE), DEFAULT_SHARE
        why = f"{source}; the default of {per_gpu} per GPU"
    at_once = max(1, min(per_gpu * gpus, cpus // min(threads, cpus)))
    each = max(1, min(cpus, max(threads, cpus // at_once)))
    return GpuPlan(gpus, per_gpu, share, each, at_once, why, table)


# --- the cache ---------------------------------------------------------------------------------------------
def cache_file() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ablate").expanduser() / "gpu-throughput.json"


def shape_key(cfg: TrialConfig, in_channels: int, device_name: str) -> str:
    """What the throughput depends on: the GPU, torch, and the trial's model, input and execution settings."""
    import torch

    return (f"{device_name} | torch {torch.__version__} | {cfg.model_key()} | "
            f"{in_channels}x{cfg.image_size}x{cfg.image_size} batch {cfg.batch_size} | {cfg.precision} compile "
            f"{cfg.compile}{' channels_last' if cfg.channels_last else ''}")


def read_cache(key: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(cache_file().read_text(encoding="utf-8")).get(key)
        return {**entry, "table": {int(k): float(v) for k, v in entry["table"].items()}} if entry else None
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None


def write_cache(key: str, table: dict[int, float]) -> Path:
    path = cache_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    data[key] = {"table": {str(k): v for k, v in sorted(table.items())}, "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# --- measuring ---------------------------------------------------------------------------------------------
CHILD = "import sys, json; from ablate.execute.gpu_plan import run_child; run_child(json.loads(sys.argv[1]))"


def run_child(job: dict[str, Any]) -> None:
    """One trial-shaped training loop on random data: warm up (and compile), say ready, wait for go, time."""
    import torch

    from ablate.execute.step_timer import time_steps
    from ablate.models import build_trial_model
    from ablate.train import SingleModel, deterministic_cuda, torch_threads

    cfg, device, c = TrialConfig.from_dict(job["config"]), torch.device(job["device"]), job["in_channels"]
    if device.type == "cuda":
        deterministic_cuda()
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build_trial_model(cfg, c).to(device, memory_format=fmt).train()
    shape = (cfg.batch_size, c, cfg.image_size, cfg.image_size)
    trainer = SingleModel([model], [cfg], device, shape)  # the training loop's own step (precision, compile)
    x = torch.randn(shape, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, shape[:1], device=device)

    def step() -> None:
        trainer.train_step([x], [y], 0, (), [])

    def ready() -> None:
        print("ready", flush=True)
        sys.stdin.readline()

    # Warm-up (and compile), ready, go, then the steps as one span unsynchronised between steps, as a trial runs.
    with torch_threads(max(1, cfg.threads)):
        times = time_steps(step, job["steps"], job["warmup"], device, each=False, ready=ready)
    print(json.dumps({"t0": times.start, "t1": times.end}), flush=True)


def measure_count(cfg: TrialConfig, in_channels: int, device: str, count: int, steps: int = 30,
                  warmup: int = 5, timeout: float = 600) -> float:
    """Total training img/s of `count` trial processes at once on `device` (all started together once every
    one has warmed up and compiled): count x steps x batch / (last end - first start)."""
    import ablate

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(ablate.__file__).resolve().parent.parent),
                                                       *filter(None, [os.environ.get("PYTHONPATH")])])}
    job = json.dumps({"config": cfg.to_dict(), "device": device, "in_channels": in_channels, "steps": steps,
                      "warmup": warmup})
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, job], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(count)]
    try:
        deadline = time.monotonic() + timeout
        for p in procs:
            line = p.stdout.readline().strip()
            if line != "ready" or time.monotonic() > deadline:
                raise RuntimeError(f"a measuring process failed: {(p.stderr.read() or line).strip()[-300:]}")
        for p in procs:  # go: every process starts its timed steps now
            p.stdin.write("go\n")
            p.stdin.flush()
        out = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if p.returncode:
                raise RuntimeError(f"a measuring process failed: {stderr.strip()[-300:]}")
            out.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    span = max(o["t1"] for o in out) - min(o["t0"] for o in out)
    return count * steps * cfg.batch_size / span


def measure_table(cfg: TrialConfig, in_channels: int, device: str = "cuda", counts: tuple[int, ...] = COUNTS,
                  steps: int = 30, warmup: int = 5) -> dict[int, float]:
    """Total img/s for each count of trials at once; stops at the first count that fails (say, out of memory)."""
    table: dict[int, float] = {}
    for count in counts:
        try:
            table[count] = measure_count(cfg, in_channels, device, count, steps, warmup)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            if not table:
                raise
            break
    return table


def device_name(index: int = 0) -> str:
    import torch

    return torch.cuda.get_device_name(index)


def decide(cpus: int, gpus: int, threads: int, cfg: TrialConfig, in_channels: int,
           gpus_per_trial: float | None = None, address: str | None = None) -> GpuPlan:
    """The plan for a study: measured here (or read from the cache) when a GPU is visible and nothing was asked."""
    if gpus <= 0:
        return plan(cpus, 0, threads, None, "not measured: no GPU")
    if gpus_per_trial is not None:
        return plan(cpus, gpus, threads, None, "", gpus_per_trial)
    if address:
        return plan(cpus, gpus, threads, None, "not measured: attached to a cluster, whose GPUs may differ from this "
                                             "machine's")
    key = shape_key(cfg, in_channels, device_name())
    entry = read_cache(key)
    if entry:
        source = f"measured {entry.get('measured_at', '')} on {device_name()}, cached in {cache_file()}"
        return plan(cpus, gpus, threads, entry["table"], source)
    try:
        table = measure_table(cfg, in_channels)
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as exc:
        return plan(cpus, gpus, threads, None, f"not measured: the measurement failed ({str(exc)[:200]})")
    where = write_cache(key, table)
    return plan(cpus, gpus, threads, table, f"measured now on {device_name()} (cached in {where})")
