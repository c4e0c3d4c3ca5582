"""The one place a trial's network is built, through one mechanism: a factory called with the data's shape and the
trial's axes. The shipped ResNet family is one factory among others (ablate.models.resnet.build, called with the
model axes); a user's is the function a spec's `model` names (ablate.spec.user_ref), imported from the source file
the trial config records, and called with the trial's own axes.

The factory contract: `factory(**kwargs) -> torch.nn.Module`, a module mapping a batch of images
(N, in_channels, image_size, image_size) to logits (N, num_classes). ablate passes `in_channels`, `num_classes` and
`image_size` where the factory declares them (or takes **kwargs), and every axis of the trial (the spec's settings
that are not ablate's own: residual, depth, width, ...) by name; an axis the factory does not declare is refused
before anything runs (check_axes).

Importing a module runs its code, so every import of a user's file is announced first (one line on stderr, once per
process and file) and happens only for a reference the user's own spec or flag gave (ablate.user_code, which also
imports a user's data loader). The file must still hash to what the trial config recorded: a source changed under a
running study is refused, not silently trained.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from ablate.errors import AblateError
from ablate.user_code import load_callable


def load_factory(reference: str, file: str, sha256: str, *, announce: bool = True,
                 allow_changed: bool = False) -> Callable[..., Any]:
    """The factory `reference` names, imported from `file` (ablate.user_code.load_callable: announced, refused in one
    line when the file is missing or no longer hashes to `sha256`, unless allow_changed)."""
    return load_callable("model factory", reference, file, sha256, announce=announce, allow_changed=allow_changed)


def parameters(factory: Callable[..., Any]) -> tuple[list[str], bool]:
    """The keyword arguments a factory declares, and whether it takes **kwargs."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return [], True  # a callable without a signature: nothing can be checked ahead
    names = [p.name for p in signature.parameters.values()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())


def check_axes(reference: str, factory: Callable[..., Any], axes: list[str], what: str = "factor") -> None:
    """Refuse, in one line, an axis the factory does not accept (no such keyword argument and no **kwargs)."""
    names, open_ended = parameters(factory)
    if open_ended:
        return
    for axis in axes:
        if axis not in names:
            raise AblateError(f"{what} {axis} is not a parameter of model factory {reference}; its parameters: "
                              f"{', '.join(names) or '(none)'}")


def call_factory(factory: Callable[..., Any], reference: str, axes: dict[str, Any], in_channels: int,
                 num_classes: int, image_size: int) -> Any:
    """A network from a factory: called with the inputs it declares (in_channels, num_classes, image_size) and the
    axes, refused in one line unless it returns a torch.nn.Module."""
    import torch

    names, open_ended = parameters(factory)
    given = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
    kwargs = {k: v for k, v in given.items() if open_ended or k in names}
    model = factory(**kwargs, **axes)
    if not isinstance(model, torch.nn.Module):
        raise AblateError(f"model factory {reference} returned {type(model).__name__}, not a torch.nn.Module")
    return model


SHIPPED = "ablate.models.resnet:build"  # the shipped family's factory


def build_trial_model(config: Any, in_channels: int = 1, num_classes: int = 10, *, announce: bool = False) -> Any:
    """A trial's network (a TrialConfig, or anything with its fields): the factory the config names, called with its
    axes, or else the shipped family's (SHIPPED) with its model axes. `announce`: say so on stderr before this
    process first imports a user's module (a worker's launch said it already)."""
    if getattr(config, "factory", ""):
        factory = load_factory(config.factory, config.factory_file, config.factory_sha256, announce=announce)
        return call_factory(factory, config.factory, dict(config.axes), in_channels, num_classes, config.image_size)
    from dataclasses import asdict

    from ablate.models.resnet import build

    return call_factory(build, SHIPPED, asdict(config.model), in_channels, num_classes, config.image_size)
