"""The residual-block protocol (ablate.Residual): a user's network marks its residual blocks, and the lesions, the
signal-propagation diagnostic and the per-layer gradient records work on it as on the shipped ResNets; a network
that marks none is told so in one line. Real small networks, real training on scikit-learn's digits."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import ablate
from ablate import Residual
from ablate.errors import AblateError
from ablate.models import NO_MARKED_BLOCKS, residual_blocks
from ablate.models.registry import ModelSpec
from ablate.models.resnet import build_model
from ablate.probes import measurements as probes
from ablate.probes.lesion import dropped, lesion_run, load_trial, marked_blocks, replacement_for
from ablate.train import evaluate
from ablate.run_folder.registry import append_registry
from ablate.spec import TrialConfig, file_sha256
from ablate.train.loop import run_trial
from ablate.train.telemetry import GradTelemetry
from ablate.train.trial_files import write_trial_folder

ROOT = Path(__file__).resolve().parents[1]


def test_a_residual_block_adds_its_skip_and_its_plain_twin_does_not():
    torch.manual_seed(0)
    branch, shortcut, x = nn.Linear(4, 3), nn.Linear(4, 3, bias=False), torch.randn(5, 4)
    assert torch.equal(Residual(branch, shortcut)(x), branch(x) + shortcut(x))
    assert torch.equal(Residual(branch, shortcut, residual=False)(x), branch(x))
    same = nn.Linear(4, 4)
    assert torch.equal(Residual(same)(x), same(x) + x)
    assert torch.equal(Residual(same, after=nn.ReLU())(x), torch.relu(same(x) + x))
    assert torch.equal(Residual(same, after=nn.ReLU()).bypass(x), torch.relu(x))
    assert torch.equal(Residual(branch, shortcut).bypass(x), shortcut(x))
    assert ablate.Residual is Residual  # the name the docs give
    with pytest.raises(TypeError, match="branch must be a torch.nn.Module"):
        Residual(lambda t: t)


def test_the_shipped_resnets_blocks_are_found_through_the_same_protocol():
    model = build_model(ModelSpec(family="cifar", depth=20))
    assert residual_blocks(model) == model.blocks()
    assert len(residual_blocks(model)) == 9


class Tokens(nn.Module):
    """A (batch, tokens, features) network with marked blocks, one that reshapes with a shortcut, one plain
    reshaping block without one; its classifier is registered first and called last."""

    def __init__(self, residual: bool = True) -> None:
        super().__init__()
        self.head = nn.Linear(6, 3)
        self.embed = nn.Linear(4, 8)
        self.blocks = nn.Sequential(*[Residual(nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8)), residual=residual)
                                      for _ in range(2)])
        self.narrow = Residual(nn.Linear(8, 6), nn.Linear(8, 6, bias=False), residual=residual)
        self.fixed = Residual(nn.Linear(6, 6), residual=residual)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = images.reshape(len(images), -1, 4)  # (N, 16 tokens, 4)
        return self.head(self.fixed(self.narrow(self.blocks(self.embed(tokens)))).mean(dim=1))


def test_telemetry_numbers_a_users_layers_in_forward_order_and_names_them():
    torch.manual_seed(0)
    model = Tokens()
    telemetry = GradTelemetry(model)
    # before any recorded pass: the registration order, the classifier first
    assert [name for name, _, _ in telemetry.layers][0] == "head"
    x = torch.randn(5, 1, 8, 8)
    telemetry.arm()  # the first recorded pass learns the order its modules are called in
    out = model(x)
    telemetry.disarm()
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())  # every hook removed
    layers = {name: (index, block) for name, index, block in telemetry.layers}
    assert layers == {"embed": (0, ""), "blocks.0.branch.1": (1, "blocks.0"), "blocks.1.branch.1": (2, "blocks.1"),
                      "narrow.shortcut": (3, "narrow"), "narrow.branch": (3, "narrow"), "fixed.branch": (4, "fixed"),
                      "head": (5, "")}
    out.sum().backward()
    telemetry.record((0,))
    rows = telemetry.rows()
    assert [r["layer"] for r in rows if r["kind"] == "layer"] == ["embed", "blocks.0.branch.1", "blocks.1.branch.1",
                                                                 "narrow.shortcut", "narrow.branch", "fixed.branch",
                                                                 "head"]
    # a paused trial's checkpoint keeps the order: a fresh telemetry that never saw a pass gives the same rows
    fresh = GradTelemetry(model)
    fresh.load_state(telemetry.state(), torch.device("cpu"))
    assert fresh.rows() == rows
    by_layer = {r["layer"]: r for r in rows if r["kind"] == "layer"}
    assert by_layer["head"]["grad_norm"] == pytest.approx(float(model.head.weight.grad.norm()))
    assert by_layer["blocks.0.branch.1"]["weight_norm"] == pytest.approx(float(model.blocks[0].branch[1].weight.detach().norm()))
    blocks = [r for r in rows if r["kind"] == "block"]
    assert [r["layer"] for r in blocks] == ["blocks.0", "blocks.1", "narrow", "fixed"]
    assert all(r["output_std"] > 0 for r in blocks)
    # a network that marks nothing still records its layers, and no block
    plain = GradTelemetry(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    assert [(n, i, b) for n, i, b in plain.layers] == [("1", 0, "")] and plain.watched == []


def test_signal_propagation_reads_each_marked_block_and_its_branch():
    torch.manual_seed(0)
    model, x = Tokens(), torch.randn(64, 1, 8, 8)
    rows = probes.signal_propagation(model, x)
    assert [r["block"] for r in rows] == ["blocks.0", "blocks.1", "narrow", "fixed"]
    tokens = model.embed(x.reshape(64, -1, 4))
    with torch.no_grad():
        branch = model.blocks[0].branch(tokens)
        out = model.blocks[0](tokens)
    # channels of a (batch, tokens, features) tensor are its features
    assert rows[0]["branch_variance"] == pytest.approx(float(branch.double().var(dim=(0, 1), unbiased=False).mean()))
    assert rows[0]["variance"] == pytest.approx(float(out.double().var(dim=(0, 1), unbiased=False).mean()))
    assert probes.signal_propagation(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), x) == []


def test_a_marked_block_is_dropped_to_its_skip_path_and_a_plain_reshaping_one_is_left_alone():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8)
    for residual in (True, False):
        model = Tokens(residual).eval()
        table = {name: (block, reshaping) for name, block, reshaping in marked_blocks(model, x)}
        assert {n: r for n, (_, r) in table.items()} == {"blocks.0": False, "blocks.1": False, "narrow": True,
                                                          "fixed": False}
        assert replacement_for(*table["narrow"])[0] == "shortcut"
        assert replacement_for(*table["fixed"])[0] == "identity"
        tokens = model.narrow(model.blocks(model.embed(x.reshape(4, -1, 4))))
        with dropped(*table["fixed"]) as kind:
            assert kind == "identity" and torch.equal(model.fixed(tokens), tokens)
        assert not torch.equal(model.fixed(tokens), tokens)  # undone on exit
    unmarked_shortcut = Residual(nn.Linear(8, 6), residual=False)
    assert replacement_for(unmarked_shortcut, True) is None
    with pytest.raises(AblateError, match="cannot be dropped"):
        with dropped(unmarked_shortcut, True):
            pass


# --- a user's network trained, saved and lesioned through the trial folders --------------------------------------
TRAIN = dict(dataset="digits", image_size=8, train_size=512, dev_size=64, test_size=128, batch_size=32, epochs=3,
             eval_every=8, lr=0.05, threads=1)


def _user_config(nets: Path, residual: bool, reference: str = "./nets.py:build") -> TrialConfig:
    return TrialConfig(**TRAIN, factory=reference, factory_file=str(nets), factory_sha256=file_sha256(nets),
                       axes={"residual": residual, "depth": 3, "width": 32})


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """A run folder of the residual MLP example (examples/residual_mlp/nets.py, marked with ablate.Residual) and of
    the same network without the marks, each trained with and without its skips, weights kept."""
    tmp = tmp_path_factory.mktemp("mlp")
    marked = tmp / "nets.py"
    shutil.copy(ROOT / "examples" / "residual_mlp" / "nets.py", marked)
    unmarked = tmp / "unmarked.py"
    unmarked.write_text(marked.read_text().replace(
        "return Residual(nn.Sequential(nn.Linear(width, width), nn.ReLU()), residual=residual)",
        "return nn.Sequential(nn.Linear(width, width), nn.ReLU())"))
    runs = {}
    for name, nets in (("marked", marked), ("unmarked", unmarked)):
        run = tmp / name
        for residual in (True, False):
            cfg = _user_config(nets, residual, f"./{nets.name}:build")
            result = run_trial(cfg, keep_best_state=True)
            assert result.status == "ok"
            write_trial_folder(run / "trials" / cfg.trial_id(), cfg, result, plot=False, weights=True)
            append_registry(run, {"trial_id": cfg.trial_id(), "stage": "confirm", "params": {}, "seed": cfg.seed,
                                  "arm": f"residual={str(residual).lower()}", "status": "ok",
                                  "test_acc": result.test_acc})
        runs[name] = run
    return runs


@pytest.mark.slow
def test_a_users_marked_network_is_lesioned_block_by_block(mlp_run):
    table = lesion_run(mlp_run["marked"])
    for residual, rows in table.groupby("residual"):
        blocks = rows[rows["block"] != "none"]
        assert list(blocks["block"]) == ["3", "4", "5"]  # the three Residual blocks of nn.Sequential, by name
        assert set(blocks["replacement"]) == {"identity"} and set(blocks["block_type"]) == {"same-shape"}
        assert (rows["test_acc"] == rows[rows["block"] == "none"]["lesioned_acc"].iloc[0]).all()
    # a dropped block scores what the same network with that block replaced by the identity scores
    row = table[(table["residual"] == True) & (table["block"] == "4")].iloc[0]  # noqa: E712
    trial = load_trial(mlp_run["marked"] / "trials" / row["trial_id"])
    trial.model[4] = nn.Identity()
    assert evaluate(trial.model, trial.splits.test.x, trial.splits.test.y, trial.memory_format)[0] == row["lesioned_acc"]
    with pytest.raises(AblateError, match="marks no residual blocks"):
        lesion_run(mlp_run["unmarked"])


@pytest.mark.slow
def test_a_users_network_records_its_layers_by_name_in_its_trial_folder(mlp_run):
    from ablate.run_folder import read_grad_norms

    for folder in (mlp_run["marked"] / "trials").iterdir():
        table = read_grad_norms(folder)
        first = table[(table["step"] == 0) & (table["kind"] == "layer")]
        assert list(first["layer"]) == ["1", "3.branch.0", "4.branch.0", "5.branch.0", "6"]
        assert list(first["layer_index"]) == [0, 1, 2, 3, 4]
        assert list(table[(table["step"] == 0) & (table["kind"] == "block")]["layer"]) == ["3", "4", "5"]


@pytest.mark.slow
def test_diagnostics_of_a_network_that_marks_no_block_say_why_in_one_line(mlp_run):
    from ablate.probes import diagnose_run

    trials = [{"trial_id": p.name, "arm": "a", "seed": 0} for p in sorted((mlp_run["unmarked"] / "trials").iterdir())]
    diag = diagnose_run(mlp_run["unmarked"], trials[:1])
    assert diag.signal.empty and diag.lesions_k.empty and not diag.shattered.empty and not diag.landscape.empty
    (note,) = diag.skipped.values()
    assert NO_MARKED_BLOCKS in note and "\n" not in note
    marked = [{"trial_id": p.name, "arm": "a", "seed": 0} for p in sorted((mlp_run["marked"] / "trials").iterdir())]
    diag = diagnose_run(mlp_run["marked"], marked[:1])
    assert list(diag.signal["block"]) == ["3", "4", "5"] and not diag.skipped
    assert set(diag.lesions_k["block_type"]) == {"none", "same-shape"}


def test_a_transformers_layers_follow_its_forward_pass_attention_projections_included():
    import importlib.util

    spec = importlib.util.spec_from_file_location("vit_nets", ROOT / "examples" / "vit" / "nets.py")
    nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nets)
    model = nets.build(in_channels=1, num_classes=10, image_size=8, depth=2, width=16, heads=2, patch=2)
    telemetry = GradTelemetry(model)
    telemetry.arm()
    model(torch.randn(4, 1, 8, 8))
    telemetry.disarm()
    names = [name for name, _, _ in sorted(telemetry.layers, key=lambda layer: layer[1])]
    block = ["branch.1.attn.in_proj_weight", "branch.1.attn.out_proj"]
    assert names == ["position", "embed", *(f"blocks.{i}.0.{n}" for n in block for i in [0]),
                     "blocks.0.1.branch.1", "blocks.0.1.branch.3", *(f"blocks.1.0.{n}" for n in block),
                     "blocks.1.1.branch.1", "blocks.1.1.branch.3", "head"]
    assert [name for name, _ in telemetry.watched] == ["blocks.0.0", "blocks.0.1", "blocks.1.0", "blocks.1.1"]


def test_a_users_network_fuses_as_the_resnets_do(tmp_path):
    from ablate.train.fused import fusable, run_fused

    nets = tmp_path / "nets.py"
    shutil.copy(ROOT / "examples" / "residual_mlp" / "nets.py", nets)
    members = [_user_config(nets, True).replace(seed=seed, epochs=1) for seed in (0, 1)]
    assert fusable(members) is None
    fused, alone = run_fused(members), [run_trial(c) for c in members]
    for f, s in zip(fused, alone):
        assert f.status == s.status == "ok" and f.steps == s.steps
        assert max(abs(a - b) for a, b in zip(f.train_loss[:3], s.train_loss[:3])) <= 1e-5
        assert [(r["layer"], r["layer_index"], r["kind"]) for r in f.grad_norms] == \
               [(r["layer"], r["layer_index"], r["kind"]) for r in s.grad_norms]
        assert max(abs(a["grad_norm"] - b["grad_norm"]) for a, b in zip(f.grad_norms, s.grad_norms)
                   if a["step"] == 0) <= 1e-4
    assert fused[0].train_loss[:3] != fused[1].train_loss[:3]  # two members, each its own seed


def test_the_top_hessian_eigenvalue_goes_through_attention():
    """The fused attention kernels of torch have no second derivative on the CPU; the Hessian-vector products run
    attention through the math kernel, and give the eigenvalue power iteration gives on an explicit Hessian."""
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(4, 2, batch_first=True)
    model = nn.Sequential(nn.Unflatten(1, (3, 4)), Residual(nn.Sequential(nn.LayerNorm(4), VitAttention(attention))),
                          nn.Flatten(), nn.Linear(12, 3))
    x, y = torch.randn(8, 12), torch.arange(8) % 3
    top, _ = probes.hessian_top(model, x, y, iterations=200, tolerance=1e-9)
    params = list(model.parameters())
    flat = torch.cat([p.detach().flatten() for p in params])

    def loss_of(vector):
        chunks, start = [], 0
        for p in params:
            chunks.append(vector[start:start + p.numel()].view_as(p))
            start += p.numel()
        names = [n for n, _ in model.named_parameters()]
        with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.MATH]):
            return torch.nn.functional.cross_entropy(torch.func.functional_call(model, dict(zip(names, chunks)), (x,)), y)

    model.eval()
    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat).double())
    assert top == pytest.approx(float(eigenvalues[eigenvalues.abs().argmax()]), rel=1e-3)


class VitAttention(nn.Module):
    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0]
