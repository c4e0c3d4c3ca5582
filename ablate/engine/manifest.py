"""A run's manifest: what launched it and on what (command, host, hardware, package versions, git commit), and
the spec it started with (its hash and its content), which a resume and the analysis check spec.yaml against."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from ablate.errors import AblateError
from ablate.messages import mask_url
from ablate.run_folder import MANIFEST, read_spec_bytes, spec_path
from ablate.spec import Study


PACKAGES = ("ablate", "torch", "torchvision", "ray", "optuna", "numpy", "pandas", "scikit-learn")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).resolve().parent,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux; empty elsewhere)."""
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    if out:
                        break  # the first processor's block is enough: they are alike
                    continue
                key, _, value = line.partition(":")
                out.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return out


def hardware(gpus: int = 0) -> dict[str, Any]:
    """The machine the study was launched on, for a methods section: CPU model, its instruction set flags (x86
    `flags`, ARM `Features`: which vector units float arithmetic may use), torch's own view of them when torch is
    loaded already (this module never loads it for that), logical CPUs, memory, and the names of the visible GPUs
    (only asked of torch when there are some)."""
    info = _cpuinfo()
    cpu = info.get("model name") or info.get("Model") or info.get("Hardware")
    flags = info.get("flags") or info.get("Features")
    capability = None
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            capability = str(torch.backends.cpu.get_cpu_capability())
        except Exception:  # noqa: BLE001  a description of the machine must never stop a study
            capability = None
    memory = None
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (AttributeError, OSError, ValueError):
        pass
    names: list[str] = []
    if gpus:
        try:
            import torch

            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:  # noqa: BLE001  a description of the machine must never stop a study
            names = []
    return {"cpu": cpu or platform.processor() or None, "cpu_flags": flags or None, "cpu_capability": capability,
            "machine": platform.machine() or None, "logical_cpus": os.cpu_count(), "memory_gib": memory,
            "gpus": names}


def package_versions(names) -> dict[str, str | None]:
    """Installed version of each package (None where it is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_manifest(study: Study, dataset: str, resources: dict[str, Any]) -> dict[str, Any]:
    from ablate import __version__

    # This copy's version: the distribution is named ablate-residuals (pyproject.toml), and the name `ablate` on
    # the package index belongs to another project, whose version would be reported if it were installed.
    versions = {**package_versions(PACKAGES), "ablate": __version__}
    return {
        "study": study.name, "budget": study.budget, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # without the password of a --storage URL (the command reaches report.html, which is meant to be sent)
        "command": [Path(sys.argv[0]).name, *map(mask_url, sys.argv[1:])], "host": socket.gethostname(),
        "platform": platform.platform(), "python": platform.python_version(), "packages": versions,
        "git_commit": git_commit(), "dataset": dataset, "resources": resources,
        "hardware": hardware(int(resources.get("gpus") or 0)),
        # a user's network or data loader: what ran (source_record), only where the spec names one
        **({"model": model_record(study)} if study.model is not None else {}),
        **({"data": data_record(study)} if study.data is not None else {}),
    }


def model_record(study: Study) -> dict[str, Any] | None:
    """What the manifest records of a user model: its reference, source file and SHA-256, and for an import path
    the installed distribution that provides its top-level package with that distribution's version (None where
    none does: a folder on sys.path, or a file path)."""
    return source_record(study.model)


def data_record(study: Study) -> dict[str, Any] | None:
    """What the manifest records of a user's data loader, as model_record of a user model."""
    return source_record(study.data)


def source_record(ref: Any) -> dict[str, Any] | None:
    """A user's function (ablate.spec.UserRef): reference, file, SHA-256, and the package and version of an import
    path's distribution (None where none provides it)."""
    if ref is None:
        return None
    record: dict[str, Any] = {**ref.record(), "package": None, "version": None}
    if ref.module is not None:
        top = ref.module.split(".")[0]
        dists = metadata.packages_distributions().get(top) or []
        if dists:
            record["package"] = dists[0]
            record["version"] = package_versions(dists[:1])[dists[0]]
    return record


SPEC_HASH = "spec_sha256"
SPEC_DOC = "spec"


def spec_record(text: str) -> dict[str, Any]:
    """What the manifest records of the spec a run starts with: the SHA-256 of spec.yaml's text, and its content
    (so that a change can be named, not only seen)."""
    return {SPEC_HASH: hashlib.sha256(text.encode("utf-8")).hexdigest(), SPEC_DOC: _json_doc(yaml.safe_load(text))}


def _json_doc(doc: Any) -> Any:
    """A YAML document as JSON keeps it (keys as text; a date as text), so that the recorded and the present
    spec compare alike."""
    return json.loads(json.dumps(doc, default=str))


def _flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, dict) and doc:
        out: dict[str, Any] = {}
        for key, value in doc.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix or "(the whole spec)": doc}


def _text(value: Any, limit: int | None = 60) -> str:
    """A setting's value as JSON writes it: 1 and 1.0, true and 1 differ."""
    text = json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


ABSENT = object()


def spec_changes(then: Any, now: Any, limit: int = 6) -> list[str]:
    """What differs between two spec documents, one 'path: old -> new' per setting (dotted paths; a list is one
    setting), at most `limit` of them and how many more."""
    a, b = _flat(then), _flat(now)
    changes = []
    for key in [*a, *(k for k in b if k not in a)]:
        old, new = a.get(key, ABSENT), b.get(key, ABSENT)
        if old is ABSENT or new is ABSENT or _text(old, None) != _text(new, None):
            changes.append(f"{key}: {'(absent)' if old is ABSENT else _text(old)} -> "
                           f"{'(absent)' if new is ABSENT else _text(new)}")
    if len(changes) > limit:
        changes = changes[:limit] + [f"and {len(changes) - limit} more"]
    return changes


def check_spec(run_dir: Path, recorded: dict[str, Any], doing: str) -> str | None:
    """Refuse (one line, naming each change) a run folder whose spec.yaml is not the spec it started with, as its
    manifest recorded it; `doing` says what needs it ('a resume runs'). Returns a note when the manifest recorded no
    spec (a run started by an older ablate): then the spec could not be checked."""
    path = spec_path(run_dir)
    digest, doc = recorded.get(SPEC_HASH), recorded.get(SPEC_DOC)
    if not isinstance(digest, str) or SPEC_DOC not in recorded:
        return (f"the spec could not be checked: {Path(run_dir) / MANIFEST} records no hash of the spec the run "
                "started with (a run started by an older ablate)")
    data = read_spec_bytes(run_dir)
    if hashlib.sha256(data).hexdigest() == digest:
        return None
    try:
        now = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        now = ABSENT
    changes = ["it is no longer a YAML document"] if now is ABSENT else spec_changes(doc, _json_doc(now))
    if not changes:
        return None  # layout or comments only: the same spec
    raise AblateError(f"{path} is not the spec this run started with ({'; '.join(changes)}); {doing} the spec it "
                      f"started with: restore those values in spec.yaml, or start a new run for the new spec")
