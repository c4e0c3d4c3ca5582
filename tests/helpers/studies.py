"""Tiny real studies (scikit-learn's digits, the real engine through the CLI) shared by the analysis tests.

The tuned residual-vs-plain study and the depth and grid studies are made once per test session, in the background
(helpers.background_studies declares them), so every test module that reads one shares one run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from helpers.background import environ

ROOT = Path(__file__).resolve().parents[2]

TINY = {"dataset": "digits", "image_size": 16, "train_size": 128, "dev_size": 64, "test_size": 64, "batch_size": 64,
        "epochs": 2, "eval_every": 1, "seed": 100}
TUNED = {"description": "tiny residual vs plain, lr tuned", "base": {"family": "cifar", "depth": 20, **TINY},
         "factors": {"residual": {"values": [True, False]}},
         "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.3}},
                    "trials": 2, "sampler_seed": 0},
         "seeds": [0, 1, 2], "keep_weights": "final"}  # the lesion and integrity tests read weights.pt


def start_study(tmp: Path, name: str, doc: dict) -> tuple[Path, subprocess.Popen]:
    """A real study through the command line, in its own process, so that several run side by side (each
    spends most of its seconds starting Ray and its workers)."""
    spec = tmp / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(doc))
    out = tmp / name
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "study", str(spec), "--out", str(out), "--cpus", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environ())
    return out, proc


def finish(started: tuple[Path, subprocess.Popen]) -> Path:
    out, proc = started
    output = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, output[-3000:]
    return out


def run_study(tmp: Path, name: str, doc: dict) -> Path:
    return finish(start_study(tmp, name, doc))


def tuned(tmp: Path) -> Path:
    return run_study(tmp, "tuned", TUNED)


# plain vs residual on digits at 8x8, 2 seeds, weights kept: what analyze --diagnostics reads (test_diagnostics_run)
DIAGNOSTICS = {"description": "tiny plain vs residual", "seeds": [0, 1], "keep_weights": "final",
               "base": {"family": "cifar", "depth": 20, "shortcut": "identity", "dataset": "digits", "image_size": 8,
                        "train_size": 256, "dev_size": 64, "test_size": 64, "batch_size": 64, "epochs": 2,
                        "eval_every": 2, "lr": 0.05},
               "factors": {"residual": {"values": [True, False]}}}


def diagnostics(tmp: Path) -> Path:
    return run_study(tmp, "diag", DIAGNOSTICS)


def depth_and_grid(tmp: Path) -> dict:
    """A depth study and a grid study, side by side."""
    depth = start_study(tmp, "depth", {
        "description": "tiny depth study", "base": {"family": "cifar", "shortcut": "identity", "lr": 0.05, **TINY},
        "factors": {"depth": {"values": [20, 32]}, "residual": {"values": [True, False]}},
        "seeds": [0, 1], "keep_weights": "final"})  # the lesion tests read its weights.pt
    grid = start_study(tmp, "grid", {
        "description": "tiny lr grid", "base": {"family": "cifar", "depth": 20, **TINY},
        "factors": {"residual": {"values": [True, False]}}, "grid": {"lr": [0.02, 0.2]}, "seeds": [0, 1]})
    return {"tmp": tmp, "depth": finish(depth), "grid": finish(grid)}
