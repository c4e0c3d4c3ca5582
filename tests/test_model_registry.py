"""The model registry (ablate.models.registry): every axis has its flags on train and summary, every name of every
table builds a model, the module tables in resnet.py match the registry's names, key() and describe() name the
architecture, the reports word a level as describe() does, and the activation axis is a real one."""
import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.overrides import TorchFunctionMode
from typer.main import get_command
from typer.testing import CliRunner

from ablate.cli.app import app
from ablate.errors import AblateError
from ablate.models import registry, resnet
from ablate.models.registry import MODEL_AXES, ModelSpec, axis_text, model_fields
from ablate.models.resnet import build_model
from ablate.spec.trial_config import TrialConfig

REFERENCE_ID = "87d109f0cea7"  # TrialConfig() since schema 1 (tests/test_axes_config.py)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- the registry, walked


@pytest.mark.parametrize("command", ["train", "summary"])
def test_every_axis_has_its_flag_on_train_and_summary(command):
    click_command = get_command(app).commands[command]
    options = {p.name: p for p in click_command.params}
    for f in model_fields():
        meta = f.metadata["axis"]
        assert f.name in options, f"{command} has no option for {f.name}"
        declared = [*options[f.name].opts, *options[f.name].secondary_opts]
        assert declared == meta.flags(f.name).replace("/", " ").split(), (f.name, declared)
        assert options[f.name].default is None  # a flag not given leaves the config (or ModelSpec's default) alone
        assert meta.help in (options[f.name].help or "") and "(default " in options[f.name].help
    # today's spellings still parse
    assert "--plain" in options["residual"].secondary_opts and "--zero-init-residual" in options["zero_init_residual"].opts


def test_module_tables_in_resnet_have_exactly_the_registrys_names():
    assert list(resnet.ACTIVATIONS) == list(registry.ACTIVATIONS)
    assert list(resnet.NORMS) == list(registry.NORMS)
    assert list(resnet.SHORTCUTS) == list(registry.SHORTCUTS)
    assert list(resnet.BLOCKS) == list(registry.BLOCKS)
    named = {f.name for f in model_fields() if f.metadata["axis"].names is not None}
    assert named == {"family", "shortcut", "block", "norm", "activation"}  # a new named axis: add its table above


def _specs_of_every_name():
    for f in model_fields():
        for name in (f.metadata["axis"].names or {}):
            if f.name == "family":
                for depth in registry.FAMILIES[name]:
                    yield ModelSpec(family=name, depth=depth)
            else:
                yield ModelSpec(**{f.name: name})


def test_every_name_of_every_table_builds_its_model():
    specs = list(_specs_of_every_name())
    assert len(specs) == 8 + 3 + 2 + 2 + 2
    for spec in specs:
        with torch.device("meta"):  # the layers only: no memory, no time
            model = build_model(spec, 3, 7)
        assert model.fc.out_features == 7 and model.stem[0].in_channels == 3
        if spec.block == "preact":
            assert all(isinstance(b, resnet.PreActBlock) for _, b in model.blocks())
        if spec.norm == "none":
            assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_build_model_takes_a_model_spec_and_a_trial_configs_model():
    cfg = TrialConfig(family="cifar", depth=20, block="preact", lr=0.1)
    assert cfg.model == ModelSpec("cifar", 20, block="preact") and isinstance(cfg.model, ModelSpec)
    assert type(cfg.model) is ModelSpec and hash(cfg.model) == hash(ModelSpec("cifar", 20, block="preact"))
    assert n_params(build_model(cfg.model)) == n_params(build_model(ModelSpec("cifar", 20, block="preact")))
    with pytest.raises(AblateError, match="takes a ModelSpec"):
        build_model("cifar")


def test_an_axis_at_its_default_keeps_every_trial_id():
    assert TrialConfig().trial_id() == REFERENCE_ID
    defaults = {f.name: f.default for f in model_fields()}
    assert TrialConfig(**defaults).trial_id() == REFERENCE_ID
    text = yaml.safe_load(TrialConfig().to_yaml())
    assert set(MODEL_AXES) <= set(text)  # model axes stay at the top level of config.yaml
    assert TrialConfig.from_dict({k: v for k, v in text.items() if k != "activation"}).trial_id() == REFERENCE_ID


# ---------------------------------------------------------------- key() and describe()


def test_key_is_short_and_tells_every_architecture_apart():
    assert ModelSpec().key() == "imagenet-18 residual-projection"
    changed = [ModelSpec(family="cifar", depth=20), ModelSpec(depth=34), ModelSpec(residual=False),
               ModelSpec(shortcut="identity"), ModelSpec(shortcut="projection-all"), ModelSpec(block="preact"),
               ModelSpec(residual_stages=[3, 4]), ModelSpec(norm="none"), ModelSpec(zero_init_residual=True),
               ModelSpec(activation="gelu")]
    keys = [m.key() for m in [ModelSpec(), *changed]]
    assert len(set(keys)) == len(keys)
    assert ModelSpec(residual_stages=[4, 3]).key() == "imagenet-18 residual-projection residual_stages=3,4"
    # A plain net has no shortcut: the same layers whatever the spec says of it, so the same key.
    plain = [ModelSpec(residual=False, shortcut=s) for s in registry.SHORTCUTS]
    assert len({m.key() for m in plain}) == 1
    assert len({tuple(build_model(m).state_dict()) for m in plain}) == 1


