"""Importing a function of the user's own from the source file a spec named and hashed (ablate.spec.user_ref): a
model factory (ablate.models.factory) or a data loader (ablate.data.user_data).

Importing a module runs its code, so every import of a user's file is announced first (one line on stderr, once per
process and file: `importing <what> <reference> from <file>`) and happens only for a reference the user's own spec
or flag gave. The file must still hash to what was recorded: a source changed under a running study is refused in
one line naming both hashes, not silently run. Imports no torch.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

from ablate.errors import AblateError
from ablate.spec import file_sha256, is_file_form

# (reference, file, recorded sha256) -> the function and the SHA-256 of the source it was imported from (another than
# the recorded one only where allow_changed said so)
_LOADED: dict[tuple[str, str, str], tuple[Callable[..., Any], str]] = {}


def load_callable(what: str, reference: str, file: str, sha256: str, *, announce: bool = True,
                  allow_changed: bool = False) -> Callable[..., Any]:
    """The function `reference` names (`what` says what it is in messages: "model factory", "data loader"),
    imported from `file` (an import path `pkg.mod:fn` with the folder above `pkg` put on sys.path; a file path as a
    module of its own). Refused in one line, before anything is imported, when the file is missing or no longer
    hashes to `sha256` (allow_changed: imported anyway)."""
    path = Path(file)
    if not path.is_file():
        raise AblateError(f"{what} {reference}: its source file {file} is missing (recorded SHA-256 {sha256})")
    now = file_sha256(path)  # checked on every call: an edit in a long-lived process too
    key = (reference, file, sha256)
    if key in _LOADED and _LOADED[key][1] == now:  # imported already from this very source
        return _LOADED[key][0]
    if now != sha256 and not allow_changed:
        raise AblateError(f"{what} {reference}: {file} has changed since it was recorded (recorded SHA-256 "
                          f"{sha256}, now {now}); restore that source (a change is a new study: its trials are other trials)")
    target, _, attr = reference.rpartition(":")
    if announce:
        print(f"importing {what} {reference} from {file}", file=sys.stderr, flush=True)
    try:
        if is_file_form(target):
            name = f"ablate_user_{what.split()[0]}_{now[:16]}"
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
                raise AblateError(f"{what} {reference}: {target} imports from {module.__file__}, not from the "
                                  f"recorded {file}; another module of that name comes first on sys.path")
    except AblateError:
        raise
    except Exception as exc:  # the user's module failed to import: say where, in one line
        raise AblateError(f"{what} {reference}: importing {file} failed: {type(exc).__name__}: {exc}") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise AblateError(f"{what} {reference}: {file} has no function {attr}")
    _LOADED[key] = (function, now)
    return function


def _package_root(path: Path, module: str) -> str:
    """The folder above the package: ROOT for ROOT/pkg/mod.py and ROOT/pkg/mod/__init__.py."""
    depth = module.count(".") + (1 if path.name == "__init__.py" else 0)
    return str(path.resolve().parents[depth])
