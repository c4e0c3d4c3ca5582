"""A trial's peak memory (issue 25): estimated before it runs (ablate.execute.estimate.trial_memory) and checked
against a real `train`'s measured peak; a trial that cannot fit is refused by `train` and warned of by the dry run;
memory running out is one line, exit 2 when the config cannot fit here and 3 when other programs held the memory."""
import contextlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from ablate.cli.app import app
from ablate.execute.estimate import MEMORY_TOLERANCE, out_of_memory, study_memory, trial_memory
from ablate.machine_memory import MemoryLimits, is_out_of_memory, memory_limits, requested_bytes
from ablate.spec.study_spec import load_study
from ablate.spec.trial_config import TrialConfig

ROOT = Path(__file__).resolve().parents[1]
GB = 2 ** 30
# a trial whose tensors are a fair part of its peak, small enough to run in seconds
MEASURED = dict(dataset="digits", family="cifar", depth=20, image_size=48, train_size=128, dev_size=32, test_size=32,
                batch_size=64, epochs=1, eval_every=2, threads=2)
SPEC_1024 = {"description": "images of 1024 pixels", "base": {"family": "imagenet", "depth": 18, "dataset": "digits",
             "train_size": 64, "dev_size": 32, "test_size": 32, "epochs": 1, "image_size": 1024},
             "factors": {"residual": {"values": [True, False]}}, "seeds": [0]}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@contextlib.contextmanager
def data_limit(extra: int):
    """This process's soft RLIMIT_DATA set to what it holds now plus `extra` bytes (as on a machine that could give it
    no more), restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    used = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmData:"))
    resource.setrlimit(resource.RLIMIT_DATA, (used + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


@pytest.mark.slow
def test_the_estimate_is_within_its_tolerance_of_a_real_trains_measured_peak(tmp_path):
    """A real `ablate train` process, its peak resident memory measured by the kernel (ru_maxrss of os.wait4), against
    the estimate made as `train` makes it (in a process that has imported what `train` imports)."""
    cfg = TrialConfig(**MEASURED)
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    estimate = subprocess.run(
        [sys.executable, "-c", "import sys, ablate.cli.app\nfrom ablate.execute.estimate import process_baseline, "
         "trial_memory\nfrom ablate.spec.trial_config import TrialConfig\n"
         "print(trial_memory(TrialConfig.from_yaml_file(sys.argv[1]), 1, 10, process_baseline()).peak)",
         str(tmp_path / "config.yaml")], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert estimate.returncode == 0, estimate.stderr[-2000:]
    with open(tmp_path / "output.txt", "wb") as output:
        child = subprocess.Popen([sys.executable, "-m", "ablate", "train", "--config", str(tmp_path / "config.yaml"),
                                  "--out", str(tmp_path / "run")], stdout=output, stderr=subprocess.STDOUT, env=_env(),
                                 cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)  # the kernel's account of this child alone
        child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, (tmp_path / "output.txt").read_text()[-2000:]
    measured = usage.ru_maxrss * 1024
    ratio = int(estimate.stdout) / measured
    print(f"estimate {int(estimate.stdout) / 2**20:.0f} MB, measured {measured / 2**20:.0f} MB, ratio {ratio:.2f}")
    assert 1 - MEMORY_TOLERANCE <= ratio <= 1 + MEMORY_TOLERANCE


def test_train_estimates_its_trial_without_keeping_a_compiler_in_its_process(tmp_path):
    """`train` works out its trial's peak on torch's meta device, whose Python kernels import torch._dynamo, inductor
    and sympy (about 150 MB): in a forked child, so that the process that then trains holds none of them; the
    child's figures are the ones worked out in the process itself."""
    cfg = TrialConfig(**{**MEASURED, "image_size": 16, "threads": 1})
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    code = ("import sys\nfrom ablate.cli.app import app\n"
            "app(['train', '--config', sys.argv[1], '--out', sys.argv[2]], standalone_mode=False)\n"
            "print('COMPILER', sorted(m for m in ('torch._dynamo', 'torch._inductor', 'sympy') if m in sys.modules))\n"
            "from ablate.execute.estimate import _in_child, _simulate\nfrom ablate.spec.trial_config import TrialConfig\n"
            "cfg = TrialConfig.from_yaml_file(sys.argv[1]).replace(batch_size=48)\n"
            "forked = _in_child(_simulate, cfg, 1, 10)\nprint('SAME', forked == _simulate(cfg, 1, 10), forked)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "config.yaml"), str(tmp_path / "run")],
                         capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.stdout.splitlines() if " " in line}
    assert lines["COMPILER"] == "[]", out.stdout
    assert lines["SAME"].startswith("True ("), out.stdout


