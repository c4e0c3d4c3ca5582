"""Tests for ablate.models: blocks, families, torchvision equivalence and the layer summary."""
import pytest
import torch
from torch import nn

from ablate.errors import AblateError
from ablate.models.summary import format_summary, summarize
from ablate.models.registry import FAMILIES, SHORTCUTS
from ablate.models.resnet import BasicBlock, ResNet
from ablate.models.torchvision_check import torchvision_state_dict_to_ablate, verify_torchvision
from helpers.models import build, randomize_bn

REFERENCE_PARAMS = 11_175_434
REFERENCE_MACS = 35_561_472
# Projection shortcuts of the reference net: 1x1 conv (in*out) + BN (2*out) at stages 2, 3, 4.
PROJECTION_PARAMS = sum(i * o + 2 * o for i, o in ((64, 128), (128, 256), (256, 512)))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())




def residual_branch(block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    """F(x): the block's main path before the addition and the final ReLU."""
    return block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))


def eval_block(*args, **kwargs) -> BasicBlock:
    torch.manual_seed(0)
    block = BasicBlock(*args, **kwargs)
    randomize_bn(block)
    return block.eval()


# ---------------------------------------------------------------- blocks


@pytest.mark.parametrize("shortcut", SHORTCUTS)
@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize(
    "in_ch,out_ch,stride,expected",
    [(8, 8, 1, (2, 8, 12, 12)), (8, 16, 2, (2, 16, 6, 6))],
)
def test_block_output_shape(shortcut, residual, in_ch, out_ch, stride, expected):
    block = BasicBlock(in_ch, out_ch, stride, residual=residual, shortcut=shortcut)
    assert block(torch.randn(2, in_ch, 12, 12)).shape == expected


@pytest.mark.parametrize("shortcut", ["projection", "identity"])  # options A and B; C projects every block
def test_unchanged_shape_uses_plain_identity_skip(shortcut):
    block = eval_block(8, 8, 1, shortcut=shortcut)
    assert block.shortcut is None
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        expected = torch.relu(residual_branch(block, x) + x)
        assert torch.allclose(block(x), expected, atol=1e-6)


def test_identity_shortcut_is_parameter_free_and_pads_with_zeros():
    block = eval_block(4, 8, 2, shortcut="identity")
    assert block.shortcut is not None
    assert n_params(block.shortcut) == 0
    assert n_params(block) == n_params(BasicBlock(4, 8, 2, residual=False))

    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        skip = block.shortcut(x)
        assert skip.shape == (2, 8, 4, 4)
        assert torch.equal(skip[:, :4], x[:, :, ::2, ::2])
        assert torch.count_nonzero(skip[:, 4:]) == 0

        f = residual_branch(block, x)
        out = block(x)
    assert torch.allclose(out[:, :4], torch.relu(f[:, :4] + x[:, :, ::2, ::2]), atol=1e-6)
    # Padded channels carry no skip signal: the output there is ReLU(F(x)) alone.
    assert torch.allclose(out[:, 4:], torch.relu(f[:, 4:]), atol=1e-6)
    assert not torch.allclose(out[:, :4], torch.relu(f[:, :4]), atol=1e-3)


def test_identity_shortcut_cannot_shrink_channels():
    with pytest.raises(AblateError, match="projection"):
        BasicBlock(16, 8, 1, shortcut="identity")


def test_projection_shortcut_is_1x1_conv_and_bn():
    block = eval_block(8, 16, 2, shortcut="projection")
    conv, bn = block.shortcut
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
    assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and conv.bias is None
    assert n_params(block.shortcut) == 8 * 16 + 2 * 16
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        expected = torch.relu(residual_branch(block, x) + bn(conv(x)))
        assert torch.allclose(block(x), expected, atol=1e-6)


@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_plain_block_has_no_shortcut(shortcut):
    plain = eval_block(8, 16, 2, residual=False, shortcut=shortcut)
    assert plain.shortcut is None
    assert not any("shortcut" in name for name, _ in plain.named_modules())
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(plain(x), torch.relu(residual_branch(plain, x)), atol=1e-6)
    if shortcut == "projection":
        assert n_params(plain) < n_params(BasicBlock(8, 16, 2, shortcut=shortcut))


