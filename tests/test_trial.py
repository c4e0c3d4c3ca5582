import math

import pytest
import torch
import yaml

from ablate.errors import AblateError
from ablate.spec.trial_config import TrialConfig
from ablate.train.loop import run_trial

SMALL = dict(train_size=256, dev_size=64, test_size=64, batch_size=32, eval_every=4, threads=2)


@pytest.mark.slow
def test_short_training_lowers_the_loss_on_mnist(fake_mnist):
    cfg = TrialConfig(dataset="mnist", epochs=3, lr=0.05, **SMALL)
    result = run_trial(cfg, data_dir=fake_mnist)
    assert result.status == "ok" and result.dataset == "mnist"
    steps_per_epoch = 256 // 32
    assert len(result.train_loss) == 3 * steps_per_epoch == result.steps
    first = sum(result.train_loss[:4]) / 4
    assert result.final_train_loss < 0.5 * first
    assert result.best_dev_acc > 0.25  # chance is 0.1; BN running stats lag this early in training
    assert 0.0 <= result.test_acc <= 1.0 and math.isfinite(result.test_loss)
    # evaluations every 4 steps and at the end; best step is one of them
    assert result.eval_steps == list(range(4, 25, 4))
    assert result.best_step in result.eval_steps
    assert result.best_dev_acc == max(result.dev_acc)


@pytest.mark.slow
def test_same_config_gives_identical_metrics(fake_mnist):
    cfg = TrialConfig(dataset="mnist", epochs=1, lr=0.02, seed=7, **SMALL)
    a, b = run_trial(cfg, data_dir=fake_mnist), run_trial(cfg, data_dir=fake_mnist)
    assert a.train_loss == b.train_loss
    assert a.dev_acc == b.dev_acc and a.dev_loss == b.dev_loss
    assert (a.test_acc, a.test_loss) == (b.test_acc, b.test_loss)
    c = run_trial(cfg.replace(seed=8), data_dir=fake_mnist)
    assert c.train_loss != a.train_loss


@pytest.mark.slow  # a second or more of 2 cores
def test_report_callback_sees_every_evaluation():
    seen = []
    cfg = TrialConfig(dataset="digits", epochs=1, **SMALL)
    result = run_trial(cfg, report=seen.append)
    assert [m["step"] for m in seen] == result.eval_steps
    assert seen[-1]["best_dev_acc"] == result.best_dev_acc
    assert result.dataset == "digits"


def test_huge_learning_rate_diverges_without_raising():
    cfg = TrialConfig(dataset="digits", epochs=2, lr=1e6, family="cifar", depth=20, **SMALL)
    result = run_trial(cfg)
    assert result.status == "diverged"
    assert math.isnan(result.test_acc)
    assert result.steps < 2 * 256 // 32


def test_config_yaml_round_trip_and_hash(tmp_path):
    cfg = TrialConfig(lr=0.0123, residual=False, shortcut="identity", seed=3)
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    back = TrialConfig.from_yaml_file(path)
    assert back == cfg and back.trial_id() == cfg.trial_id()
    assert cfg.replace(lr=0.0124).trial_id() != cfg.trial_id()