@pytest.mark.slow  # loads 160 images of 1024 x 1024 pixels (640 MB) as the dry run does
def test_a_dry_run_warns_of_an_image_size_1024_trial(tmp_path):
    """image_size: 1024 within the bounds: its step alone holds about 39 GB, which a machine that can give the study
    8 GB (here: this process's data limit) cannot hold. The dry run says so in one warning line and does not time a
    step it could not hold."""
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC_1024))
    with data_limit(8 * GB):
        result = CliRunner().invoke(app, ["study", str(tmp_path / "spec.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    memory = [line for line in result.output.splitlines() if line.startswith("memory: a trial peaks at about")]
    assert len(memory) == 1 and "1x1024px" in memory[0], result.output
    warning = [line for line in result.output.splitlines() if line.startswith("warning: a trial of")]
    assert len(warning) == 1 and "1x1024px" in warning[0] and "data limit (ulimit -d)" in warning[0], result.output
    assert "it cannot run here; lower image_size or batch_size" in warning[0]
    assert "time not estimated: a step would not fit in this machine's memory" in result.output


def test_a_study_that_fits_gets_no_memory_warning():
    study = load_study("residual-ablation", "smoke")
    from ablate.engine.resources import Resources

    memory = study_memory(study, Resources(cpus=2, threads=1), 500 * 2**20)
    assert memory.trial.peak < 2 * GB and memory.at_once == 2
    roomy = MemoryLimits(total=64 * GB, available=32 * GB, resident=GB)
    assert not memory.trial.cannot_fit(roomy) and not memory.trial.not_now(roomy, 2, new_processes=True)
    tight = MemoryLimits(total=64 * GB, available=memory.trial.peak * 3 // 2, resident=GB)
    memory.limits = tight
    assert "run fewer at once (--cpus 1)" in memory.warnings()[0]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps (Linux)")
def test_a_cuda_build_of_torch_loads_cublas_into_a_process_without_a_gpu():
    """What the dry run's line, the README and the quick start say of a CUDA build on a CPU: `import torch` alone,
    with no GPU used, maps cuBLAS into the process (the measured cost: docs/benchmarks.md, Worker memory); a
    CPU-only build maps none. In a process of its own, which this test's CUDA_VISIBLE_DEVICES hides every GPU from."""
    code = ("import torch\n"
            "print(torch.version.cuda or '')\n"
            "print(any('libcublas' in line for line in open('/proc/self/maps')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    cuda, loaded = out.stdout.split("\n")[:2]
    assert loaded == str(bool(cuda)), (cuda, loaded)


def test_the_dry_run_says_when_a_cpu_study_runs_on_torchs_cuda_build():
    """A CUDA build of torch loads its CUDA libraries into every trial's process on a CPU too (docs/benchmarks.md,
    Worker memory): the memory lines say so for trials on this machine's CPU, and not for a GPU study or a cluster's."""
    import dataclasses

    import torch

    from ablate.engine.resources import Resources

    memory = study_memory(load_study("residual-ablation", "smoke"), Resources(cpus=2, threads=1), 500 * 2**20)
    assert memory.torch_cuda == torch.version.cuda  # this interpreter's torch, whichever build it is
    said = [line for line in dataclasses.replace(memory, torch_cuda="13.0").lines() if "CUDA" in line]
    assert len(said) == 1 and said[0].startswith("memory: this torch is built for CUDA 13.0 and the trials run on the "
                                                 "CPU") and "CPU-only wheels" in said[0], said
    assert not any("CUDA" in line for line in dataclasses.replace(memory, torch_cuda=None).lines())
    on_gpu = dataclasses.replace(memory, torch_cuda="13.0", trial=dataclasses.replace(memory.trial, device=True))
    assert not any("CUDA" in line for line in on_gpu.lines())
    cluster = study_memory(load_study("residual-ablation", "smoke"), Resources(cpus=2, threads=1, address="127.0.0.1:1"),
                           500 * 2**20)
    assert cluster.torch_cuda is None  # a cluster's nodes have torch builds of their own


def test_train_refuses_a_trial_its_process_cannot_hold(tmp_path, monkeypatch):
    """Under a data limit of 2 GB, an image_size 512 trial (about 10 GB) is refused before any data is loaded."""
    monkeypatch.chdir(tmp_path)
    args = ["train", "--dataset", "digits", "--train-size", "64", "--dev-size", "32", "--test-size", "32", "--epochs",
            "1", "--config", str(tmp_path / "c.yaml")]
    (tmp_path / "c.yaml").write_text("image_size: 512\n")
    with data_limit(2 * GB):
        result = CliRunner().invoke(app, args)
    lines = result.output.splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: this trial needs about") and "data limit (ulimit -d)" in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()


def test_a_real_allocation_failure_is_out_of_memory_and_the_configs_when_no_machine_could_give_it():
    """torch asked for a petabyte: the allocator refuses at once (nothing is touched); more than any limit here can
    give, so it is the config's (exit 2)."""
    with pytest.raises(RuntimeError) as caught:
        torch.empty(2 ** 50, dtype=torch.uint8)
    assert is_out_of_memory(caught.value) and requested_bytes(caught.value) == 2 ** 50
    cfg = TrialConfig(**MEASURED)
    memory = trial_memory(cfg, 1, 10, memory_limits().resident)
    code, text = out_of_memory(caught.value, memory, memory_limits())
    assert code == 2 and "more than this machine's" in text and "lower image_size or batch_size" in text, text


def test_memory_running_out_where_the_trial_would_fit_is_the_machines(tmp_path):
    """A machine of 64 GB with 100 MB free (as /proc/meminfo says it): a trial of well under a gigabyte that runs out
    ran out because other programs held the memory: exit 3, run it again."""
    (tmp_path / "self").mkdir()
    (tmp_path / "meminfo").write_text("MemTotal: 67108864 kB\nMemFree: 102400 kB\nMemAvailable: 102400 kB\n")
    (tmp_path / "self" / "status").write_text("VmRSS: 1048576 kB\nVmSize: 4194304 kB\nVmData: 2097152 kB\n")
    limits = memory_limits(proc=tmp_path, cgroup=tmp_path / "no-cgroup")
    assert (limits.total, limits.available, limits.resident) == (64 * GB, 100 * 2**20, GB)
    memory = trial_memory(TrialConfig(**MEASURED), 1, 10, memory_limits().resident)
    assert memory.not_now(limits) and not memory.cannot_fit(limits)
    code, text = out_of_memory(MemoryError(), memory, limits)
    assert code == 3 and "other programs held the memory it needed" in text and "run the same command again" in text


def test_text_that_is_not_about_memory_is_not_out_of_memory():
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert is_out_of_memory(MemoryError()) and is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert requested_bytes(RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; ...)")) == 20 * GB


def test_a_reused_worker_freezes_what_its_first_trial_left_and_still_collects_each_trials_cycles():
    """release_memory (after each trial on a Ray worker): the first call freezes what is alive (torch's and Ray's
    modules: no later collection walks them again); a later trial's garbage cycles are still collected, and nothing
    more is frozen. In a process of its own: freezing is for the whole process."""
    import subprocess
    import sys

    code = """
import gc, weakref
from ablate.engine.ray_adapter.trainable import release_memory

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.b, b.a = b, a
    return weakref.ref(a)

assert gc.get_freeze_count() == 0
release_memory()
frozen = gc.get_freeze_count()
assert frozen > 1000, frozen
gc.disable()  # only release_memory collects from here on
ref = cycle()
assert ref() is not None
release_memory()
assert ref() is None and gc.get_freeze_count() == frozen, (ref(), gc.get_freeze_count(), frozen)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_an_evaluation_gives_the_same_bits_in_chunks_of_any_size():
    """evaluate runs a CPU split through the model CPU_EVAL_CHUNK images at a time (a worker's memory) and sums the
    loss per EVAL_BATCH images as it did in one forward pass: for both arms of the default study, after some
    training (running statistics of its own), the accuracy and loss are the same bits for any chunk size, and the
    default chunk is smaller than the batch (so the check covers what runs)."""
    from ablate.train.loop import CPU_EVAL_CHUNK, EVAL_BATCH, evaluate, model_for
    from types import SimpleNamespace

    assert 1 < CPU_EVAL_CHUNK < EVAL_BATCH
    study = load_study("residual-ablation", "default")
    study.pin(dataset="mnist", threads=1)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(530, 1, 32, 32, generator=gen), torch.randint(0, 10, (530,), generator=gen)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for arm in study.arms:
            cfg = study.trial_config(arm, study.search_points[2], 100)
            model = model_for(cfg, SimpleNamespace(in_channels=1, num_classes=10))
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            for i in range(3):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[64 * i:64 * (i + 1)]), y[64 * i:64 * (i + 1)]).backward()
                opt.step()
            whole = evaluate(model, x, y, torch.contiguous_format, chunk=EVAL_BATCH, predictions=True)
            for chunk in (7, 64, None):
                assert evaluate(model, x, y, torch.contiguous_format, chunk=chunk, predictions=True) == whole, (arm.name, chunk)
            assert whole[1] > 0 and 0 <= whole[0] <= 1
    finally:
        torch.set_num_threads(threads)


def test_a_best_dev_snapshot_is_written_into_the_last_ones_tensors_and_never_into_a_restored_checkpoint():
    """copy_state: a later snapshot of the same weights reuses the earlier snapshot's tensors (no second copy of the
    weights allocated), holds the new values, and makes new tensors when the shapes differ."""
    from ablate.train.loop import copy_state

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    first = copy_state(model.state_dict(), None)
    kept = {k: v for k, v in first.items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    again = copy_state(model.state_dict(), first)
    assert again is first and all(again[k] is kept[k] for k in kept)
    assert all(torch.equal(again[k], v) for k, v in model.state_dict().items())
    assert again["0.weight"].data_ptr() != model[0].weight.data_ptr()  # a copy, not the live weights
    other = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5))
    fresh = copy_state(other.state_dict(), first)
    assert fresh is not first and torch.equal(fresh["0.weight"], other[0].weight) and first["0.weight"].shape == (3, 4)
