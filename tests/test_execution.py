"""Trial options precision (fp32 | bf16) and compile (none | default | reduce-overhead), on the CPU.

The compiled trials here are tiny (ResNet-10 at 8x8, 3 steps an epoch); the first compile of the session costs
about 20-40 s of the 2-core test machine (inductor's C++ compile; later ones hit its on-disk cache).
"""
import pytest
from typer.testing import CliRunner

from ablate.cli.app import app
from ablate.spec.trial_config import TrialConfig
from ablate.errors import AblateError
from ablate.train.fused import fusable, run_fused
from ablate.train.trial_files import write_trial_folder
from ablate.train.reproduce import reproduce_trial as reproduce
from ablate.spec.study_spec import parse_study
from ablate.train.loop import run_trial

# 80 images at batch 32: batches of 32, 32 and a ragged 16 every epoch; evaluations (and telemetry) at 4, 8, 9.
TINY = TrialConfig(dataset="digits", family="imagenet", depth=10, image_size=8, train_size=80, dev_size=32,
                   test_size=32, batch_size=32, epochs=3, eval_every=4, lr=0.05, threads=1)


def test_defaults_keep_every_trial_id_and_other_values_name_other_trials():
    assert TrialConfig().trial_id() == "87d109f0cea7"  # the id before these settings existed
    assert TrialConfig(precision="fp32", compile="none").trial_id() == "87d109f0cea7"
    before = {k: v for k, v in TrialConfig().to_dict().items() if k not in ("precision", "compile")}
    assert TrialConfig.from_dict(before).trial_id() == "87d109f0cea7"  # an old config.yaml without them
    ids = {TrialConfig(**kw).trial_id() for kw in ({}, {"precision": "bf16"}, {"compile": "default"},
                                                   {"compile": "reduce-overhead"}, {"precision": "bf16", "compile": "default"})}
    assert len(ids) == 5


@pytest.mark.parametrize("data, needle", [
    ({"precision": "fp16"}, "unknown precision 'fp16'; valid: fp32, bf16"),
    ({"compile": "max-autotune"}, "unknown compile 'max-autotune'; valid: none, default, reduce-overhead"),
    ({"compile": True}, "compile must be str"),
])
def test_bad_values_are_refused_in_one_line_listing_the_valid_ones(data, needle):
    with pytest.raises(AblateError, match=needle) as info:
        TrialConfig.from_dict(data, source="x.yaml")
    assert "\n" not in str(info.value)


def test_settable_in_a_spec_and_checked_there():
    spec = parse_study({"base": {"precision": "bf16", "compile": "reduce-overhead"}, "seeds": [0],
                        "factors": {"residual": {"values": [False, True]}}})
    assert {(c.precision, c.compile) for c in (spec.arm_config(a) for a in spec.arms)} == {("bf16", "reduce-overhead")}
    with pytest.raises(AblateError, match="valid: fp32, bf16"):
        parse_study({"base": {"precision": "half"}, "seeds": [0], "factors": {"residual": {"values": [False, True]}}})


@pytest.mark.parametrize("flag, value, needle", [("--precision", "fp16", "valid: fp32, bf16"),
                                                 ("--compile", "yes", "valid: none, default, reduce-overhead")])
