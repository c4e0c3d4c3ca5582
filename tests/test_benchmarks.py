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


@pytest.mark.slow
def test_the_registration_script_times_a_finished_run_and_leaves_it_as_it_was(tmp_path):
    """On a finished run of a small search study (driven in this process, as the planner tests do), it prints both
    timings and their ratio, and the folder it was given is byte for byte what it was (it works on a copy)."""
    import hashlib

    from ablate.engine.manifest import spec_record
    from ablate.run_folder.run_files import manifest_text
    from ablate.spec.study_spec import parse_study
    from helpers.planner import drive

    study = parse_study({"description": "registration benchmark test",
                         "base": {"family": "cifar", "depth": 20, "dataset": "digits", "train_size": 32, "dev_size": 16,
                                  "test_size": 16, "batch_size": 16, "epochs": 1, "eval_every": 1, "image_size": 8},
                         "factors": {"residual": {"values": [True, False]}},
                         "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.5}},
                                    "trials": 2, "round": 2, "startup": 2},
                         "seeds": [0, 1]}, source="test")
    run = tmp_path / "run"
    drive(study, run)
    (run / "spec.yaml").write_text(study.resolved_yaml())  # what a study's run folder holds beside the trials
    (run / "manifest.json").write_text(manifest_text({"study": study.name, **spec_record(study.resolved_yaml())}))

    def digest():
        return {p.relative_to(run): hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()}

    before = digest()
    script = [sys.executable, str(ROOT / "benchmarks" / "registration.py")]
    out = subprocess.run([*script, str(run), "--reps", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "8 registered trials, 2 refreshes each" in out.stdout, out.stdout
    assert "caches emptied first" in out.stdout and "ratio warm / cold" in out.stdout, out.stdout
    assert digest() == before
    bad = subprocess.run([*script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "is not a study run folder" in bad.stderr.splitlines()[-1]
    (tmp_path / "spec.yaml").write_text("name: [\n")
    bad = subprocess.run([*script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "malformed YAML" in bad.stderr.splitlines()[-1] and "Traceback" not in bad.stderr


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="worker_memory.py reads Linux's /proc")
def test_the_worker_memory_script_reads_a_processs_resident_memory_and_the_parts_it_is_made_of():
    """worker_memory.py prints each worker's peak with its anonymous, file-backed and shared parts: read here from
    this test's own process, where they must add up to VmRSS (the kernel sums the same counters)."""
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location("worker_memory", ROOT / "benchmarks" / "worker_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rss, parts = module._rss(str(os.getpid()))
    assert set(parts) == {"RssAnon", "RssFile", "RssShmem"}
    assert rss == sum(parts.values()) and parts["RssAnon"] > 0 and parts["RssFile"] > 0
    assert module._parts(parts).startswith(f"anon {parts['RssAnon'] / 2**20:.0f}, file ")
    assert module._rss("999999999") is None  # no such process (pids stop far below)


def test_the_efficiency_script_tells_the_end_of_a_study_from_the_idle_slots_before_it():
    """study_efficiency.py's end_tail: from the last moment every slot held a trial to the last trial's end, the
    slot-seconds no trial held."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("study_efficiency", ROOT / "benchmarks" / "study_efficiency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # two slots: two trials, then two more handed out as the first ended; one ends 5 s before the other
    assert module.end_tail([(0, 10), (0, 10), (10, 20), (10, 15)], 2) == (15, 5)
    # a slot idle 2 s between two trials is not the end: the slots were all busy again afterwards
    assert module.end_tail([(0, 10), (0, 4), (6, 20), (10, 18)], 2) == (18, 2)
    # never were all slots busy: from the first hand-out
    assert module.end_tail([(0, 10)], 2) == (0, 10)
    assert module.end_tail([(3, 10), (4, 8)], 3) == (3, 21 - 11)
