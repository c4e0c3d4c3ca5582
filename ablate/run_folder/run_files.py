"""A study run folder's own files (not its trials'): spec.yaml, manifest.json with its format_version, the
resume manifests, the first trials.csv, the record of Ray's session folder, and the paths of the lock and of
optuna.db. Their one writer and one reader each.

- spec.yaml: the resolved spec (Study.resolved_yaml), written once, when the folder is made; its SHA-256 and
  content are in manifest.json (`spec_sha256`, `spec`), which a resume and the analysis check it against.
- manifest.json: written once, when the folder is made (ablate.engine.manifest builds it): command, host,
  hardware, package versions, git commit, dataset, resources, run id, sampler, the spec, `format_version`.
- manifest-resume-<YYYYmmdd-HHMMSS>.json: the same, for each resume that found work left.
- .ray_tmp: the path of Ray's session folder while a study runs (a crash leaves it: the next run removes that
  folder).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.atomic_files import atomic_write_bytes, atomic_write_text
from ablate.errors import AblateError
from ablate.run_folder.layout import (DATA_SOURCE, FIRST_FORMAT, FORMAT_KEY, FORMAT_VERSION, LOCK, MANIFEST,
                                      MODEL_SOURCE, OPTUNA_DB, RAY_TMP, SPEC, TRIALS_CSV, is_run_folder,
                                      resume_manifest_name, resume_manifests)
from ablate.slug import child

if TYPE_CHECKING:
    from ablate.spec import Study


def create_run_dir(study: "Study", out: Path | None, spec_text: str, manifest: dict[str, Any],
                   trials_csv: str, model_source: bytes | None = None, data_source: bytes | None = None) -> Path:
    """Make the run folder with its first files in one step: it either does not exist or holds spec.yaml,
    manifest.json (with this format's version) and trials.csv (`trials_csv`: its header, no trial has run), so that
    trials.csv is there at every moment the folder is; and model_source.py, the bytes of a user model's source file
    (`model_source`), where the spec names one, and data_source.py, a user's data loader's (`data_source`). `out`
    None: runs/<study>/<time> here."""
    files = {SPEC: spec_text, MANIFEST: manifest_text(manifest),
             TRIALS_CSV: trials_csv}
    run_dir = out or child(Path("runs"), study.name) / time.strftime("%Y%m%d-%H%M%S")  # the name is spec text
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if is_run_folder(run_dir):
            raise AblateError(f"run folder {run_dir} holds a study run already; use --resume {run_dir} to finish it, "
                              "or another --out")
        raise AblateError(f"{run_dir} exists and is not empty (and is not a study run folder); choose another --out")
    created = [p for p in [*reversed(run_dir.parents)] if not p.exists()]
    staging = None
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
        for name, text in files.items():
            atomic_write_text(staging / name, text)
        if model_source is not None:
            atomic_write_bytes(staging / MODEL_SOURCE, model_source)
        if data_source is not None:
            atomic_write_bytes(staging / DATA_SOURCE, data_source)
        os.rename(staging, run_dir)  # replaces an empty folder too
    except OSError as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for parent in reversed(created):
            try:
                parent.rmdir()
            except OSError:
                pass
        raise AblateError(f"cannot create run folder {run_dir}: {exc.strerror or exc}; choose another --out") from None
    return run_dir


def open_run_dir(run_dir: Path) -> Path:
    """A study run folder of a format this ablate reads (read_manifest), else one line saying why not."""
    run_dir = Path(run_dir)
    if not is_run_folder(run_dir):
        raise AblateError(f"{run_dir} is not a study run folder (no {SPEC}); pass a folder made by 'study'")
    read_manifest(run_dir)
    return run_dir


KEEP_WEIGHTS_BEFORE_3 = "final"  # what a spec.yaml without keep_weights meant in formats 1 and 2


# --- spec.yaml ------------------------------------------------------------------------------------------------------
def spec_path(run_dir: Path) -> Path:
    return Path(run_dir) / SPEC


def read_spec(run_dir: Path) -> "Study":
    """The study as its run folder's spec.yaml says (strict YAML, checked as any spec). A spec without
    `keep_weights` means what it meant to the ablate that made the folder: the final stage's weights before format 3."""
    from ablate.spec import parse_study, read_yaml

    path = spec_path(run_dir)
    made_in = format_version(read_manifest(run_dir), Path(run_dir) / MANIFEST)
    return parse_study(read_yaml(path), source=str(path),
                       keep_weights_default=KEEP_WEIGHTS_BEFORE_3 if made_in < 3 else "none")


def read_spec_bytes(run_dir: Path) -> bytes:
    path = spec_path(run_dir)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AblateError(f"cannot read {path}: {exc.strerror or exc}") from None


# --- manifest.json and the resume manifests ---------------------------------------------------------------------
def manifest_text(manifest: dict[str, Any]) -> str:
    """A manifest as written: this format's version first, then what `manifest` records."""
    return json.dumps({FORMAT_KEY: FORMAT_VERSION, **{k: v for k, v in manifest.items() if k != FORMAT_KEY}},
                      indent=2) + "\n"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def format_version(manifest: dict[str, Any], where: Path) -> int:
    """The run folder format a manifest records (FIRST_FORMAT when it records none); a format newer than this
    ablate's, or one that is not a whole number, is refused naming the file."""
    version = manifest.get(FORMAT_KEY, FIRST_FORMAT)
    if not isinstance(version, int) or isinstance(version, bool) or version < FIRST_FORMAT:
        raise AblateError(f"{where}: {FORMAT_KEY} is {version!r}, not a run folder format (a whole number from "
                          f"{FIRST_FORMAT}); the manifest was edited or damaged: restore it")
    if version > FORMAT_VERSION:
        raise AblateError(f"{where.parent} is a run folder of format {version}, made by a newer ablate; this one reads "
                          f"formats {FIRST_FORMAT} to {FORMAT_VERSION}: upgrade ablate to read it")
    return version


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """manifest.json ({} when it is missing or unreadable: an older run's may be), its format checked
    (format_version)."""
    path = Path(run_dir) / MANIFEST
    manifest = _read_json(path) or {}
    format_version(manifest, path)
    return manifest


def write_resume_manifest(run_dir: Path, manifest: dict[str, Any]) -> Path:
    """A resume's own manifest beside the first one (with the format of the ablate that resumed)."""
    path = Path(run_dir) / resume_manifest_name(time.strftime("%Y%m%d-%H%M%S"))
    atomic_write_text(path, manifest_text(manifest))
    return path


def read_resume_manifests(run_dir: Path) -> list[dict[str, Any]]:
    """Each resume's manifest, oldest first, with its file name as `file` (unreadable ones are left out)."""
    out = []
    for path in resume_manifests(run_dir):
        data = _read_json(path)
        if data is not None:
            out.append({"file": path.name, **data})
    return out


# --- the lock, optuna.db and Ray's session folder -----------------------------------------------------------------
def lock_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOCK


def optuna_db(run_dir: Path) -> Path:
    """The run's own Optuna database (a tuned run without --storage)."""
    return Path(run_dir) / OPTUNA_DB


def read_ray_tmp(run_dir: Path) -> Path | None:
    """The Ray session folder a study of this run recorded (and a crash left), or None."""
    try:
        return Path((Path(run_dir) / RAY_TMP).read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError):
        return None


def write_ray_tmp(run_dir: Path, folder: Path) -> None:
    atomic_write_text(Path(run_dir) / RAY_TMP, str(folder))


def remove_ray_tmp(run_dir: Path) -> None:
    (Path(run_dir) / RAY_TMP).unlink(missing_ok=True)
