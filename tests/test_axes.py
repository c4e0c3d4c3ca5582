"""The model axes of issue 12 (ablate.models): option-C shortcuts, pre-activation blocks, residual
connections in chosen stages, no BatchNorm, zero-initialised residual branches. Parameter counts are
worked out by hand from the layer shapes; outputs are checked against the formulas they implement."""
import pytest
import torch
from torch import nn

from ablate.errors import AblateError
from ablate.probes.lesion import dropped
from ablate.models.summary import summarize
from ablate.models.resnet import BasicBlock, IdentityShortcut, PreActBlock
from helpers.models import build, randomize_bn

REFERENCE_PARAMS = 11_175_434  # ResNet18, projection shortcuts, 1 input channel, 10 classes (tests/test_models.py)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def bn(c):  # a BatchNorm's parameters: scale and shift per channel
    return 2 * c


def conv3(i, o):
    return 9 * i * o


def main_path_layers(model) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for name, m in model.named_modules() if ".shortcut" not in name)


# ---------------------------------------------------------------- parameter counts by hand


def test_projection_all_adds_a_1x1_conv_and_bn_to_every_same_shape_block():
    # Option B already projects the three downsampling blocks; option C adds one 1x1 conv + BN to the
    # five blocks whose shape does not change: two in stage 1 (64), one in each of stages 2-4.
    added = 2 * (64 * 64 + bn(64)) + (128 * 128 + bn(128)) + (256 * 256 + bn(256)) + (512 * 512 + bn(512))
    assert added == 354_304
    model = build(shortcut="projection-all")
    assert n_params(model) == REFERENCE_PARAMS + added == 11_529_738
    assert all(isinstance(b.shortcut, nn.Sequential) for _, b in model.blocks())
    assert n_params(build(shortcut="projection-all", residual=False)) == n_params(build(residual=False))


def test_no_batchnorm_removes_exactly_the_batchnorm_parameters():
    stem = bn(64)
    blocks = 2 * 2 * (bn(64) + bn(128) + bn(256) + bn(512))  # two BNs in each of the two blocks per stage
    shortcuts = bn(128) + bn(256) + bn(512)  # the BN of each projection
    assert stem + blocks + shortcuts == 9_600
    model = build(norm="none")
    assert n_params(model) == REFERENCE_PARAMS - 9_600 == 11_165_834
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_preact_resnet18_counted_layer_by_layer():
    def block(i, o, project):
        return bn(i) + conv3(i, o) + bn(o) + conv3(o, o) + (i * o if project else 0)  # bare 1x1 conv projection

    stem = 1 * 64 * 49 + 64  # 7x7 conv with bias, no BN or ReLU: each block pre-activates its own input
    stages = (2 * block(64, 64, False) + block(64, 128, True) + block(128, 128, False) + block(128, 256, True)
              + block(256, 256, False) + block(256, 512, True) + block(512, 512, False))
    final = bn(512)  # the one BN (+ ReLU) after the last block
    fc = 512 * 10 + 10
    assert stem + stages + final + fc == 11_173_642
    model = build(block="preact")
    assert n_params(model) == 11_173_642
    # Against the basic ResNet18: the stem BN (-128) and the projections' BNs (-1792) go, the final BN (+1024)
    # comes, and the first block of stages 2-4 normalises its narrower input (-128 -256 -512).
    assert REFERENCE_PARAMS - 128 - 1792 + 1024 - (128 + 256 + 512) == 11_173_642


def test_cifar20_counts_basic_and_preact():
    def basic(i, o):
        return conv3(i, o) + bn(o) + conv3(o, o) + bn(o)

    stem = 1 * 16 * 9 + bn(16)
    stages = 3 * basic(16, 16) + basic(16, 32) + 2 * basic(32, 32) + basic(32, 64) + 2 * basic(64, 64)
    fc = 64 * 10 + 10
    assert stem + stages + fc == 269_434
    assert n_params(build("cifar", 20, shortcut="identity")) == 269_434
    # Pre-activation: stem BN -32, narrower first BN in stages 2 and 3 (-32, -64), final BN +128: the same total.
    assert n_params(build("cifar", 20, shortcut="identity", block="preact")) == 269_434 - 32 - 32 - 64 + 128


