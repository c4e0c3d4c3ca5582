"""The benchmark scripts run (timings are theirs to print, never asserted here)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_check_script_runs_on_a_cpu_and_prints_its_table():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--ks", "2",
                          "--steps", "4", "--no-study"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split()[0:3] for line in out.stdout.splitlines()]
    assert ["one", "trial,", "fp32"] in rows and ["2", "packed", "processes"] in rows and ["2", "fused", "members"] in rows
