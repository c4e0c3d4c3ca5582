"""Reading spec text: YAML files, and the checks every part of a spec shares (known keys, known trial
settings, whole numbers, finite numbers). Every problem raises AblateError naming the spec (`source`) and what
to write instead.
"""
from __future__ import annotations

import math
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from ablate.errors import AblateError
from ablate.spec.limits import MAX_SPEC_BYTES, MAX_YAML_DEPTH, MAX_YAML_VALUES
from ablate.models import FACTORY_INPUTS
from ablate.spec.trial_config import DATA_FIELDS, FACTORY_FIELDS, TrialConfig

# what a spec may set by name (the factory's fields come from its `model`)
CONFIG_FIELDS = {f.name for f in fields(TrialConfig)} - set(FACTORY_FIELDS) - set(DATA_FIELDS)


def read_yaml(path: Path) -> Any:
    try:
        text = read_text(path)
    except OSError as exc:
        raise AblateError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise AblateError(f"{path} is not UTF-8 text") from None
    try:
        return load_yaml(text, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise AblateError(f"malformed YAML in {path}{where}: {getattr(exc, 'problem', None) or exc}") from None


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last one silently)."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden by the keys beside it
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (str, int, float, bool, type(None))):
            if key in seen:
                raise yaml.constructor.ConstructorError("while reading a mapping", node.start_mark,
                                                        f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
# PyYAML follows YAML 1.1, which reads 1e-3 (an exponent without a decimal point) as text; YAML 1.2 and JSON read it
# as the number it is, and so does ablate (`lr: 1e-3`). Quoted, "1e-3" stays text, and a setting refuses it.
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                    list("-+0123456789"))


def read_text(path: str | Path) -> str:
    """A spec or config file's text; a file over MAX_SPEC_BYTES is refused after reading one byte more."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_SPEC_BYTES + 1)
    need(len(data) <= MAX_SPEC_BYTES, str(path), f"larger than {MAX_SPEC_BYTES:,} bytes; a spec or config is a few "
         "kilobytes")
    return data.decode("utf-8")


def load_yaml(text: str, source: str) -> Any:
    """A spec or config document: no repeated key, at most MAX_YAML_VALUES values with
    every alias expanded, nested at most MAX_YAML_DEPTH deep. Malformed YAML raises yaml.YAMLError (the caller
    names the file and line); the bounds raise AblateError."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506  a SafeLoader
    except RecursionError:
        raise AblateError(f"{source}: nested more than {MAX_YAML_DEPTH} levels deep") from None
    budget = [MAX_YAML_VALUES]

    def walk(value: Any, depth: int) -> None:
        budget[0] -= 1
        need(budget[0] >= 0, source, f"more than {MAX_YAML_VALUES:,} values (counting each use of an alias); a spec "
             "or config holds a few hundred")
        need(depth <= MAX_YAML_DEPTH, source, f"nested more than {MAX_YAML_DEPTH} levels deep")
        if isinstance(value, dict):
            for k, v in value.items():
                walk(k, depth + 1)
                walk(v, depth + 1)
        elif isinstance(value, list):
            for v in value:
                walk(v, depth + 1)

    walk(data, 0)
    return data


def need(cond: bool, source: str, message: str) -> None:
    if not cond:
        raise AblateError(f"{source}: {message}")


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_keys(data: dict, allowed: set[str], source: str, what: str) -> None:
    unknown = sorted(map(str, set(data) - allowed))
    need(not unknown, source, f"unknown {what} key(s) {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}")


def check_setting_names(names, source: str, what: str, user_axes: bool = False) -> None:
    """Every name a trial setting; with a user model (`user_axes`) a name that is not one of ablate's own settings is
    an axis of its factory, so any keyword-argument name but the factory's inputs and the factory's fields."""
    if user_axes:
        bad = [str(n) for n in names if not (isinstance(n, str) and n.isidentifier()) or n in FACTORY_INPUTS[:2]
               or n in FACTORY_FIELDS or n in DATA_FIELDS]
        need(not bad, source, f"{what} {', '.join(bad)} cannot be a setting or an axis of the model factory (an axis is "
             f"a keyword-argument name; {', '.join(FACTORY_INPUTS)}, {', '.join(FACTORY_FIELDS)} and {', '.join(DATA_FIELDS)} "
             "are ablate's)")
        return
    bad = [str(n) for n in names if n not in CONFIG_FIELDS]
    need(not bad, source, f"unknown {what} {', '.join(bad)}; valid trial settings: {', '.join(sorted(CONFIG_FIELDS))}")
