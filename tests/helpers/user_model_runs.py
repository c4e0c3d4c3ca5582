"""The examples of a network the user brings, run for the tests that read them, each at its smoke budget through the
command line (search, confirm), then `analyze`, in a folder of its own: examples/residual_mlp, also exported with
`export --configs` (the tests edit its copy of nets.py), and examples/vit. Background studies of
helpers.background_studies (`user_model_example`, `vit_example`)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers.background import environ

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def example_cli(tmp: Path):
    """The command line run in `tmp`, with the session's environment."""
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=tmp, capture_output=True, text=True,
                              env=environ(), timeout=900)
    return cli


def smoke_example(tmp: Path, name: str) -> dict:
    """examples/NAME copied to tmp/NAME, its smoke study run into tmp/run and analysed:
    {"tmp", "folder", "out", "study", "cli"} (the study's CompletedProcess, the command line)."""
    folder = tmp / name
    shutil.copytree(EXAMPLES / name, folder)
    out = tmp / "run"
    cli = example_cli(tmp)
    study = cli("study", str(folder / "study.yaml"), "--budget", "smoke", "--out", str(out), "--cpus", "1")
    assert study.returncode == 0, study.stdout[-3000:] + study.stderr[-3000:]
    analyze = cli("analyze", str(out))
    assert analyze.returncode == 0, analyze.stdout[-3000:] + analyze.stderr[-3000:]
    return {"tmp": tmp, "folder": folder, "out": out, "study": study, "cli": cli}


def mlp_example(tmp: Path) -> dict:
    made = smoke_example(tmp, "residual_mlp")
    exported = made["cli"]("export", str(made["out"]), "--configs", str(tmp / "exported"))
    assert exported.returncode == 0, exported.stderr[-3000:]
    return made


def vit_example(tmp: Path) -> dict:
    return smoke_example(tmp, "vit")