@pytest.mark.parametrize("changes, fragment", [
    ({"family": "vgg"}, "unknown family"),
    ({"depth": 19}, "valid depths: 10, 18, 34"),
    ({"family": "cifar", "depth": 18}, "valid depths: 20, 32"),
    ({"lr": 0}, "lr must be a positive"),
    ({"lr": -0.1}, "lr must be a positive"),
    ({"batch_size": 0}, "batch_size must be positive"),
    ({"epochs": -1}, "epochs must be positive"),
    ({"dataset": "cifar-10"}, "unknown dataset"),
    ({"shortcut": "dense"}, "unknown shortcut"),
    ({"momentum": 1.5}, "momentum"),
    ({"learning_rate": 0.1}, "unknown setting"),
    ({"epochs": "five"}, "epochs must be int"),
    ({"residual": "yes"}, "residual must be bool"),
    ({"schema": 99}, "newer than this toolkit"),
])
def test_bad_settings_are_rejected_with_a_clear_message(changes, fragment):
    with pytest.raises(AblateError, match=fragment):
        TrialConfig.from_dict({**TrialConfig().to_dict(), **changes})


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lr: 0.1\ndepth: [18\n")
    with pytest.raises(AblateError, match=r"malformed YAML in .*bad.yaml line"):
        TrialConfig.from_yaml_file(path)
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(AblateError, match="expected a mapping"):
        TrialConfig.from_yaml_file(path)


PAUSABLE = dict(dataset="digits", family="cifar", depth=20, image_size=16, train_size=130, dev_size=64, test_size=64,
                batch_size=32, epochs=3, eval_every=4, lr=0.05, momentum=0.9, threads=1)


# Pauses fall mid-warm-up (step 4 of 6) and on the milestone (step 8 of 15: round(0.5 * 15) = 8), and the
# augmentation generator is part of the checkpoint.
RECIPE = dict(schedule="step", warmup_steps=6, milestones=[0.5], nesterov=True, augment="crop")


@pytest.mark.parametrize("recipe", [{}, RECIPE, dict(schedule="cosine", warmup_steps=2, augment="crop")],
                         ids=["constant", "step-warmup-nesterov-crop", "cosine-crop"])
def test_a_paused_trial_continues_bit_for_bit(recipe):
    cfg = TrialConfig(**PAUSABLE, **recipe)
    full = run_trial(cfg)
    first = run_trial(cfg, stop_after_evals=2)
    assert first.status == "paused" and first.eval_steps == [4, 8] and first.steps == 8
    assert first.checkpoint is not None and math.isnan(first.test_acc)
    second = run_trial(cfg, resume=first.checkpoint, stop_after_evals=3)
    assert second.status == "paused" and second.eval_steps == [4, 8, 12]
    kept = {k: v.clone() for k, v in second.checkpoint["best_state"].items()}
    last = run_trial(cfg, resume=second.checkpoint)
    assert last.status == "ok" and last.segments == 3 and last.checkpoint is None
    assert all(torch.equal(v, kept[k]) for k, v in second.checkpoint["best_state"].items())
    for name in ("train_loss", "eval_steps", "dev_acc", "dev_loss", "best_dev_acc", "best_step", "test_acc",
                 "test_loss", "final_test_acc", "scored_train_acc", "scored_train_loss", "test_pred", "final_train_loss"):
        assert getattr(last, name) == getattr(full, name), name
    assert [(r["step"], r["layer"], r["grad_norm"]) for r in last.grad_norms] == \
           [(r["step"], r["layer"], r["grad_norm"]) for r in full.grad_norms]


def test_a_continued_trials_better_evaluations_leave_its_checkpoint_as_it_was():
    """A trial keeps its best-dev weights in one set of tensors, written again at each better dev evaluation
    (ablate.train.loop.copy_state); continued from a checkpoint, those tensors are copies of the checkpoint's, so the
    checkpoint still holds the weights it was written with (a caller may continue it again), and the continued
    trial ends as an uninterrupted one does."""
    cfg = TrialConfig(**{**PAUSABLE, "lr": 0.01, "epochs": 5})  # its dev accuracy still improves after step 12
    full = run_trial(cfg)
    paused = run_trial(cfg, stop_after_evals=3)
    kept = {k: v.clone() for k, v in paused.checkpoint["best_state"].items()}
    last = run_trial(cfg, resume=paused.checkpoint)
    assert last.best_step > paused.best_step  # a better evaluation came after the continuation: the case is exercised
    assert all(torch.equal(v, kept[k]) for k, v in paused.checkpoint["best_state"].items())
    assert (last.best_step, last.test_acc, last.test_loss) == (full.best_step, full.test_acc, full.test_loss)
    again = run_trial(cfg, resume=paused.checkpoint)  # the same checkpoint, continued a second time
    assert (again.best_step, again.test_acc, again.test_loss) == (full.best_step, full.test_acc, full.test_loss)


def test_pausing_at_or_past_the_last_evaluation_finishes_the_trial():
    cfg = TrialConfig(**PAUSABLE)
    assert cfg.evaluation_steps() == [4, 8, 12, 15]
    assert run_trial(cfg, stop_after_evals=4).status == "ok"


def test_a_checkpoint_of_another_trial_is_refused():
    cfg = TrialConfig(**PAUSABLE)
    paused = run_trial(cfg, stop_after_evals=1)
    with pytest.raises(AblateError, match="checkpoint is for trial"):
        run_trial(cfg.replace(lr=0.06), resume=paused.checkpoint)


def test_scored_and_final_checkpoints_are_both_reported():
    cfg = TrialConfig(**{**PAUSABLE, "lr": 0.2})
    r = run_trial(cfg)
    assert len(r.test_pred) == len(r.test_pred_final) == len(r.test_labels) == 64
    # the reported score is the best-dev checkpoint's, recomputable from its per-image predictions
    assert r.test_acc == sum(p == y for p, y in zip(r.test_pred, r.test_labels)) / 64
    assert r.final_test_acc == sum(p == y for p, y in zip(r.test_pred_final, r.test_labels)) / 64
    assert 0 <= r.scored_train_acc <= 1 and math.isfinite(r.scored_train_loss)
    if r.best_step == r.steps:  # the scored checkpoint is the last one: both scores must agree
        assert r.final_test_acc == r.test_acc


def test_a_last_batch_of_one_image_is_folded_into_the_one_before():
    cfg = TrialConfig(dataset="digits", family="cifar", depth=20, image_size=16, train_size=65, dev_size=32,
                      test_size=32, batch_size=64, epochs=2, eval_every=1, threads=1)
    assert cfg.batches() == [(0, 65)]
    assert TrialConfig(train_size=129, batch_size=64).batches() == [(0, 64), (64, 129)]
    assert TrialConfig(train_size=130, batch_size=64).batches() == [(0, 64), (64, 128), (128, 130)]
    assert TrialConfig(train_size=130, batch_size=65).batches() == [(0, 65), (65, 130)]
    result = run_trial(cfg)
    assert result.status == "ok" and result.steps == 2


@pytest.mark.parametrize("changes, fragment", [
    ({"momentum": float("nan")}, "momentum must be a finite number"),
    ({"weight_decay": float("inf")}, "weight_decay must be a finite number"),
    ({"lr": float("-inf")}, "lr must be a finite number"),
    ({"lr": "0.1"}, "lr must be a number, got the text '0.1'"),  # numbers are never read from text (issue 25)
    ({"batch_size": 1}, "at least 2"),
    ({"train_size": 1}, "at least 2"),
])
def test_non_finite_numbers_and_single_image_batches_are_refused(changes, fragment):
    with pytest.raises(AblateError, match=fragment):
        TrialConfig.from_dict({**TrialConfig().to_dict(), **changes})