def test_block_rejects_unknown_shortcut():
    with pytest.raises(AblateError, match="projection, identity"):
        BasicBlock(8, 8, shortcut="dense")


# ---------------------------------------------------------------- families


def test_residual_toggle_changes_output_with_same_weights():
    torch.manual_seed(0)
    residual = build("cifar", 20, residual=True, shortcut="identity")
    plain = build("cifar", 20, residual=False, shortcut="identity")
    randomize_bn(residual)
    # Identity shortcuts carry no parameters, so the two nets have exactly the same keys.
    plain.load_state_dict(residual.state_dict(), strict=True)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        a, b = residual.eval()(x), plain.eval()(x)
    assert (a - b).abs().max() > 1e-3


def test_plain_reference_misses_only_shortcut_keys():
    residual = build()
    plain = build(residual=False)
    result = plain.load_state_dict(residual.state_dict(), strict=False)
    assert result.missing_keys == []
    assert result.unexpected_keys and all(".shortcut." in k for k in result.unexpected_keys)


def main_path_weighted_layers(model: ResNet) -> int:
    return sum(
        isinstance(m, (nn.Conv2d, nn.Linear))
        for name, m in model.named_modules()
        if ".shortcut" not in name
    )


@pytest.mark.parametrize(
    "family,depth", [(f, d) for f, depths in FAMILIES.items() for d in depths]
)
def test_depth_counts_weighted_layers(family, depth):
    model = build(family, depth)
    assert main_path_weighted_layers(model) == depth
    blocks = model.blocks()
    assert len(blocks) == (depth - 2) // 2
    assert blocks[0][0] == "stages.0.0" and blocks[0][1] is model.stages[0][0]
    assert all(isinstance(b, BasicBlock) for _, b in blocks)


def test_family_layouts():
    net = build("imagenet", 34)
    assert [len(s) for s in net.stages] == [3, 4, 6, 3]
    assert isinstance(net.stem[3], nn.MaxPool2d) and net.stem[0].kernel_size == (7, 7)
    assert net.fc.in_features == 512
    cifar = build("cifar", 56)
    assert [len(s) for s in cifar.stages] == [9, 9, 9]
    assert [s[0].conv1.out_channels for s in cifar.stages] == [16, 32, 64]
    assert len(cifar.stem) == 3 and cifar.stem[0].bias is None
    assert cifar.fc.in_features == 64


