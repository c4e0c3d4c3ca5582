"""Gradient telemetry: grad_norms.csv from real training on MNIST / digits."""
import csv
import hashlib
import json
import math

import pytest
import torch
import torch.nn.functional as F

from ablate.data.splits import load_splits
from ablate.spec.trial_config import _HASH_NEUTRAL_DEFAULTS
from helpers.models import build
from ablate.train.trial_files import write_trial_folder
from ablate.train.telemetry import GradTelemetry
from ablate.spec.trial_config import TrialConfig
from ablate.train.loop import run_trial
from ablate.train.device import seed_everything
from ablate.run_folder.trial_records import GRAD_NORM_COLUMNS

SMALL = dict(dataset="digits", train_size=128, dev_size=64, test_size=64, batch_size=32, epochs=2, eval_every=3,
             threads=2, lr=0.05)


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = TrialConfig(**SMALL)
    result = run_trial(cfg)
    folder = write_trial_folder(tmp_path_factory.mktemp("on"), cfg, result, plot=False)
    return cfg, result, folder


def forward_order(model):
    """Conv/linear module names in the order a real forward pass calls them."""
    names = {m: n for n, m in model.named_modules()}
    called = []
    handles = [m.register_forward_hook(lambda mod, i, o: called.append(names[mod]) and None)
               for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, 1, 32, 32))
    for h in handles:
        h.remove()
    return called


def test_columns_and_one_record_at_init_and_at_every_evaluation(trained):
    cfg, result, folder = trained
    with open(folder / "grad_norms.csv") as fh:
        assert fh.readline().strip() == "step,layer,layer_index,block,kind,grad_norm,weight_norm,output_std"
    rows = read_rows(folder / "grad_norms.csv")
    assert tuple(rows[0]) == GRAD_NORM_COLUMNS
    steps = sorted({int(r["step"]) for r in rows})
    assert steps == [0, *result.eval_steps] == [0, 3, 6, 8]

    model = build(cfg.family, cfg.depth)
    order = forward_order(model)
    blocks = ["stem", *(name for name, _ in model.blocks()), "head"]
    for step in steps:
        layers = [r for r in rows if int(r["step"]) == step and r["kind"] == "layer"]
        assert [r["layer"] for r in layers] == order  # one row per conv/linear weight, forward order
        assert all(r["output_std"] == "" for r in layers)
        assert all(math.isfinite(float(r["grad_norm"])) and float(r["grad_norm"]) > 0 for r in layers)
        block_rows = [r for r in rows if int(r["step"]) == step and r["kind"] == "block"]
        assert [r["layer"] for r in block_rows] == blocks == [r["block"] for r in block_rows]


def test_layer_index_counts_the_main_path_from_the_input(trained):
    cfg, _, folder = trained
    layers = [r for r in read_rows(folder / "grad_norms.csv") if r["step"] == "0" and r["kind"] == "layer"]
    main = [r for r in layers if ".shortcut." not in r["layer"]]
    assert [int(r["layer_index"]) for r in main] == list(range(cfg.depth))  # 0 = stem conv ... 17 = fc
    assert main[0]["layer"] == "stem.0" and main[0]["block"] == "stem"
    assert main[-1]["layer"] == "fc" and main[-1]["block"] == "head"
    index = {r["layer"]: int(r["layer_index"]) for r in layers}
    shortcuts = [r for r in layers if ".shortcut." in r["layer"]]
    assert len(shortcuts) == 3  # ResNet18's three downsampling blocks
    for r in shortcuts:
        assert r["layer"].startswith(r["block"] + ".")
        assert int(r["layer_index"]) == index[r["block"] + ".conv1"]


def test_block_rows_sum_their_layers_in_quadrature(trained):
    _, _, folder = trained
    rows = read_rows(folder / "grad_norms.csv")
    for step in {r["step"] for r in rows}:
        at = [r for r in rows if r["step"] == step]
        for block in (r for r in at if r["kind"] == "block"):
            members = [r for r in at if r["kind"] == "layer" and r["block"] == block["block"]]
            assert members
            for col in ("grad_norm", "weight_norm"):
                expected = math.sqrt(sum(float(r[col]) ** 2 for r in members))
                assert abs(float(block[col]) - expected) <= 1e-5
            assert int(block["layer_index"]) == min(int(r["layer_index"]) for r in members)
            assert float(block["output_std"]) > 0