@pytest.mark.parametrize("stages,removed", [((1,), 3), ((2,), 2), ((3, 4), 1), ((2, 3, 4), 0)])
def test_residual_stages_keep_projections_only_in_their_stages(stages, removed):
    projections = {2: 64 * 128 + bn(128), 3: 128 * 256 + bn(256), 4: 256 * 512 + bn(512)}
    kept = sum(p for s, p in projections.items() if s in stages)
    model = build(residual_stages=list(stages))
    assert n_params(model) == REFERENCE_PARAMS - sum(projections.values()) + kept
    assert sum(1 for s in projections if s not in stages) == removed
    for name, block in model.blocks():
        assert block.residual == (int(name.split(".")[1]) + 1 in stages)
        assert (block.shortcut is None) == (not block.residual or name.split(".")[2] != "0" or name.startswith("stages.0"))


def test_every_variant_keeps_depth_weighted_layers_on_its_main_path():
    for kwargs in ({"block": "preact"}, {"shortcut": "projection-all"}, {"norm": "none"}, {"residual_stages": [2]},
                   {"block": "preact", "shortcut": "projection-all", "norm": "none"}):
        assert main_path_layers(build("imagenet", 18, **kwargs)) == 18
        assert main_path_layers(build("cifar", 32, **{**kwargs, "residual_stages": None})) == 32


def test_zero_init_residual_zeroes_the_last_bn_scale_of_residual_branches_only():
    model = build(zero_init_residual=True, residual_stages=[3, 4])
    for name, block in model.blocks():
        scale = block.bn2.weight
        assert torch.count_nonzero(scale) == (0 if block.residual else scale.numel()), name
    assert n_params(model) == n_params(build(residual_stages=[3, 4]))


# ---------------------------------------------------------------- what the blocks compute


def test_preact_block_formula_with_projection_reading_the_preactivated_input():
    torch.manual_seed(0)
    block = PreActBlock(8, 16, 2, shortcut="projection")
    randomize_bn(block)
    block.eval()
    conv, = block.shortcut  # a bare 1x1 conv, no BN
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        pre = torch.relu(block.bn1(x))
        branch = block.conv2(torch.relu(block.bn2(block.conv1(pre))))
        assert torch.allclose(block(x), branch + conv(pre), atol=1e-6)  # no ReLU after the addition


def test_preact_identity_path_is_clean():
    torch.manual_seed(0)
    same = PreActBlock(8, 8, 1, shortcut="identity")
    down = PreActBlock(8, 16, 2, shortcut="identity")
    for block in (same, down):
        randomize_bn(block)
        block.eval()
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        f = same.conv2(torch.relu(same.bn2(same.conv1(torch.relu(same.bn1(x))))))
        assert torch.allclose(same(x), x + f, atol=1e-6)  # negative inputs pass: nothing rectifies the skip
        fd = down.conv2(torch.relu(down.bn2(down.conv1(torch.relu(down.bn1(x))))))
        assert torch.allclose(down(x), fd + IdentityShortcut(8, 16, 2)(x), atol=1e-6)


def test_preact_network_layout():
    cifar = build("cifar", 20, block="preact")
    assert len(cifar.stem) == 1 and isinstance(cifar.stem[0], nn.Conv2d)
    assert isinstance(cifar.final[0], nn.BatchNorm2d) and isinstance(cifar.final[1], nn.ReLU)
    assert all(isinstance(b, PreActBlock) for _, b in cifar.blocks())
    imagenet = build("imagenet", 18, block="preact")
    assert [type(m) for m in imagenet.stem] == [nn.Conv2d, nn.MaxPool2d]
    assert build().final is None  # the default model is untouched
    x = torch.randn(3, 1, 16, 16)
    assert cifar(x).shape == imagenet(x).shape == (3, 10)


def test_plain_preact_block_is_its_branch_alone():
    torch.manual_seed(0)
    block = PreActBlock(8, 16, 2, residual=False, shortcut="projection")
    assert block.shortcut is None
    x = torch.randn(2, 8, 8, 8)
    block.eval()
    with torch.no_grad():
        assert torch.allclose(block(x), block.conv2(torch.relu(block.bn2(block.conv1(torch.relu(block.bn1(x)))))))


