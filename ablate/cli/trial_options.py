"""The options of `train` (every trial setting) and `summary` (the model axes), generated from TrialConfig's field
metadata (ablate.spec.trial_config.Setting, and for the model axes ablate.models.registry.Axis): one --flag per
field, its help, type and shown default from the field, so a new setting or axis gets its flag without touching
cli/.

`trial_options(names)` turns a command whose signature has a `settings` parameter into one that takes those fields'
options in its place (Typer reads the generated `__signature__`); the command receives them as the dict `settings`,
each None where its flag was not given, so a --config file is not overridden by flags that were not given.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Iterable, Optional

import typer

from ablate.models import DEFAULT_DEPTH, MODEL_AXES, ModelSpec
from ablate.spec import TrialConfig, setting_meta

PARAMETER = "settings"


def flag_fields(config: type = TrialConfig) -> list[dataclasses.Field]:
    """The fields of `config` that have a command-line flag: every trial setting but what the file records of itself."""
    return [f for f in dataclasses.fields(config) if getattr(setting_meta(f), "cli", True)]


TRIAL_SETTINGS = tuple(f.name for f in flag_fields())


def _kind(f: dataclasses.Field) -> type:
    """The flag's type: the default's, or text for what is given as text (residual_stages 3,4, milestones 0.5,0.75)."""
    if f.default is None or isinstance(f.default, tuple):
        return str
    return type(f.default)


def _default_text(f: dataclasses.Field) -> str:
    meta = setting_meta(f)
    if meta.default_text is not None:
        return meta.default_text
    return str(f.default).lower() if isinstance(f.default, bool) else str(f.default)


def flags(f: dataclasses.Field) -> list[str]:
    """The flag(s) of a field: its metadata's, else --name-with-dashes (--x/--no-x for a true/false setting)."""
    meta, dashed = setting_meta(f), f.name.replace("_", "-")
    return (meta.flag or (f"--{dashed}/--no-{dashed}" if _kind(f) is bool else f"--{dashed}")).split()


def option_parameters(names: Iterable[str], config: type = TrialConfig) -> list[inspect.Parameter]:
    """One keyword parameter per named field of `config`, its default a typer.Option built from the field's
    metadata."""
    by_name = {f.name: f for f in flag_fields(config)}
    params = []
    for name in names:
        f = by_name[name]
        option = typer.Option(None, *flags(f), help=f"{setting_meta(f).help} (default {_default_text(f)}).")
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[_kind(f)]))
    return params


def trial_options(names: Iterable[str] = TRIAL_SETTINGS, config: type = TrialConfig) -> Callable:
    """Decorate a command: its `settings` parameter replaced by the named fields' options (see the module's doc)."""
    names = tuple(names)

    def decorate(func: Callable) -> Callable:
        signature = inspect.signature(func, eval_str=True)
        if PARAMETER not in signature.parameters:
            raise TypeError(f"{func.__name__} has no {PARAMETER} parameter for the trial options")
        params = []
        for p in signature.parameters.values():
            if p.name == PARAMETER:
                params += option_parameters(names, config)
            else:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            settings = {name: kwargs.pop(name) for name in names}
            return func(**kwargs, **{PARAMETER: settings})

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


model_options = trial_options(MODEL_AXES)  # `summary`: the model axes alone


def given_settings(settings: dict[str, Any], base_family: str | None = None,
                   config: type = TrialConfig) -> dict[str, Any]:
    """The settings whose flags were given, as trial settings: text turned into values where the field's metadata says
    how (from_text), and a family given without a depth bringing its own default depth when it differs from
    `base_family` (the --config file's family, else ModelSpec's default)."""
    by_name = {f.name: f for f in dataclasses.fields(config)}
    given = {}
    for name, value in settings.items():
        if value is None:
            continue
        parse = getattr(setting_meta(by_name[name]), "from_text", None)
        given[name] = parse(value, flags(by_name[name])[0]) if parse is not None else value
    family = given.get("family")
    if "depth" not in given and family is not None and family != (base_family or ModelSpec.family):
        depth = DEFAULT_DEPTH.get(family)
        if depth is not None:
            given["depth"] = depth
    return given