def test_describe_names_every_axis_in_words():
    assert ModelSpec().describe() == ("ResNet-18 (imagenet layout), residual, projection shortcuts, basic blocks, "
                                      "BatchNorm, ReLU")
    assert ModelSpec("cifar", 20, shortcut="identity", block="preact", residual_stages=[3], zero_init_residual=True,
                     activation="gelu").describe() == (
        "CIFAR-style ResNet-20 (cifar layout), residual in stage 3 only, identity shortcuts, pre-activation blocks, "
        "BatchNorm, zero-init residual branches, GELU")
    assert ModelSpec(residual=False, norm="none").describe() == ("ResNet-18 (imagenet layout), plain, basic blocks, "
                                                                 "no normalisation, ReLU")


def test_a_factor_level_in_a_report_is_worded_as_describe_words_it():
    from ablate.analysis.context import context_text, level_text

    for f in model_fields():
        for name in (f.metadata["axis"].names or {}):
            if f.name == "family":
                continue
            spec = ModelSpec(**{f.name: name})
            assert level_text(f.name, name) == axis_text(f.name, name) and level_text(f.name, name) in spec.describe()
    assert level_text("block", "preact") == "pre-activation blocks"  # was "preact blocks" here, "block preact" in arms
    assert level_text("residual", False) == "plain" and level_text("residual_stages", [1]) == "stage 1 only"
    assert level_text("lr", 0.01) == "lr 0.01"
    assert context_text({"activation": "gelu", "depth": 20}) == "with GELU, at depth 20"


# ---------------------------------------------------------------- the activation axis


class _Calls(TorchFunctionMode):
    """The names of the torch functions a forward pass calls (functional and module calls alike)."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("family,depth", [("imagenet", 10), ("cifar", 20)])
@pytest.mark.parametrize("block", ["basic", "preact"])
def test_a_gelu_model_holds_gelu_and_computes_no_relu_with_the_same_parameters(family, depth, block):
    gelu, relu = (ModelSpec(family, depth, block=block, activation=a, shortcut="identity") for a in ("gelu", "relu"))
    model = build_model(gelu)
    assert any(isinstance(m, nn.GELU) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    x = torch.randn(2, 1, 16, 16)
    with _Calls() as calls:
        model(x)
    assert "gelu" in calls.names and not {n for n in calls.names if "relu" in n}
    with _Calls() as calls:
        build_model(relu)(x)
    assert {n for n in calls.names if "relu" in n} and "gelu" not in calls.names  # the probe sees a ReLU when there is one
    assert n_params(model) == n_params(build_model(relu))
    # The lesion path (a block without its branch) uses the block's own activation too.
    with _Calls() as calls:
        for _, b in model.blocks():
            if b.shortcut is None and b.conv1.in_channels == b.conv2.out_channels:
                b.bypass(torch.randn(1, b.conv1.in_channels, 4, 4))
    assert not {n for n in calls.names if "relu" in n}


def test_a_gelu_model_trains_a_step_and_its_loss_differs_from_relus():
    x, y = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 10
    losses = {}
    for activation in ("relu", "gelu"):
        torch.manual_seed(0)
        model = build_model(ModelSpec("cifar", 20, activation=activation)).train()
        before = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss) and any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
        losses[activation] = loss.item()
    assert losses["gelu"] != pytest.approx(losses["relu"], abs=1e-4)  # same weights, another function


def test_activation_names_another_trial_and_is_checked():
    assert TrialConfig(activation="relu").trial_id() == REFERENCE_ID
    assert TrialConfig(activation="gelu").trial_id() != REFERENCE_ID
    with pytest.raises(AblateError, match="unknown activation 'tanh'; valid activations: relu, gelu") as info:
        TrialConfig.from_dict({"activation": "tanh"}, source="x.yaml")
    assert "\n" not in str(info.value)


def test_train_activation_gelu_trains_and_records_it(tmp_path):
    out, config = tmp_path / "run", tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(dict(dataset="digits", image_size=8, train_size=64, dev_size=32, test_size=32,
                                          batch_size=32, epochs=1, eval_every=2, threads=1)))
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--family", "cifar", "--activation", "gelu",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    cfg = TrialConfig.from_yaml_file(out / "config.yaml")
    assert cfg.activation == "gelu" and cfg.depth == 20 and cfg.trial_id() != cfg.replace(activation="relu").trial_id()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["trial_id"] == cfg.trial_id()
    bad = CliRunner().invoke(app, ["summary", "--activation", "swish"])
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and "unknown activation 'swish'" in lines[0]
    summary = CliRunner().invoke(app, ["summary", "--family", "cifar", "--activation", "gelu"])
    assert summary.exit_code == 0 and "GELU" in summary.output and "ReLU" not in summary.output
