"""Trials per GPU from measured throughput (ablate.execute.gpu_plan): the choice on given tables, the cache, the
measuring machinery on the CPU, and what the dry run prints where there is no GPU."""
import pytest
from typer.testing import CliRunner

from ablate.cli.app import app
from ablate.spec.trial_config import TrialConfig
from ablate.execute.gpu_plan import choose, decide, measure_table, plan, read_cache, shape_key, write_cache
from ablate.execute.fuse_plan import fuse_plan
from ablate.spec.study_spec import parse_study
from ablate.engine.resources import Resources

# total img/s of 1, 2, 4 and 8 trials at once, shaped like small models on a large GPU
SATURATES_AT_4 = {1: 1000.0, 2: 1900.0, 4: 2500.0, 8: 2600.0}


@pytest.mark.parametrize("table, count", [
    (SATURATES_AT_4, 4),                                   # 2500 >= 0.9 x 2600; 1900 is not
    ({1: 1000.0, 2: 1050.0, 4: 1040.0, 8: 900.0}, 1),      # one trial already fills the GPU
    ({1: 500.0, 2: 1000.0, 4: 2000.0, 8: 4000.0}, 8),      # still scaling at 8
    ({1: 900.0, 2: 1000.0}, 1),                            # exactly 90 % of the best counts as within
    ({2: 1000.0, 4: 1100.0}, 2),                           # counts that were not measured are not chosen
])
def test_choose_takes_the_fewest_trials_within_ten_percent_of_the_best_total(table, count):
    assert choose(table) == count


def test_choose_needs_a_table():
    with pytest.raises(ValueError):
        choose({})


def test_a_measured_table_sets_the_share_and_the_cores_each_trial_gets():
    p = plan(cpus=16, gpus=1, threads=1, table=SATURATES_AT_4, source="measured now")
    assert (p.trials_per_gpu, p.gpu_share, p.trials_at_once, p.cpus_per_trial) == (4, 0.25, 4, 4)
    two = plan(cpus=16, gpus=2, threads=1, table=SATURATES_AT_4, source="measured now")
    assert (two.trials_per_gpu, two.trials_at_once, two.cpus_per_trial) == (4, 8, 2)
    text = "\n".join(p.lines())
    assert "4 trial(s) per GPU (a 0.25 share each)" in text and "4 CPU core(s) reserved per trial" in text
    assert "within 10% of the best total img/s, measured now" in text
    assert "1 at once 1,000, 2 at once 1,900, 4 at once 2,500, 8 at once 2,600" in text


def test_the_cpus_cap_the_count_and_say_so():
    p = plan(cpus=2, gpus=1, threads=1, table={1: 500.0, 2: 1000.0, 4: 2000.0, 8: 4000.0}, source="measured")
    assert (p.trials_per_gpu, p.trials_at_once, p.cpus_per_trial) == (2, 2, 1)
    assert "the GPU would take 8, but 2 CPU cores feed at most 2 trial(s) per GPU" in p.source
    p = plan(cpus=8, gpus=1, threads=4, table=SATURATES_AT_4, source="measured")
    assert (p.trials_per_gpu, p.cpus_per_trial) == (2, 4)  # each trial keeps its spec's 4 threads


def test_gpus_per_trial_overrides_and_no_table_falls_back_to_four_per_gpu():
    p = plan(cpus=16, gpus=1, threads=1, table=SATURATES_AT_4, source="x", gpus_per_trial=0.5)
    assert (p.trials_per_gpu, p.gpu_share, p.trials_at_once, p.cpus_per_trial) == (2, 0.5, 2, 8)
    assert "--gpus-per-trial 0.5, as asked" in p.source
    p = plan(cpus=16, gpus=1, threads=1, table=None, source="not measured: the measurement failed (x)")
    assert (p.trials_per_gpu, p.gpu_share) == (4, 0.25) and "the default of 4 per GPU" in p.source


def test_without_a_gpu_nothing_is_measured_and_the_cpu_plan_is_todays():
    cfg = TrialConfig(dataset="digits", threads=1)
    p = decide(cpus=2, gpus=0, threads=1, cfg=cfg, in_channels=1)
    assert (p.gpus, p.trials_per_gpu, p.trials_at_once, p.cpus_per_trial) == (0, 0, 2, 1)
    assert "not measured: no GPU" in p.lines()[0]
    res = Resources(cpus=2, threads=1)
    assert res.concurrency() == p.trials_at_once and res.cpus_per_trial() == p.cpus_per_trial


