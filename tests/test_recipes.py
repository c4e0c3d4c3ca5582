"""Training recipes: the learning-rate schedule, warm-up, Nesterov momentum and on-device augmentation."""
import math

import pytest
import torch
import torch.nn.functional as F

from ablate.spec.trial_config import TrialConfig
from ablate.errors import AblateError
from ablate.train.augment import PAD, Augmenter, augment_seed, crop_flip
from ablate.spec.study_spec import load_study
from ablate.train.loop import run_trial

# 1000 images at batch 100 for 10 epochs: 100 steps, so a fraction of training is a step count.
HUNDRED = dict(train_size=1000, batch_size=100, epochs=10, lr=0.1)


def test_defaults_keep_todays_trial_ids():
    # Ids computed before the recipe settings existed (main at 40a6063); a run folder keeps its names.
    assert TrialConfig().trial_id() == "87d109f0cea7"
    assert TrialConfig(family="cifar", depth=56, residual=False, dataset="mnist", lr=0.1, momentum=0.9,
                       telemetry=False).trial_id() == "c61b391dcd17"
    old = {k: v for k, v in TrialConfig().to_dict().items()
           if k not in ("schedule", "warmup_steps", "milestones", "milestone_factor", "nesterov", "augment")}
    assert TrialConfig.from_dict(old).trial_id() == "87d109f0cea7"


@pytest.mark.parametrize("change", [dict(schedule="cosine"), dict(warmup_steps=3), dict(milestones=[0.25, 0.5]),
                                    dict(milestone_factor=0.2), dict(nesterov=True, momentum=0.9),
                                    dict(augment="crop")])
def test_every_recipe_setting_away_from_its_default_names_another_trial(change):
    base = TrialConfig(momentum=0.9)
    assert TrialConfig.from_dict({**base.to_dict(), **change}).trial_id() != base.trial_id()


def test_constant_schedule_without_warmup_has_no_rates_to_set():
    cfg = TrialConfig(**HUNDRED)
    assert cfg.learning_rates() is None
    assert cfg.learning_rate(1) == cfg.learning_rate(100) == 0.1


def test_step_schedule_with_warmup_by_hand():
    cfg = TrialConfig(**HUNDRED, schedule="step", warmup_steps=10)  # milestones 0.5, 0.75 -> steps 50 and 75
    # warm-up: lr * step / 10; then 0.1 up to step 50, 0.01 from 51 to 75, 0.001 from 76 on
    expected = {1: 0.01, 5: 0.05, 10: 0.1, 11: 0.1, 50: 0.1, 51: 0.01, 75: 0.01, 76: 0.001, 100: 0.001}
    for step, lr in expected.items():
        assert cfg.learning_rate(step) == pytest.approx(lr, rel=1e-12), step
    rates = cfg.learning_rates()
    assert len(rates) == 100 and rates[0] == cfg.learning_rate(1) and rates[-1] == cfg.learning_rate(100)


def test_step_schedule_milestones_and_factor_by_hand():
    cfg = TrialConfig(**HUNDRED, schedule="step", milestones=[0.2, 0.3, 0.9], milestone_factor=0.5)
    expected = {20: 0.1, 21: 0.05, 30: 0.05, 31: 0.025, 90: 0.025, 91: 0.0125}
    for step, lr in expected.items():
        assert cfg.learning_rate(step) == pytest.approx(lr, rel=1e-12), step


def test_cosine_schedule_with_warmup_by_hand():
    cfg = TrialConfig(**HUNDRED, schedule="cosine", warmup_steps=20)
    # after warm-up p = (step - 21) / 80: step 21 -> p 0 (lr), 41 -> 1/4, 61 -> 1/2 (lr / 2), 100 -> 79/80
    expected = {10: 0.05, 20: 0.1, 21: 0.1, 41: 0.1 * (1 + math.sqrt(0.5)) / 2, 61: 0.05,
                100: 0.1 * (1 + math.cos(math.pi * 79 / 80)) / 2}
    for step, lr in expected.items():
        assert cfg.learning_rate(step) == pytest.approx(lr, rel=1e-12), step
    rates = cfg.learning_rates()
    assert all(a >= b for a, b in zip(rates[20:], rates[21:])) and rates[-1] > 0