def test_train_flags_refuse_bad_values_with_exit_2_and_one_line(tmp_path, flag, value, needle):
    result = CliRunner().invoke(app, ["train", "--dataset", "digits", flag, value, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert not (tmp_path / "run").exists()


def test_fused_trials_refuse_bf16_and_compile():
    for kw in ({"precision": "bf16"}, {"compile": "default"}):
        members = [TINY.replace(seed=s, **kw) for s in (0, 1)]
        assert "fused training runs in fp32 without torch.compile" in fusable(members)
        with pytest.raises(AblateError, match="cannot fuse"):
            run_fused(members)


def test_bf16_trains_on_the_cpu_deterministically_and_reproduces(tmp_path):
    cfg = TINY.replace(precision="bf16", epochs=2)
    fp32, bf16 = run_trial(cfg.replace(precision="fp32")), run_trial(cfg)
    assert bf16.status == "ok" and bf16.steps == cfg.total_steps()
    assert bf16.train_loss != fp32.train_loss  # bf16 really ran: its rounding shows in the losses
    assert bf16.train_loss[0] == pytest.approx(fp32.train_loss[0], rel=2e-2)
    folder = write_trial_folder(tmp_path / cfg.trial_id(), cfg, bf16, plot=False)
    report = reproduce(folder)
    assert report.identical, report.format()


@pytest.mark.slow
def test_a_compiled_trial_compiles_once_however_many_epochs_and_reproduces(tmp_path):
    from torch._dynamo.utils import counters

    counters.clear()
    graphs = []  # distinct compiled graphs at the end of each epoch
    steps = TINY.total_steps() // TINY.epochs
    compiled = run_trial(TINY.replace(compile="default"),
                         progress=lambda s, n: graphs.append(counters["stats"]["unique_graphs"]) if s % steps == 0 else None)
    assert graphs == [1, 1, 1]  # one graph (batch 32) in the first epoch, and no recompile in the next two
    assert counters["frames"]["total"] == 1
    eager = run_trial(TINY)
    assert compiled.status == "ok" and compiled.steps == eager.steps == 9
    assert compiled.train_loss[0] == eager.train_loss[0]  # step 0 runs eagerly (its telemetry hooks)
    assert compiled.train_loss == pytest.approx(eager.train_loss, rel=1e-3)  # compiled kernels round differently
    cfg = TINY.replace(compile="default")
    folder = write_trial_folder(tmp_path / cfg.trial_id(), cfg, compiled, plot=False)
    report = reproduce(folder)
    assert report.identical, report.format()



def test_bf16_on_a_cpu_keeps_overhanging_convolutions_in_fp32():
    """torch's CPU bf16 convolution gives inf/nan weight gradients for a 3x3 kernel on a 1x1 input (see
    ablate.train.forward): such layers run in fp32, so every gradient of the trial stays finite and near fp32's."""
    import math

    from ablate.train.forward import overhanging_convs
    from helpers.models import build

    model = build("imagenet", 10, in_channels=1, num_classes=10)
    assert overhanging_convs(model, (2, 1, 8, 8)) == ["stages.1.0.conv2", "stages.2.0.conv1", "stages.2.0.conv2",
                                                      "stages.3.0.conv1", "stages.3.0.conv2"]
    assert overhanging_convs(model, (2, 1, 32, 32)) == ["stages.3.0.conv2"]  # 3x3 on 1x1 (its conv1 sees 2x2)
    assert overhanging_convs(build("cifar", 20), (2, 1, 8, 8)) == []
    cfg = TINY.replace(precision="bf16", epochs=1)
    bf16, fp32 = run_trial(cfg), run_trial(cfg.replace(precision="fp32"))
    assert all(math.isfinite(r["grad_norm"]) and math.isfinite(r["weight_norm"]) for r in bf16.grad_norms)
    at_init = {r["layer"]: r["grad_norm"] for r in fp32.grad_norms if r["step"] == 0 and r["kind"] == "layer"}
    for r in bf16.grad_norms:
        if r["step"] == 0 and r["kind"] == "layer":
            assert r["grad_norm"] == pytest.approx(at_init[r["layer"]], rel=0.1), r["layer"]


def test_the_report_and_the_estimate_name_the_execution_settings():
    from ablate.analysis.context import execution_text
    from ablate.execute.estimate import _arch

    settings = {"precision": "fp32", "compile": "none"}
    assert execution_text(settings.get) == ""  # fp32 eager, the default, goes unmentioned as before
    settings.update(precision="bf16", compile="reduce-overhead")
    assert execution_text(settings.get) == ("; training forward passes in bf16 autocast (evaluation in fp32); trained "
                                            "through torch.compile (mode reduce-overhead)")
    assert _arch(TrialConfig()) == "imagenet-18 residual-projection 1x32px 10 classes batch 64"
    assert _arch(TrialConfig(precision="bf16", compile="default")).endswith("batch 64 bf16 (eager; compiled trials differ)")


@pytest.mark.slow
def test_a_compiled_trial_paused_and_continued_computes_what_an_uninterrupted_one_does():
    # the graph test_a_compiled_trial_compiles_once... and benchmarks/gpu_check.py's test compile: one cold compile
    cfg = TINY.replace(compile="default")
    whole = run_trial(cfg)
    first = run_trial(cfg, stop_after_evals=1)
    assert first.status == "paused" and first.steps == 4
    rest = run_trial(cfg, resume=first.checkpoint)
    assert rest.status == "ok" and rest.train_loss == whole.train_loss and rest.dev_acc == whole.dev_acc
    assert rest.test_acc == whole.test_acc
