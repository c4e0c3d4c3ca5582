"""torchvision's resnet18/34 weights mapped onto ablate's ResNet, to show that both compute the same function."""
from __future__ import annotations

import re

import torch
from torch import nn

from ablate.errors import AblateError
from ablate.models.registry import ModelSpec
from ablate.models.resnet import build_model


_TV_LAYER = re.compile(r"^layer([1-4])\.(\d+)\.(.+)$")


def torchvision_state_dict_to_ablate(tv_state: dict) -> dict:
    """Rename torchvision resnet18/34 keys to this module's layout; values are shared, not copied."""
    out = {}
    for key, value in tv_state.items():
        if key.startswith("conv1."):
            new = "stem.0." + key[len("conv1."):]
        elif key.startswith("bn1."):
            new = "stem.1." + key[len("bn1."):]
        elif key.startswith("fc."):
            new = key
        else:
            match = _TV_LAYER.match(key)
            if match is None:
                raise AblateError(
                    f"unexpected key {key!r} in torchvision state dict; "
                    "pass the state_dict() of torchvision.models.resnet18 or resnet34"
                )
            layer, index, rest = match.groups()
            rest = re.sub(r"^downsample\.", "shortcut.", rest)
            new = f"stages.{int(layer) - 1}.{index}.{rest}"
        out[new] = value
    return out


def _randomize_batchnorm(model: nn.Module) -> None:
    # Fresh BN layers are all weight 1 / bias 0 / mean 0 / var 1, so a mapping that mixed up
    # two BN layers would still match; distinct random values make such a mix-up show.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)


def verify_torchvision(batch_size=4, image_size=64, seed=0, depth=18, copy_weights=True) -> float:
    """Max |output difference| between torchvision's resnet and ours after copying its weights.

    copy_weights=False keeps our own random init, which must give a large difference; it exists
    to show the comparison can fail.
    """
    import torchvision  # only this check needs it

    constructors = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34}
    if depth not in constructors:
        raise AblateError(f"no torchvision counterpart for depth {depth}; valid depths: 18, 34")
    if batch_size < 1 or image_size < 1:
        raise AblateError(
            f"batch_size and image_size must be >= 1, got {batch_size} and {image_size}"
        )
    torch.manual_seed(seed)
    reference = constructors[depth](weights=None)
    _randomize_batchnorm(reference)
    ours = build_model(ModelSpec("imagenet", depth, residual=True, shortcut="projection"), 3, 1000, stem_bias=False)
    if copy_weights:
        ours.load_state_dict(torchvision_state_dict_to_ablate(reference.state_dict()), strict=True)
    reference.eval()
    ours.eval()
    x = torch.randn(batch_size, 3, image_size, image_size,
                    generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return (reference(x) - ours(x)).abs().max().item()
