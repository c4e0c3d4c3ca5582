"""The example of a network the user brings (examples/residual_mlp) run for the tests that read it: its smoke
budget through the command line (search, confirm), then `analyze` and `export --configs`, in a folder of its own
(the tests edit its copy of nets.py). A background study of helpers.background_studies (`user_model_example`)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers.background import environ

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "residual_mlp"


def example_cli(tmp: Path):
    """The command line run in `tmp`, with the session's environment."""
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=tmp, capture_output=True, text=True,
                              env=environ(), timeout=900)
    return cli


def mlp_example(tmp: Path) -> dict:
    folder = tmp / "residual_mlp"
    shutil.copytree(EXAMPLE, folder)
    out = tmp / "run"
    cli = example_cli(tmp)
    study = cli("study", str(folder / "study.yaml"), "--budget", "smoke", "--out", str(out), "--cpus", "1")
    assert study.returncode == 0, study.stdout[-3000:] + study.stderr[-3000:]
    analyze = cli("analyze", str(out))
    assert analyze.returncode == 0, analyze.stdout[-3000:] + analyze.stderr[-3000:]
    exported = cli("export", str(out), "--configs", str(tmp / "exported"))
    assert exported.returncode == 0, exported.stderr[-3000:]
    return {"tmp": tmp, "folder": folder, "out": out, "study": study, "cli": cli}