def test_he2016_full_budget_drops_the_rate_at_half_and_three_quarters_of_its_iterations():
    spec = load_study("he2016", "full")
    cfg = spec.arm_config(spec.arms[0], seed=0)
    total = cfg.total_steps()
    assert 64_000 <= total <= 64_500  # He et al.: 64k iterations
    half, three_quarters = round(0.5 * total), round(0.75 * total)
    assert cfg.learning_rate(1) == pytest.approx(0.1 / 400)
    assert cfg.learning_rate(400) == 0.1 and cfg.learning_rate(half) == 0.1
    assert cfg.learning_rate(half + 1) == pytest.approx(0.01)
    assert cfg.learning_rate(three_quarters + 1) == pytest.approx(0.001)
    assert (cfg.dataset, cfg.train_size, cfg.dev_size, cfg.test_size, cfg.batch_size, cfg.momentum, cfg.weight_decay,
            cfg.augment, cfg.shortcut, cfg.family) == ("cifar10", 45_000, 5_000, 10_000, 128, 0.9, 1e-4, "crop-flip",
                                                       "identity", "cifar")
    assert sorted({(a.settings["depth"], a.settings["residual"]) for a in spec.arms}) == \
        sorted((d, r) for d in (20, 32, 44, 56, 110) for r in (False, True))
    assert "Table 6" in spec.description and "8.75" in spec.description and "6.43" in spec.description


def test_he2016_smoke_budget_runs_on_mnist_and_default_is_shorter_than_full():
    smoke, default, full = (load_study("he2016", b) for b in ("smoke", "default", "full"))
    smoke.pin(dataset="mnist")  # what study --dataset mnist does: no digit is ever mirrored
    steps = [s.arm_config(s.arms[0], seed=0).total_steps() for s in (smoke, default, full)]
    assert steps[0] < 100 < steps[1] < steps[2]
    assert all(smoke.arm_config(a, seed=0).augment == "crop" for a in smoke.arms)


@pytest.mark.parametrize("change, fragment", [
    (dict(schedule="linear"), "unknown schedule 'linear'; valid schedules: constant, step, cosine"),
    (dict(augment="flip"), "unknown augment 'flip'; valid: none, crop, crop-flip"),
    (dict(augment="crop-flip", dataset="mnist"), "a mirrored digit or character is not the same class"),
    (dict(augment="crop-flip", dataset="auto"), "use augment crop"),
    (dict(augment="crop-flip", dataset="kmnist"), "use augment crop"),
    (dict(nesterov=True), "nesterov needs momentum > 0"),
    (dict(warmup_steps=100), "warmup_steps must be from 0 to fewer than the trial's 100 steps"),
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(milestones=[0.75, 0.5]), "milestones must be increasing fractions"),
    (dict(milestones=[0.5, 1]), "milestones must be increasing"),
    (dict(milestones=[]), "milestones must be increasing"),
    (dict(milestones=[0.5, 0.5]), "milestones must be increasing"),
    (dict(milestones="0.5"), "milestones must be list"),
    (dict(milestones=[True]), "milestones must be list"),
    (dict(milestone_factor=0), "milestone_factor must be a positive number"),
    (dict(milestone_factor=float("nan")), "milestone_factor must be a finite number"),
    (dict(milestone_factor="nan"), "milestone_factor must be a number, got the text 'nan'"),
])
def test_bad_recipe_settings_are_refused_with_one_line(change, fragment):
    with pytest.raises(AblateError) as err:
        TrialConfig.from_dict({**TrialConfig(**HUNDRED).to_dict(), **change})
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_crop_flip_is_allowed_where_mirroring_keeps_the_class():
    for dataset in ("fashion-mnist", "cifar10", "cifar100", "folder:/some/where"):
        assert TrialConfig(dataset=dataset, augment="crop-flip").augment == "crop-flip"


