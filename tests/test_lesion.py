"""Lesion study on real small models trained on scikit-learn's digits (no download): weights.pt, dropped
blocks, what replaced them, the share of predictions a lesion changes, Veit et al.'s contrast."""
import json
import statistics

import pytest
import torch
import torch.nn.functional as F

from ablate.errors import AblateError
from ablate.probes.lesion import RUN_COLUMNS, dropped, lesion_run, lesion_trial, replacement_for
from ablate.models.resnet import IdentityShortcut
from ablate.probes.batchnorm import estimate_statistics, kept_statistics
from helpers.models import build
from ablate.train.trial_files import write_trial_folder
from ablate.run_folder.registry import append_registry
from ablate.spec.trial_config import TrialConfig
from ablate.train.loop import run_trial
from ablate.run_folder.trial_records import load_weights

# cifar-20 at 16x16: small enough for seconds on two cores, trained well enough that removing a
# block has something to destroy.
TRAIN = dict(dataset="digits", family="cifar", depth=20, image_size=16, train_size=1024, dev_size=128,
             test_size=256, batch_size=32, epochs=3, eval_every=8, lr=0.01, momentum=0.9, threads=2)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A study-like run folder: residual and plain trials with weights in confirm, one tune trial without. It
    trains two nets for about 10 s each: the tests that read it are slow."""
    run = tmp_path_factory.mktemp("run")
    for residual in (True, False):
        cfg = TrialConfig(**TRAIN, residual=residual)
        result = run_trial(cfg, keep_best_state=True)
        assert result.status == "ok"
        write_trial_folder(run / "trials" / cfg.trial_id(), cfg, result, plot=False, weights=True)
        append_registry(run, {"trial_id": cfg.trial_id(), "stage": "confirm", "arm": f"residual={str(residual).lower()}",
                              "params": {}, "seed": cfg.seed, "status": "ok", "test_acc": result.test_acc})
    tune_cfg = TrialConfig(**{**TRAIN, "epochs": 1, "train_size": 128})
    write_trial_folder(run / "trials" / tune_cfg.trial_id(), tune_cfg, run_trial(tune_cfg), plot=False)
    append_registry(run, {"trial_id": tune_cfg.trial_id(), "stage": "tune", "arm": "residual=true", "params": {},
                          "seed": tune_cfg.seed, "status": "ok"})
    return run


def folder_of(run_dir, residual):
    return run_dir / "trials" / TrialConfig(**TRAIN, residual=residual).trial_id()


@pytest.fixture(scope="module")
def lesions(run_dir):
    return {residual: lesion_trial(folder_of(run_dir, residual)) for residual in (True, False)}


def test_weights_are_the_best_dev_state_and_only_written_on_request(tmp_path):
    cfg = TrialConfig(**{**TRAIN, "train_size": 128, "epochs": 1})
    result = run_trial(cfg, keep_best_state=True)
    write_trial_folder(tmp_path / "with", cfg, result, plot=False, weights=True)
    write_trial_folder(tmp_path / "without", cfg, result, plot=False)
    assert not (tmp_path / "without" / "weights.pt").exists()
    saved = torch.load(tmp_path / "with" / "weights.pt", map_location="cpu", weights_only=True)
    assert saved.keys() == result.best_state.keys()
    assert all(torch.equal(saved[k], result.best_state[k]) for k in saved)
    assert load_weights(tmp_path / "with").keys() == saved.keys()
    assert not list((tmp_path / "with").glob(".*.tmp"))  # the atomic write left no temp file behind


@pytest.mark.slow
def test_nothing_dropped_scores_exactly_the_recorded_test_accuracy(run_dir, lesions):
    for residual, rows in lesions.items():
        recorded = json.loads((folder_of(run_dir, residual) / "metrics.json").read_text())["test_acc"]
        none = rows[0]
        assert (none["block"], none["block_index"], none["replacement"]) == ("none", -1, "none")
        assert none["lesioned_acc"] == recorded
        assert all(r["test_acc"] == recorded for r in rows)
        assert recorded > 0.6


@pytest.mark.slow
def test_each_block_is_dropped_once_with_the_right_replacement(lesions):
    names = [name for name, _ in build("cifar", 20).blocks()]
    downsampling = {"stages.1.0", "stages.2.0"}
    for residual, rows in lesions.items():
        assert [r["block"] for r in rows[1:]] == names
        assert [r["block_index"] for r in rows[1:]] == list(range(len(names)))
        for r in rows[1:]:
            # A plain net has no shortcut of its own: its downsampling lesion gets one added, and says so.
            expected = ("projection" if residual else "zero-pad-added") if r["block"] in downsampling else "identity"
            assert r["replacement"] == expected
            assert r["block_type"] == ("downsampling" if r["block"] in downsampling else "same-shape")
            assert r["drop"] == r["test_acc"] - r["lesioned_acc"]
    identity_net = build("cifar", 20, shortcut="identity")
    kinds = [replacement_for(block)[0] for _, block in identity_net.blocks()]
    assert kinds == ["zero-pad" if n in downsampling else "identity" for n in names]


@pytest.mark.slow
def test_a_dropped_block_computes_only_its_shortcut_path_and_is_restored(run_dir):
    torch.manual_seed(0)
    for residual in (True, False):
        model = build("cifar", 20, residual=residual)
        model.load_state_dict(load_weights(folder_of(run_dir, residual)))
        model.eval()
        x = torch.randn(4, 1, 16, 16)
        with torch.no_grad():
            before = model(x)
            inputs = {}
            hooks = [b.register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0]) and None)
                     for n, b in model.blocks()]
            model(x)
            for h in hooks:
                h.remove()
            for name, block in model.blocks():
                xin = inputs[name]
                normal = block(xin)
                with dropped(block) as kind:
                    out = block(xin)
                    assert out.shape == normal.shape  # the lesioned net still runs end to end
                    assert not torch.equal(out, normal)
                    if kind == "identity":
                        assert torch.equal(out, xin)
                    elif kind == "projection":
                        assert torch.equal(out, F.relu(block.shortcut(xin)))
                    else:
                        assert kind == ("zero-pad" if residual else "zero-pad-added")
                        stride = block.conv1.stride[0]
                        expected = IdentityShortcut(block.conv1.in_channels, block.conv2.out_channels, stride)(xin)
                        assert torch.equal(out, expected)
                assert "forward" not in vars(block)
                assert torch.equal(block(xin), normal)
            assert torch.equal(model(x), before)


@pytest.mark.slow
def test_changed_is_the_share_of_test_predictions_the_lesion_changed(run_dir, lesions):
    from ablate.data.splits import load_splits

    cfg = TrialConfig(**TRAIN, residual=False)
    splits = load_splits(cfg.dataset, None, cfg.train_size, cfg.dev_size, cfg.test_size, seed=cfg.data_seed,
                         image_size=cfg.image_size)
    model = build("cifar", 20, residual=False)
    model.load_state_dict(load_weights(folder_of(run_dir, False)))
    model = model.eval().to(memory_format=torch.channels_last)
    x = splits.test.x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        intact = model(x).argmax(1)
        for row, (name, block) in zip(lesions[False][1:], model.blocks()):
            with dropped(block):
                pred = model(x).argmax(1)
            assert row["block"] == name
            assert row["changed"] == pytest.approx((pred != intact).float().mean().item(), abs=1e-9)
            assert row["lesioned_acc"] == pytest.approx((pred == splits.test.y).float().mean().item(), abs=1e-9)
    assert lesions[False][0]["changed"] == 0.0


@pytest.mark.slow
def test_residual_nets_survive_single_lesions_that_break_plain_nets(lesions):
    # Veit et al. 2016: a residual net behaves like an ensemble of paths, so most single blocks can go;
    # in a plain net every block lies on the only path.
    residual = [r["drop"] for r in lesions[True][1:]]
    plain = [r["drop"] for r in lesions[False][1:]]
    assert statistics.median(residual) < min(plain)
    assert min(residual) < 0.05
    assert min(plain) > 0.2


@pytest.mark.slow
def test_lesion_run_covers_the_final_stage_trials_with_weights(run_dir, lesions):
    frame = lesion_run(run_dir)
    assert list(frame.columns) == list(RUN_COLUMNS)
    ids = {folder_of(run_dir, r).name: r for r in (True, False)}
    assert set(frame["trial_id"]) == set(ids)  # the tune trial is not in the final stage
    assert len(frame) == 2 * (1 + 9)
    for trial_id, residual in ids.items():
        part = frame[frame["trial_id"] == trial_id]
        assert set(part["residual"]) == {residual}
        assert set(part["arm"]) == {f"residual={str(residual).lower()}"}
        assert part["lesioned_acc"].tolist() == [r["lesioned_acc"] for r in lesions[residual]]


def test_batchnorm_statistics_are_estimated_from_the_images_and_then_restored():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), torch.nn.BatchNorm2d(3)).eval()
    x = torch.randn(8, 1, 2, 2)
    with torch.no_grad():
        h = net[0](x).transpose(0, 1).reshape(3, -1)
    with kept_statistics(net):
        estimate_statistics(net, x, chunk=8)  # one batch: exactly its statistics
        assert torch.allclose(net[1].running_mean, h.mean(1)) and torch.allclose(net[1].running_var, h.var(1))
        assert not net.training
        estimate_statistics(net, x, chunk=4)  # two equal batches: the average of their statistics
        halves = h.reshape(3, 2, -1)
        assert torch.allclose(net[1].running_mean, halves.mean(2).mean(1))
        assert torch.allclose(net[1].running_var, halves.var(2).mean(1))
        net.train()
    assert torch.equal(net[1].running_mean, torch.zeros(3)) and torch.equal(net[1].running_var, torch.ones(3))
    assert not net.training and net[1].momentum == 0.1


@pytest.mark.slow
def test_recalibrated_lesions_score_each_lesioned_net_with_statistics_from_the_training_images(run_dir, lesions):
    from ablate.probes.lesion import load_trial
    from ablate.train.loop import evaluate

    rows = lesion_trial(folder_of(run_dir, False), recalibrate=True)
    assert rows[0] == {**lesions[False][0], "recalibrated": False}  # the intact check keeps the trained statistics
    assert all(r["recalibrated"] for r in rows[1:]) and not any(r["recalibrated"] for r in lesions[False])
    trial = load_trial(folder_of(run_dir, False))
    blocks = trial.model.blocks()
    for i in (0, 4):  # a same-shape block and the first downsampling one, by hand
        with dropped(blocks[i][1]), kept_statistics(trial.model):
            estimate_statistics(trial.model, trial.splits.train.x.contiguous(memory_format=trial.memory_format))
            acc = evaluate(trial.model, trial.splits.test.x, trial.splits.test.y, trial.memory_format)[0]
        assert rows[1 + i]["lesioned_acc"] == pytest.approx(acc)
    # the comparison can fail: re-estimated statistics change what a plain net's lesions cost
    assert any(r["lesioned_acc"] != q["lesioned_acc"] for r, q in zip(rows[1:], lesions[False][1:]))


@pytest.mark.slow
def test_bad_input_is_refused_with_a_clear_message(run_dir, tmp_path):
    tune_folder = next(p for p in (run_dir / "trials").iterdir() if not (p / "weights.pt").exists())
    with pytest.raises(AblateError, match="no weights.pt in"):
        lesion_trial(tune_folder)
    with pytest.raises(AblateError, match="no config.yaml in"):
        lesion_trial(tmp_path)
    with pytest.raises(AblateError, match="no trials.jsonl in"):
        lesion_run(tmp_path)
    only_tune = tmp_path / "only_tune"
    only_tune.mkdir()
    append_registry(only_tune, {"trial_id": tune_folder.name, "stage": "tune", "arm": "a", "params": {}, "seed": 0})
    with pytest.raises(AblateError, match="no confirm or grid trials"):
        lesion_run(only_tune)
    (tmp_path / "config.yaml").write_text((tune_folder / "config.yaml").read_text())
    (tmp_path / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AblateError, match="cannot read weights"):
        lesion_trial(tmp_path)
