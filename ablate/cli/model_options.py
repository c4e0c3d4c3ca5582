"""The model options of `train` and `summary`, generated from the model registry: one --flag per ModelSpec axis,
built from the field's metadata (help, flag form, default), so a new axis gets its flags without touching cli/.

`model_options` turns a command whose signature has a `model_axes` parameter into one that takes the axes' options
in its place (Typer reads the generated `__signature__`); the command receives them as the dict `model_axes`, each
None where its flag was not given, so a --config file is not overridden by flags that were not given.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional

import typer

from ablate.models.registry import DEFAULT_DEPTH, ModelSpec, axis_meta, model_fields

PARAMETER = "model_axes"


def _default_text(name: str, default: Any) -> str:
    meta = axis_meta(name)
    if meta.default_text is not None:
        return meta.default_text
    return str(default).lower() if isinstance(default, bool) else str(default)


def axis_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per model axis, its default a typer.Option built from the axis's metadata."""
    params = []
    for f in model_fields():
        meta = f.metadata["axis"]
        kind = type(f.default) if f.default is not None else str  # residual_stages is given as text, e.g. 3,4
        option = typer.Option(None, *meta.flags(f.name).split(), help=f"{meta.help} (default "
                              f"{_default_text(f.name, f.default)}).")
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[kind]))
    return params


def model_options(func: Callable) -> Callable:
    """The command with its `model_axes` parameter replaced by the registry's options (see the module's doc)."""
    signature = inspect.signature(func, eval_str=True)
    if PARAMETER not in signature.parameters:
        raise TypeError(f"{func.__name__} has no {PARAMETER} parameter for the model options")
    names = [f.name for f in model_fields()]
    params = []
    for p in signature.parameters.values():
        if p.name == PARAMETER:
            params += axis_parameters()
        else:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        axes = {name: kwargs.pop(name) for name in names}
        return func(**kwargs, **{PARAMETER: axes})

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def axis_settings(axes: dict[str, Any], base_family: str | None = None) -> dict[str, Any]:
    """The axes that were given, as trial settings; a family given without a depth brings its own default depth
    when it differs from `base_family` (the --config file's family, else ModelSpec's default)."""
    given = {k: v for k, v in axes.items() if v is not None}
    family = given.get("family")
    if "depth" not in given and family is not None and family != (base_family or ModelSpec.family):
        depth = DEFAULT_DEPTH.get(family)
        if depth is not None:
            given["depth"] = depth
    return given
