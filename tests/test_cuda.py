"""Trials on a GPU (run with `pytest -m cuda`; skipped where no CUDA GPU is present).

Tolerances: a CUDA trial's first training loss equals its CPU twin's within 1e-4 (same initial weights and
batch; float32 kernels differ in summation order only), the first 10 steps' losses within 1e-2, and its
test accuracy within 3 test images; two CUDA runs of one trial are identical (deterministic cuDNN, no TF32).
bf16 and compiled trials (not yet run on a GPU when written; no GPU was lent): two bf16 runs are identical, and
a bf16 or compiled trial's losses stay within 5e-2 of the fp32 eager trial's over its first 10 steps, its test
accuracy within 5 test images; a compiled trial compiles one graph, however many epochs.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ablate.run_folder.registry import read_registry
from ablate.spec.trial_config import TrialConfig
from ablate.train.loop import run_trial

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")]
ROOT = Path(__file__).resolve().parent.parent
CFG = TrialConfig(dataset="digits", family="cifar", depth=20, image_size=16, train_size=256, dev_size=64,
                  test_size=128, batch_size=32, epochs=2, eval_every=4, lr=0.05, threads=1)


def test_a_cuda_trial_matches_its_cpu_twin_within_the_stated_tolerance():
    cpu, gpu = run_trial(CFG, device="cpu"), run_trial(CFG, device="cuda")
    assert gpu.device.startswith("cuda") and cpu.device == "cpu"
    assert abs(gpu.train_loss[0] - cpu.train_loss[0]) <= 1e-4
    assert max(abs(a - b) for a, b in zip(gpu.train_loss[:10], cpu.train_loss[:10])) <= 1e-2
    assert abs(gpu.test_acc - cpu.test_acc) <= 3 / CFG.test_size


def test_two_cuda_runs_of_one_trial_are_identical():
    a, b = run_trial(CFG, device="cuda"), run_trial(CFG, device="cuda")
    assert a.train_loss == b.train_loss and a.dev_acc == b.dev_acc and a.test_acc == b.test_acc


def test_bf16_and_compiled_trials_run_on_the_gpu():
    from torch._dynamo.utils import counters

    fp32 = run_trial(CFG, device="cuda")
    a, b = run_trial(CFG.replace(precision="bf16"), device="cuda"), run_trial(CFG.replace(precision="bf16"), device="cuda")
    assert a.train_loss == b.train_loss and a.test_acc == b.test_acc
    for mode in ("default", "reduce-overhead"):
        counters.clear()
        graphs = []
        per_epoch = CFG.total_steps() // CFG.epochs
        c = run_trial(CFG.replace(compile=mode, precision="bf16"), device="cuda",
                      progress=lambda s, n: graphs.append(counters["stats"]["unique_graphs"]) if s % per_epoch == 0 else None)
        assert graphs == [1] * CFG.epochs, mode
        for other in (a, c):
            assert other.status == "ok"
            assert max(abs(x - y) for x, y in zip(other.train_loss[:10], fp32.train_loss[:10])) <= 5e-2
            assert abs(other.test_acc - fp32.test_acc) <= 5 / CFG.test_size


def test_a_study_with_one_gpu_puts_its_trials_on_the_gpu(tmp_path):
    pytest.importorskip("ray")
    spec = tmp_path / "gpu.yaml"
    spec.write_text(yaml.safe_dump({
        "description": "gpu", "base": {k: v for k, v in CFG.to_dict().items() if k in (
            "dataset", "family", "depth", "image_size", "train_size", "dev_size", "test_size", "batch_size",
            "epochs", "eval_every")},
        "factors": {"residual": {"values": [True, False]}}, "grid": {"lr": [0.05]}, "seeds": [0, 1]}))
    out = subprocess.run([sys.executable, str(ROOT / "cli.py"), "study", str(spec), "--out", str(tmp_path / "run"),
                          "--gpus", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONUNBUFFERED": "1", "ABLATE_CACHE_DIR": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr[-3000:]
    # the trials per GPU were chosen from img/s measured for 1, 2, 4 and 8 trials at once, now
    plan = json.loads((tmp_path / "run" / "manifest.json").read_text())["gpu_plan"]
    assert plan["trials_per_gpu"] in (1, 2, 4, 8) and "measured now" in plan["source"], plan
    assert set(plan["img_per_s"]) >= {"1", "2"} and (tmp_path / "cache" / "gpu-throughput.json").is_file()
    devices = {json.loads((tmp_path / "run" / "trials" / r["trial_id"] / "metrics.json").read_text())["device"]
               for r in read_registry(tmp_path / "run")}
    assert devices == {"cuda"}
