"""Tiny real studies (scikit-learn's digits, the real engine through the CLI) shared by the analysis tests.

The tuned residual-vs-plain study is made once per test session (the `tuned_study` and `tuned_analysis`
fixtures of conftest.py), so every test module that reads it shares one run and one analysis."""
from __future__ import annotations

from pathlib import Path

import yaml

TINY = {"dataset": "digits", "train_size": 128, "dev_size": 64, "test_size": 64, "batch_size": 64,
        "epochs": 2, "eval_every": 1, "seed": 100}
TUNED = {"description": "tiny residual vs plain, lr tuned", "base": {"family": "cifar", "depth": 20, **TINY},
         "factors": {"residual": {"values": [True, False]}},
         "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.3}},
                    "trials": 2, "sampler_seed": 0},
         "seeds": [0, 1, 2]}


def run_study(tmp: Path, name: str, doc: dict) -> Path:
    from typer.testing import CliRunner

    from ablate.cli import app

    spec = tmp / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(doc))
    out = tmp / name
    result = CliRunner().invoke(app, ["study", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out