def test_resources_reserve_the_planned_cores_per_trial():
    r = Resources(cpus=16, gpus=1, gpus_per_trial=0.25, threads=1, trial_cpus=4)
    assert r.cpus_per_trial() == 4 and r.concurrency() == 4
    assert Resources(cpus=16, gpus=1, gpus_per_trial=0.25, threads=6, trial_cpus=4).cpus_per_trial() == 6


def test_the_cache_round_trips_per_gpu_and_trial_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(tmp_path))
    cfg = TrialConfig()
    key = shape_key(cfg, 1, "NVIDIA H200")
    assert read_cache(key) is None
    write_cache(key, SATURATES_AT_4)
    assert read_cache(key)["table"] == SATURATES_AT_4
    assert read_cache(shape_key(cfg.replace(precision="bf16"), 1, "NVIDIA H200")) is None
    assert read_cache(shape_key(cfg, 1, "NVIDIA A100")) is None
    (tmp_path / "gpu-throughput.json").write_text("{not json")
    assert read_cache(key) is None  # a damaged cache is measured again, not trusted


@pytest.mark.slow
def test_the_measuring_processes_run_and_time_together_on_the_cpu():
    """Only the machinery: on a CPU the numbers say nothing about a GPU."""
    cfg = TrialConfig(family="cifar", depth=20, image_size=8, batch_size=8, threads=1)
    table = measure_table(cfg, 1, device="cpu", counts=(1, 2), steps=2, warmup=1)
    assert set(table) == {1, 2} and all(v > 0 for v in table.values())


def test_fuse_auto_says_why_bf16_or_compiled_trials_are_not_fused():
    spec = parse_study({"base": {"precision": "bf16", "dataset": "digits"}, "seeds": [0, 1],
                        "factors": {"residual": {"values": [False, True]}}})
    members, why = fuse_plan("auto", Resources(cpus=2), spec)
    assert members == 1 and "fused training runs in fp32 without torch.compile" in why and "precision bf16" in why
    members, why = fuse_plan("4", Resources(cpus=2), spec)
    assert members == 1 and "not fused" in why


@pytest.mark.slow  # a second or more of 2 cores
def test_fuse_measurement_times_the_trials_own_model():
    """measure builds the trial's model, every axis, for the data's channels and classes: its FLOPs grow with each."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ablate.execute.fuse_plan import measure

    def flops(cfg, channels=1, classes=10):
        with FlopCounterMode(display=False) as counter:
            measure(cfg, 2, "cpu", steps=3, in_channels=channels, num_classes=classes)
        return counter.get_total_flops()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = TrialConfig(family="cifar", depth=20, image_size=8, batch_size=4)
        reference = flops(base)
        assert flops(base, channels=3) > reference and flops(base, classes=100) > reference
        assert flops(base.replace(shortcut="projection-all")) > reference
    finally:
        torch.set_num_threads(threads)


def test_the_cache_key_names_every_model_axis():
    base = TrialConfig()
    keys = {shape_key(base.replace(**{axis: value}), 1, "GPU") for axis, value in
            [("block", "basic"), ("block", "preact"), ("norm", "none"), ("activation", "gelu"),
             ("zero_init_residual", True), ("residual_stages", [4]), ("shortcut", "identity")]}
    assert len(keys) == 7 and shape_key(base, 1, "GPU") in keys


@pytest.mark.slow  # a second or more of 2 cores
def test_the_dry_run_prints_the_gpu_plan_and_says_nothing_was_measured_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the plan of a machine without a GPU")
    result = CliRunner().invoke(app, ["study", "residual-ablation", "--dry-run", "--dataset", "digits", "--cpus", "2",
                                      "--budget", "smoke"])
    assert result.exit_code == 0, result.output
    assert "GPU plan: no GPU; 2 trials at a time on the CPU, 1 core(s) each (not measured: no GPU)" in result.output
    # fusing changes a trial's numbers, so it is off unless asked for
    assert "  fusing: off: every trial trains alone (the default;" in result.output
    asked = CliRunner().invoke(app, ["study", "residual-ablation", "--dry-run", "--dataset", "digits", "--cpus", "2",
                                     "--budget", "smoke", "--fuse", "auto"])
    assert asked.exit_code == 0, asked.output
    assert "  fusing: auto: not fused on a CPU" in asked.output