def test_step_zero_is_the_first_batch_gradient_before_any_update(trained):
    cfg, result, _ = trained
    # The first step of run_trial, redone by hand: same seed, same first batch.
    torch.set_num_threads(cfg.threads)
    splits = load_splits(cfg.dataset, None, cfg.train_size, cfg.dev_size, cfg.test_size, seed=cfg.data_seed)
    seed_everything(cfg.seed)
    model = build(cfg.family, cfg.depth).to(memory_format=torch.channels_last).train()
    order = torch.randperm(cfg.train_size, generator=torch.Generator().manual_seed(cfg.seed))
    idx = order[: cfg.batch_size]
    stds = []
    # A forward hook's return value replaces the output, so this one must return None.
    model.stages[0][0].register_forward_hook(lambda m, i, o: stds.append(o.std().item()) and None)
    x = splits.train.x.contiguous(memory_format=torch.channels_last)
    F.cross_entropy(model(x[idx]), splits.train.y[idx]).backward()
    init = {(r["layer"], r["kind"]): r for r in result.grad_norms if r["step"] == 0}
    stem, fc = model.stem[0], model.fc
    assert init[("stem.0", "layer")]["grad_norm"] == pytest.approx(stem.weight.grad.norm().item(), rel=1e-5)
    assert init[("fc", "layer")]["grad_norm"] == pytest.approx(fc.weight.grad.norm().item(), rel=1e-5)
    assert init[("stem.0", "layer")]["weight_norm"] == pytest.approx(stem.weight.norm().item(), rel=1e-6)
    assert init[("stages.0.0", "block")]["output_std"] == pytest.approx(stds[0], rel=1e-5)
    # Later records see weights that training has moved.
    last = {(r["layer"], r["kind"]): r for r in result.grad_norms if r["step"] == result.steps}
    assert last[("stem.0", "layer")]["weight_norm"] != init[("stem.0", "layer")]["weight_norm"]


@pytest.mark.slow  # a second or more of 2 cores
def test_telemetry_off_writes_no_file_and_trains_identically(trained, tmp_path):
    cfg, on, _ = trained
    off = run_trial(cfg.replace(telemetry=False))
    assert off.grad_norms == [] and on.grad_norms
    write_trial_folder(tmp_path, cfg.replace(telemetry=False), off, plot=False)
    assert not (tmp_path / "grad_norms.csv").exists()
    assert off.train_loss == on.train_loss
    assert (off.dev_loss, off.dev_acc) == (on.dev_loss, on.dev_acc)
    assert (off.best_step, off.test_acc, off.test_loss) == (on.best_step, on.test_acc, on.test_loss)


def test_hooks_exist_only_while_armed():
    model = build("cifar", 20)
    telemetry = GradTelemetry(model)
    telemetry.arm()
    assert sum(len(m._forward_hooks) for m in model.modules()) == 1 + len(model.blocks()) + 1
    telemetry.disarm()
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_diverged_trial_still_writes_its_records(tmp_path):
    cfg = TrialConfig(dataset="digits", family="cifar", depth=20, train_size=256, dev_size=64, test_size=64,
                      batch_size=32, epochs=2, eval_every=4, lr=1e6, threads=2)
    result = run_trial(cfg)
    assert result.status == "diverged"
    write_trial_folder(tmp_path, cfg, result, plot=False)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"
    rows = read_rows(tmp_path / "grad_norms.csv")
    last = max(int(r["step"]) for r in rows)
    assert last == result.steps and last > 0
    assert any(r["grad_norm"] == "nan" for r in rows if int(r["step"]) == last)
    assert all(math.isfinite(float(r["grad_norm"])) for r in rows if r["step"] == "0")


@pytest.mark.slow  # a second or more of 2 cores
def test_plain_deep_net_has_exploding_first_layer_gradients_at_init():
    # He et al. motivate residuals with vanishing signals, but with BatchNorm a deep plain net's
    # gradient at init *grows* toward the input (Yang et al. 2019; Balduzzi et al. 2017); measured
    # here it is 30-100x the residual net's on cifar-56, so the assertion is that it is larger.
    def init_grads(residual):
        cfg = TrialConfig(dataset="digits", family="cifar", depth=56, residual=residual, train_size=32,
                          dev_size=32, test_size=32, batch_size=32, epochs=1, eval_every=1, threads=2, seed=0)
        rows = [r for r in run_trial(cfg).grad_norms if r["step"] == 0 and r["kind"] == "layer"]
        return rows[0]["grad_norm"], rows[-1]["grad_norm"]

    res_first, res_last = init_grads(True)
    plain_first, plain_last = init_grads(False)
    assert plain_first > 10 * res_first
    assert plain_first / plain_last > 10 * (res_first / res_last)


def test_configs_from_before_telemetry_keep_their_trial_id():
    cfg = TrialConfig(lr=0.03, residual=False)
    # A config.yaml written before the field (and before the later hash-neutral model axes of issue 12).
    before = {k: v for k, v in cfg.to_dict().items() if k not in _HASH_NEUTRAL_DEFAULTS}
    old_id = hashlib.sha256(json.dumps(before, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert TrialConfig.from_dict(before).trial_id() == cfg.trial_id() == old_id
    assert cfg.replace(telemetry=False).trial_id() != old_id