def test_cifar110_forward():
    model = build("cifar", 110, in_channels=1, num_classes=10)
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_imagenet_forward_on_mnist_sized_input():
    out = build("imagenet", 10, num_classes=7)(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 7)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"family": "vgg"}, "imagenet, cifar"),
        ({"family": "imagenet", "depth": 19}, "10, 18, 34"),
        ({"family": "cifar", "depth": 18}, "20, 32, 44, 56, 110"),
        ({"shortcut": "dense"}, "projection, identity"),
        ({"in_channels": 0}, "in_channels"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_build_model_rejects_bad_input(kwargs, needle):
    with pytest.raises(AblateError, match=needle) as info:
        build(**kwargs)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- reference counts and summary


def test_reference_parameter_count():
    assert n_params(build()) == REFERENCE_PARAMS
    # Turning off only the stem bias removes exactly its 64 parameters.
    assert n_params(build(stem_bias=False)) == REFERENCE_PARAMS - 64


def test_plain_and_identity_reference_drop_exactly_the_projections():
    assert PROJECTION_PARAMS == 173_824
    assert n_params(build(residual=False)) == REFERENCE_PARAMS - PROJECTION_PARAMS
    assert n_params(build(shortcut="identity")) == REFERENCE_PARAMS - PROJECTION_PARAMS


def test_reference_summary_totals_and_rows():
    model = build().train()
    summary = summarize(model, in_channels=1, input_size=32)
    assert model.training  # summarize must not leave the model switched to eval
    assert summary.total_params == REFERENCE_PARAMS
    assert abs(summary.total_macs - REFERENCE_MACS) / REFERENCE_MACS < 0.01
    # Leaf rows account for every parameter and every counted MAC.
    assert sum(r.params for r in summary.rows) == summary.total_params
    assert sum(r.macs for r in summary.rows) == summary.total_macs

    rows = {r.name: r for r in summary.rows}
    assert rows["stem.0"].output_shape == (1, 64, 16, 16)
    assert rows["stem.0"].macs == 64 * 1 * 7 * 7 * 16 * 16
    assert rows["stem.0"].params == 64 * 49 + 64
    assert rows["stages.1.0.shortcut.0"].kind == "Conv2d"
    assert rows["stages.1.0.shortcut.0"].macs == 128 * 64 * 4 * 4
    assert rows["stages.3.1.conv2"].output_shape == (1, 512, 1, 1)
    assert rows["pool"].params == 0
    assert rows["fc"].output_shape == (1, 10) and rows["fc"].macs == 512 * 10
    assert list(rows)[0] == "stem.0" and list(rows)[-1] == "fc"


def test_format_summary_lines():
    summary = summarize(build(), in_channels=1, input_size=32)
    text = format_summary(summary)
    lines = text.splitlines()
    assert lines[0].split() == ["Layer", "Type", "Output", "shape", "Params", "MACs"]
    assert any(line.startswith("stages.1.0.shortcut.0") for line in lines)
    assert lines[-2] == "Total params: 11,175,434"
    macs = summary.total_macs
    assert lines[-1] == f"Total MACs: {macs:,} ({macs / 1e6:.2f} M)"
    assert lines[-1].startswith("Total MACs: 35,")


def test_summary_of_identity_model_shows_parameter_free_shortcut():
    summary = summarize(build("cifar", 20, shortcut="identity"), input_size=28)
    shortcut_rows = [r for r in summary.rows if r.name.endswith(".shortcut")]
    assert [r.name for r in shortcut_rows] == ["stages.1.0.shortcut", "stages.2.0.shortcut"]
    assert all(r.params == 0 and r.kind == "IdentityShortcut" for r in shortcut_rows)
    assert shortcut_rows[0].output_shape == (1, 32, 14, 14)


@pytest.mark.parametrize(
    "kwargs,needle", [({"in_channels": 3}, "expects 1 input channels"), ({"input_size": 0}, "input_size")]
)
def test_summarize_rejects_bad_input(kwargs, needle):
    with pytest.raises(AblateError, match=needle):
        summarize(build(), **kwargs)


# ---------------------------------------------------------------- torchvision equivalence


@pytest.mark.parametrize("depth", [18, 34])
def test_torchvision_equivalence(depth):
    diff = verify_torchvision(batch_size=2, image_size=64, seed=0, depth=depth)
    assert diff <= 1e-5


def test_torchvision_comparison_can_fail():
    # Same comparison, but our model keeps its own random weights: the outputs must disagree.
    assert verify_torchvision(batch_size=2, image_size=64, seed=0, copy_weights=False) > 1e-2


def test_torchvision_mapping_covers_every_key():
    import torchvision

    tv = torchvision.models.resnet18(weights=None)
    mapped = torchvision_state_dict_to_ablate(tv.state_dict())
    ours = build("imagenet", 18, in_channels=3, num_classes=1000, stem_bias=False)
    assert set(mapped) == set(ours.state_dict())
    assert "stages.1.0.shortcut.1.running_var" in mapped
    assert torch.equal(mapped["stages.1.0.shortcut.0.weight"], tv.layer2[0].downsample[0].weight)


def test_torchvision_mapping_rejects_foreign_keys():
    with pytest.raises(AblateError, match="resnet18 or resnet34"):
        torchvision_state_dict_to_ablate({"features.0.weight": torch.zeros(1)})


def test_verify_torchvision_rejects_unsupported_depth():
    with pytest.raises(AblateError, match="18, 34"):
        verify_torchvision(depth=10)
