"""The one place a trial's network is built: the shipped ResNet of the model axes, or the user's factory that a
spec's `model` names (ablate.spec.model_ref), imported from the source file the trial config records.

The factory contract: `factory(**kwargs) -> torch.nn.Module`, a module mapping a batch of images
(N, in_channels, image_size, image_size) to logits (N, num_classes). ablate passes `in_channels`, `num_classes` and
`image_size` where the factory declares them (or takes **kwargs), and every axis of the trial (the spec's settings
that are not ablate's own: residual, depth, width, ...) by name; an axis the factory does not declare is refused
before anything runs (check_axes).

Importing a module runs its code, so every import of a user's file is announced first (one line on stderr, once per
process and file) and happens only for a reference the user's own spec or flag gave. The file must still hash to
what the trial config recorded: a source changed under a running study is refused, not silently trained.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

from ablate.errors import AblateError
_LOADED: dict[tuple[str, str, str], Callable[..., Any]] = {}  # (reference, file, sha256) -> the factory


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_factory(reference: str, file: str, sha256: str, *, announce: bool = True,
                 allow_changed: bool = False) -> Callable[..., Any]:
    """The factory `reference` names, imported from `file` (an import path `pkg.mod:build` with the folder above
    `pkg` put on sys.path; a file path as a module of its own). Refused in one line, before anything is imported,
    when the file is missing or no longer hashes to `sha256` (allow_changed: imported anyway)."""
    key = (reference, file, sha256)
    if key in _LOADED:
        return _LOADED[key]
    path = Path(file)
    if not path.is_file():
        raise AblateError(f"model factory {reference}: its source file {file} is missing (recorded SHA-256 {sha256})")
    now = _sha256(path)
    if now != sha256 and not allow_changed:
        raise AblateError(f"model factory {reference}: {file} has changed since it was recorded (recorded SHA-256 "
                          f"{sha256}, now {now}); restore that source (a change is a new study: its trials are other trials)")
    target, _, attr = reference.rpartition(":")
    if announce:
        print(f"importing model factory {reference} from {file}", file=sys.stderr, flush=True)
    try:
        if target.endswith(".py") or "/" in target or "\\" in target:
            name = f"ablate_user_model_{now[:16]}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            root = _package_root(path, target)
            if root not in sys.path:
                sys.path.insert(0, root)
            module = importlib.import_module(target)
            if Path(getattr(module, "__file__", "") or "").resolve() != path.resolve():
                raise AblateError(f"model factory {reference}: {target} imports from {module.__file__}, not from the "
                                  f"recorded {file}; another module of that name comes first on sys.path")
    except AblateError:
        raise
    except Exception as exc:  # the user's module failed to import: say where, in one line
        raise AblateError(f"model factory {reference}: importing {file} failed: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise AblateError(f"model factory {reference}: {file} has no function {attr}")
    _LOADED[key] = factory
    return factory


def _package_root(path: Path, module: str) -> str:
    """The folder above the package: ROOT for ROOT/pkg/mod.py and ROOT/pkg/mod/__init__.py."""
    depth = module.count(".") + (1 if path.name == "__init__.py" else 0)
    return str(path.resolve().parents[depth])


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


def call_factory(config: Any, in_channels: int, num_classes: int, *, announce: bool = False) -> Any:
    """The user's network for one trial config: its factory called with the inputs it declares and its axes."""
    import torch

    factory = load_factory(config.factory, config.factory_file, config.factory_sha256, announce=announce)
    names, open_ended = parameters(factory)
    given = {"in_channels": in_channels, "num_classes": num_classes, "image_size": config.image_size}
    kwargs = {k: v for k, v in given.items() if open_ended or k in names}
    model = factory(**kwargs, **dict(config.axes))
    if not isinstance(model, torch.nn.Module):
        raise AblateError(f"model factory {config.factory} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def build_trial_model(config: Any, in_channels: int = 1, num_classes: int = 10, *, announce: bool = False) -> Any:
    """A trial's network (a TrialConfig, or anything with its fields): the user's factory where the config names
    one, else the shipped ResNet of its model axes (ablate.models.resnet.build_model). `announce`: say so on stderr
    before this process first imports the factory's module (a worker's launch said it already)."""
    if getattr(config, "factory", ""):
        return call_factory(config, in_channels, num_classes, announce=announce)
    from ablate.models.resnet import build_model

    return build_model(config.model, in_channels, num_classes)