def test_milestones_round_trip_through_yaml(tmp_path):
    cfg = TrialConfig(schedule="step", milestones=[0.3, 0.6], milestone_factor=0.2, warmup_steps=5)
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert "milestones:\n- 0.3\n- 0.6\n" in path.read_text()
    back = TrialConfig.from_yaml_file(path)
    assert back == cfg and back.milestones == (0.3, 0.6) and back.trial_id() == cfg.trial_id()


# --- augmentation --------------------------------------------------------------------------------
def _reference(x, dy, dx, flip, fill):
    """Pad each channel with its fill, slice the crop, mirror: the textbook way, image by image."""
    padded = torch.cat([F.pad(x[:, c:c + 1], (PAD,) * 4, value=float(fill[c])) for c in range(x.shape[1])], 1)
    h, w = x.shape[-2:]
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(len(x))])
    return out if flip is None else torch.where(flip[:, None, None, None], out.flip(-1), out)


@pytest.mark.parametrize("channels, flip", [(1, False), (3, True)])
def test_crop_flip_equals_padding_slicing_and_mirroring(channels, flip):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, channels, 12, 10, generator=gen)
    dy, dx = torch.randint(0, 2 * PAD + 1, (2, 40), generator=gen)
    dy[:2], dx[:2] = torch.tensor([0, 2 * PAD]), torch.tensor([2 * PAD, 0])  # the extreme corners
    mirror = torch.randint(0, 2, (40,), generator=gen).bool() if flip else None
    fill = torch.tensor([-1.0, 0.25, 2.0][:channels])
    out = crop_flip(x, dy, dx, mirror, fill)
    assert torch.equal(out, _reference(x, dy, dx, mirror, fill))
    assert out.is_contiguous(memory_format=torch.channels_last)
    centred = crop_flip(x, torch.full((40,), PAD), torch.full((40,), PAD), None, fill)
    assert torch.equal(centred, x)  # offset 4, 4 is the image itself


def _draws(kind: str, seed: int, x: torch.Tensor, steps: int = 3) -> list[torch.Tensor]:
    aug = Augmenter(kind, [-1.0] * x.shape[1], torch.device("cpu"), seed)
    return [aug(x) for _ in range(steps)]


def test_augmentation_is_deterministic_under_a_seed_and_differs_across_seeds_and_steps():
    x = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    a, b, c = _draws("crop-flip", 7, x), _draws("crop-flip", 7, x), _draws("crop-flip", 8, x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert all(not torch.equal(u, v) for u, v in zip(a, c))
    assert not torch.equal(a[0], a[1])  # each step draws afresh
    assert augment_seed(7) != augment_seed(8) and augment_seed(7) != 7


def test_crop_draws_every_offset_and_never_flips_and_crop_flip_flips_half():
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    fill = torch.tensor([-1.0])
    # All 81 crops of x, then their mirror images: a random image equals exactly one of them.
    offsets = [(dy, dx) for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1)]
    dy, dx = (torch.tensor(v) for v in zip(*offsets))
    plain = crop_flip(x.expand(81, 1, 8, 8), dy, dx, None, fill)
    every = torch.cat([plain, plain.flip(-1)])
    assert len({t.numpy().tobytes() for t in every}) == 162
    batch = x.expand(2000, 1, 8, 8)
    for kind in ("crop", "crop-flip"):
        out = Augmenter(kind, [-1.0], torch.device("cpu"), 3)(batch)
        match = (out[:, None] == every[None]).flatten(2).all(-1)  # (2000, 162)
        assert (match.sum(1) == 1).all(), kind
        which = match.int().argmax(1)
        flipped = (which >= 81).float().mean().item()
        if kind == "crop":
            assert flipped == 0
            assert len(set(which.tolist())) == 81  # 2000 draws reach every offset (a miss: p < 1e-9)
        else:
            assert 0.4 < flipped < 0.6