def test_without_batchnorm_each_image_is_computed_alone_even_in_train_mode():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 16, 16)
    for block in ("basic", "preact"):
        model = build("cifar", 20, norm="none", block=block).train()
        with torch.no_grad():
            assert torch.allclose(model(x)[:1], model(x[:1]), atol=1e-5)
    with_bn = build("cifar", 20).train()
    with torch.no_grad():
        assert not torch.allclose(with_bn(x)[:1], with_bn(x[:1]), atol=1e-3)  # the comparison can fail


@pytest.mark.parametrize("block,shortcut", [("basic", "identity"), ("preact", "identity"), ("basic", "projection")])
def test_zero_init_residual_makes_each_block_its_skip_path(block, shortcut):
    torch.manual_seed(0)
    model = build("cifar", 20, shortcut=shortcut, block=block, zero_init_residual=True).train()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        out = model(x)
        with torch.no_grad(), _all_dropped(model):
            bypassed = model(x)
    assert torch.allclose(out, bypassed, atol=1e-5)
    fresh = build("cifar", 20, shortcut=shortcut, block=block).train()
    with torch.no_grad(), _all_dropped(fresh):
        assert not torch.allclose(fresh(x), bypassed, atol=1e-3)  # another init gives another output


class _all_dropped:
    def __init__(self, model):
        import contextlib
        self.stack, self.model = contextlib.ExitStack(), model

    def __enter__(self):
        for _, b in self.model.blocks():
            self.stack.enter_context(dropped(b))

    def __exit__(self, *exc):
        self.stack.close()


@pytest.mark.parametrize("kwargs", [{"block": "preact", "shortcut": "projection"},
                                    {"block": "basic", "shortcut": "projection-all"},
                                    {"block": "preact", "shortcut": "projection-all"}])
def test_a_dropped_block_keeps_exactly_its_skip_path(kwargs):
    torch.manual_seed(0)
    model = build("cifar", 20, **kwargs)
    randomize_bn(model)
    model.eval()
    x = torch.randn(2, 16, 8, 8)
    for name, block in model.blocks():
        if block.conv1.in_channels != 16:
            continue
        with torch.no_grad(), dropped(block) as kind:
            out = block(x)
        if kwargs["shortcut"] == "projection-all":
            assert kind == "projection"
        pre = torch.relu(block.bn1(x)) if isinstance(block, PreActBlock) else None
        s = block.shortcut
        with torch.no_grad():
            expected = (x if s is None else s(pre)) if pre is not None else torch.relu(x if s is None else s(x))
        assert torch.equal(out, expected), name


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("kwargs,needle", [
    ({"block": "bottleneck"}, "valid blocks: basic, preact"),
    ({"norm": "layer"}, "valid norms: batch, none"),
    ({"residual_stages": [5]}, "from 1 to 4"),
    ({"family": "cifar", "depth": 20, "residual_stages": [4]}, "from 1 to 3"),
    ({"residual_stages": [2, 2]}, "twice"),
    ({"residual_stages": []}, "residual: false"),
    ({"residual_stages": [1, 2, 3, 4]}, "leave it out"),
    ({"residual_stages": [1], "residual": False}, "needs residual: true"),
    ({"residual_stages": "1"}, "list of stage numbers"),
    ({"zero_init_residual": True, "norm": "none"}, "needs norm: batch"),
    ({"zero_init_residual": True, "residual": False}, "plain network"),
    ({"shortcut": "dense"}, "projection, identity, projection-all"),
])
def test_contradictory_axes_are_refused(kwargs, needle):
    with pytest.raises(AblateError, match=needle) as info:
        build(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_summary_counts_the_new_variants():
    for kwargs in ({"block": "preact"}, {"shortcut": "projection-all"}, {"norm": "none"}):
        model = build(**kwargs)
        s = summarize(model, input_size=32)
        assert s.total_params == n_params(model) == sum(r.params for r in s.rows)
    rows = {r.name: r for r in summarize(build(shortcut="projection-all"), input_size=32).rows}
    assert rows["stages.0.0.shortcut.0"].macs == 64 * 64 * 8 * 8  # a 1x1 conv at 8x8 after the stem's /4


def test_basic_block_still_refuses_to_shrink_with_identity():
    with pytest.raises(AblateError, match="projection"):
        BasicBlock(16, 8, 1, shortcut="identity")
