"""A user's function named in a spec: a network's factory (`model: my_package.nets:build` or
`model: ./nets.py:build`) or a data loader (`base.dataset: my_package.data:load` or `./data.py:load`, and
`--dataset`): where its source file is and what that file hashes to, found without importing anything (importing
runs the module's code: that happens at launch, ablate.execute.launch, after one line says so; ablate.user_code).

The spec's `model` or `dataset` is a reference as the user wrote it; a run folder's spec.yaml records the resolved
mapping (reference, file, sha256, and for an import path the folder it was found under), so that the run is analysed,
resumed and reproduced from what it ran, never from a search that might find another file.
Imports no torch.
"""
from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
RECORD_KEYS = ("reference", "file", "sha256", "root")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class UserRef:
    """A user's function (a model factory or a data loader): `reference` as the spec wrote it, its source `file` (absolute), the file's SHA-256, and for an import
    path (`pkg.mod:build`) the folder (`root`) that holds the package, which the importing process puts on sys.path."""

    reference: str
    file: str
    sha256: str
    root: str | None = None

    @property
    def module(self) -> str | None:
        """'pkg.mod' for an import path, None for a file path."""
        target = self.reference.rsplit(":", 1)[0]
        return None if is_file_form(target) else target

    @property
    def attr(self) -> str:
        return self.reference.rsplit(":", 1)[1]

    def record(self) -> dict[str, Any]:
        """What spec.yaml records of it."""
        out = {"reference": self.reference, "file": self.file, "sha256": self.sha256}
        if self.root is not None:
            out["root"] = self.root
        return out

    def describe(self, what: str = "the user model") -> str:
        """'the user model ./nets.py:build (source SHA-256 1a2b3c4d5e6f)': how reports name it (`what`: the words
        before the reference; a data loader's are "the data of the user's loader")."""
        return f"{what} {self.reference} (source SHA-256 {self.sha256[:12]})"


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def is_file_form(target: str) -> bool:
    """Whether the part before ':' names a file (./nets.py) rather than a module (pkg.mod)."""
    return target.endswith(".py") or "/" in target or "\\" in target


def parse_model(value: Any, spec_dir: Path | None, source: str) -> UserRef:
    """The spec's `model`: a reference (`pkg.mod:build`, `./nets.py:build` relative to the spec's folder), found and
    hashed now; or the mapping a run folder's spec.yaml records, taken as recorded (launch checks the file still
    hashes to it)."""
    return parse_reference(value, spec_dir, source, "model", "./nets.py:build or my_package.nets:build")


def parse_data(value: Any, spec_dir: Path | None, source: str) -> UserRef:
    """A user's data loader (`dataset: ./data.py:load` or `my_package.data:load`), as parse_model finds a factory."""
    return parse_reference(value, spec_dir, source, "dataset", "./data.py:load or my_package.data:load")


def parse_reference(value: Any, spec_dir: Path | None, source: str, key: str, example: str) -> UserRef:
    """A reference to a user's function under the spec's `key`, found and hashed now, or as a run folder recorded it."""
    if isinstance(value, dict):
        unknown = sorted(set(map(str, value)) - set(RECORD_KEYS))
        if unknown or not all(isinstance(value.get(k), str) for k in ("reference", "file", "sha256")):
            raise AblateError(f"{source}: {key} must be a reference such as {example} "
                              f"(a run folder's spec.yaml records reference, file and sha256), got {value!r}")
        _split(value["reference"], source, key)
        if not re.fullmatch(r"[0-9a-f]{64}", value["sha256"]):
            raise AblateError(f"{source}: {key}.sha256 must be a SHA-256 (64 hex digits), got {value['sha256']!r}")
        return UserRef(value["reference"], value["file"], value["sha256"], value.get("root"))
    if not isinstance(value, str):
        raise AblateError(f"{source}: {key} must be a reference such as {example}, got {value!r}")
    target, attr = _split(value, source, key)
    if is_file_form(target):
        path = Path(target).expanduser()
        if not path.is_absolute():
            path = (spec_dir or Path.cwd()) / path
        path = path.resolve()
        if not path.is_file():
            raise AblateError(f"{source}: {key} {value}: no file {path} (a file path is relative to the spec's folder)")
        root = None
    else:
        path, root = _locate(target, spec_dir, value, source, key)
    return UserRef(value, str(path), file_sha256(path), root)


def _split(value: str, source: str, key: str = "model") -> tuple[str, str]:
    target, sep, attr = value.rpartition(":")
    if not sep or not target or not _NAME.match(attr) or not (is_file_form(target) or _MODULE.match(target)):
        raise AblateError(f"{source}: {key} must be MODULE:FUNCTION (my_package.mod:function) or FILE.py:FUNCTION "
                          f"(./file.py:function), got {value!r}")
    return target, attr


def _locate(module: str, spec_dir: Path | None, value: str, source: str, key: str) -> tuple[Path, str]:
    """The source file of `module` found without importing it (importing runs code): ROOT/pkg/mod.py or
    ROOT/pkg/mod/__init__.py, ROOT the spec's folder, the working directory, then sys.path."""
    parts = module.split(".")
    roots = [spec_dir, Path.cwd(), *(Path(p) for p in sys.path if p)]
    for root in roots:
        if root is None:
            continue
        base = Path(root, *parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate.resolve(), str(Path(root).resolve())
    raise AblateError(f"{source}: {key} {value}: module {module} not found as a .py file under the spec's folder, the "
                      "working directory or sys.path (ablate finds it without importing it; a compiled or zipped "
                      "module cannot be named)")