# --- the recipe inside a trial -------------------------------------------------------------------
TINY = dict(dataset="digits", family="cifar", depth=20, image_size=16, train_size=128, dev_size=32, test_size=32,
            batch_size=32, epochs=4, eval_every=4, threads=1)


def _weight_norms(result) -> dict[int, float]:
    return {r["step"]: r["weight_norm"] for r in result.grad_norms if r["layer_index"] == 1 and r["kind"] == "layer"}


def test_the_trial_trains_with_the_scheduled_rate():
    # A milestone at half of 16 steps with a factor of 1e-12: from update 9 on the weights stand still.
    frozen = run_trial(TrialConfig(**TINY, lr=0.1, schedule="step", milestones=[0.5], milestone_factor=1e-12))
    moving = run_trial(TrialConfig(**TINY, lr=0.1))
    # weight_norm at an evaluation step s is the weights before update s
    f, m = _weight_norms(frozen), _weight_norms(moving)
    assert f[4] != f[8] and f[8] != f[12]  # update 8 still had the full rate
    assert f[12] == pytest.approx(f[16], rel=1e-9)
    assert m[12] != pytest.approx(m[16], rel=1e-6)
    assert frozen.train_loss[:8] == moving.train_loss[:8]


@pytest.mark.slow
def test_warmup_nesterov_and_augmentation_each_change_the_training_and_repeat_exactly():
    base = run_trial(TrialConfig(**TINY, lr=0.05, momentum=0.9))
    for change in (dict(warmup_steps=8), dict(nesterov=True), dict(augment="crop")):
        cfg = TrialConfig(**TINY, lr=0.05, momentum=0.9, **change)
        a, b = run_trial(cfg), run_trial(cfg)
        assert a.train_loss == b.train_loss and a.test_pred == b.test_pred, change
        assert a.train_loss != base.train_loss, change
    seeded = [run_trial(TrialConfig(**TINY, lr=0.05, augment="crop", seed=s)).train_loss for s in (1, 2)]
    assert seeded[0] != seeded[1]


def test_the_reports_protocol_states_the_recipe(tmp_path):
    from helpers.runs import BASE, build_run, spec_doc

    from ablate.analysis import analyze

    recipe = dict(dataset="cifar10", lr=0.1, momentum=0.9, nesterov=True, schedule="step", warmup_steps=40,
                  augment="crop-flip")
    doc = spec_doc(base={**BASE, **recipe}, seeds=[0, 1])
    trials = [{"arm": a, "seed": s, "test_acc": 0.9, "in_channels": 3} for a in ("residual=true", "residual=false")
              for s in (0, 1)]
    md = analyze(build_run(tmp_path / "run", trials, doc=doc), figures=False).report.read_text()
    line = next(l for l in md.splitlines() if l.startswith("Protocol:"))
    for text in ("SGD with Nesterov momentum (lr 0.1, momentum 0.9", "learning rate times 0.1 at 50 %/75 % of "
                 "training after 40 steps of linear warm-up", "random crops after padding by 4 black pixels and "
                 "horizontal flips", "CIFAR-10 (32×32 colour photographs, 10 classes)",
                 "normalised per channel by the training subset's mean and standard deviation"):
        assert text in line, text
    assert "not converged" not in line and "no data augmentation" not in line


def test_trials_with_a_recipe_fuse_but_only_with_the_same_recipe():
    """Fused members train through the shared loop (ablate.train.loop): a recipe fuses; members must share it."""
    from ablate.spec.trial_config import fusable

    base = TrialConfig(**TINY, lr=0.05, momentum=0.9)
    assert fusable([base, base.replace(seed=1)]) is None
    for change in (dict(schedule="cosine"), dict(warmup_steps=2), dict(nesterov=True), dict(augment="crop")):
        cfg = base.replace(**change)
        assert fusable([cfg, cfg.replace(seed=1, lr=0.02)]) is None, change
        why = fusable([base, cfg.replace(seed=1)])
        assert why is not None and f"differ in {next(iter(change))}" in why, change
