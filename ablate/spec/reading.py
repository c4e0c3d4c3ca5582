"""Reading spec text: YAML files, and the checks every part of a spec shares (known keys, known trial
settings, whole numbers, finite numbers). Every problem raises AblateError naming the spec (`source`) and what
to write instead.
"""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from ablate.errors import AblateError
from ablate.spec.trial_config import TrialConfig

CONFIG_FIELDS = {f.name for f in fields(TrialConfig)}


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AblateError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise AblateError(f"{path} is not UTF-8 text") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise AblateError(f"malformed YAML in {path}{where}: {getattr(exc, 'problem', None) or exc}") from None


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


def check_setting_names(names, source: str, what: str) -> None:
    bad = [str(n) for n in names if n not in CONFIG_FIELDS]
    need(not bad, source, f"unknown {what} {', '.join(bad)}; valid trial settings: {', '.join(sorted(CONFIG_FIELDS))}")
