"""The benchmark scripts run (timings are theirs to print, never asserted here)."""
import subprocess
import sys
from pathlib import Path
import pytest


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_gpu_check_script_runs_on_a_cpu_and_prints_its_table():
    """--smoke: ResNet-10 at 8x8; `--compile-modes` with no mode measures no compiled row (a cold compile is
    about a minute of the 2 cores here; compiling is tested in tests/test_execution.py)."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--smoke",
                          "--ks", "2", "--steps", "4", "--no-study", "--batch", "32", "--compile-modes"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {" ".join(line.split()[:-2]): line.split()[-2:] for line in out.stdout.splitlines()[2:]}
    for what in ("one trial, fp32 eager", "one trial, bf16 eager", "2 packed processes", "2 fused members"):
        assert float(rows[what][0]) > 0, out.stdout
    assert "batch 32" in out.stdout.splitlines()[0] and "compiled" not in out.stdout
    assert "N at once (gpu plan)                       not measured: no GPU" in out.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--batch", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.splitlines()[-1].startswith("gpu_check.py: error: --batch x min"), bad.stderr


@pytest.mark.slow
def test_the_trial_overhead_script_runs_and_prints_its_ratios():
    """It broke unseen once (its never-evaluate eval_every went past the bound a spec may ask)."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "trial_overhead.py"), "--steps", "2", "--reps", "1",
                          "--threads", "1", "--dataset", "digits"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ratio" in out.stdout.lower(), out.stdout
