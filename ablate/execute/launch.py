"""Everything `study` decides before it runs anything: the spec (new or resumed), the resources, the data,
the run folder and its manifest. All checks happen before any file is written.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.execute.gpu_plan import GpuPlan, decide
from ablate.engine import Resources, check_spec, check_storage, run_manifest, spec_record
from ablate.run_folder import (create_run_dir, open_run_dir, optuna_db, read_manifest, read_spec, trials_csv,
    write_resume_manifest)
from ablate.spec import MAX_RETRIES, MAX_SAMPLER_SEED, Study, check_at_most, load_study, parse_study
from ablate.messages import mask_url
from ablate.engine.ray_adapter import check_address
from ablate.execute.fuse_plan import fuse_plan


@dataclass
class Launch:
    spec: Study
    resources: Resources
    run_dir: Path | None  # None until a new run folder is created
    run_id: str
    storage: str | None
    retries: int
    fuse: int = 1
    gpu: GpuPlan | None = None  # trials per GPU, cores per trial, and where those numbers came from
    notes: list[str] = field(default_factory=list)  # warnings for the user, one line each
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def resumed(self) -> bool:
        return self.run_dir is not None


def resources(cpus: int | None, gpus: int | None, gpus_per_trial: float | None, address: str | None,
              threads: int) -> Resources:
    total = os.cpu_count() or 1
    if cpus is not None and cpus < 1:
        raise AblateError(f"--cpus must be at least 1, got {cpus}")
    if gpus is not None and gpus < 0:
        raise AblateError(f"--gpus must be >= 0, got {gpus}")
    if gpus_per_trial is not None and not (0 < gpus_per_trial <= 1):
        raise AblateError(f"--gpus-per-trial must be in (0, 1], got {gpus_per_trial}")
    visible = _visible_gpus()
    if address is None and gpus is not None and gpus > visible:
        raise AblateError(f"--gpus {gpus} asked for, but this machine has {visible} GPU(s) visible; "
                          f"use --gpus {visible} or fewer")
    return Resources(cpus=min(cpus or total, total) if address is None else (cpus or total),
                     gpus=visible if gpus is None else gpus, gpus_per_trial=gpus_per_trial, address=address,
                     threads=threads)


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def new_study(study: str | Path | dict | Study, budget: str | None = None, dataset: str | None = None,
              sampler_seed: int | None = None) -> tuple[Study, str]:
    """The study a new run starts, and the dataset it asks for: a spec by name or path (the budget and sampler seed
    applied), a spec document as a dict (read by the same parser, its budget applied), or a Study already made
    (copied: a run pins its dataset); `dataset` replaces the spec's. Any problem raises AblateError."""
    if sampler_seed is not None and not 0 <= sampler_seed <= MAX_SAMPLER_SEED:
        raise AblateError(f"--sampler-seed must be from 0 to {MAX_SAMPLER_SEED:,}, got {sampler_seed}")
    if isinstance(study, Study):
        if budget is not None or sampler_seed is not None:
            raise AblateError(f"study {study.name!r} is already made with budget {study.budget}; pass the budget and "
                              "sampler seed where it is made (load_study), not with it")
        spec = copy.deepcopy(study)
    elif isinstance(study, dict):
        if sampler_seed is not None:
            raise AblateError("a study given as a dict takes its sampler seed in it (search.sampler_seed), not "
                              "beside it")
        spec = parse_study(study, budget or "default", source="study dict")
    elif isinstance(study, (str, Path)):
        spec = load_study(study, budget or "default", sampler_seed)
    else:
        raise AblateError(f"a study is a name, a path to a spec .yaml, a spec dict or a Study, not "
                          f"{type(study).__name__}")
    requested = spec.base.get("dataset", "auto")
    if dataset is not None:
        spec.pin(dataset=dataset)
        requested = dataset
        spec.first_config()  # validates the name
    return spec, requested


def prepare(name: str | Path | dict | Study | None, resume: Path | None, *, budget: str | None, dataset: str | None, out: Path | None,
            data_dir: Path | None, cpus: int | None, gpus: int | None, gpus_per_trial: float | None,
            address: str | None, storage: str | None, retries: int, fuse: str = "off",
            sampler_seed: int | None = None) -> Launch:
    """Read and check everything; write nothing. `name`: the study of a new run, as new_study takes it (with a
    resume: nothing, or the run's own study)."""
    notes: list[str] = []
    if retries < 0:
        raise AblateError(f"--retries must be >= 0, got {retries}")
    check_at_most(retries, MAX_RETRIES, "--retries")
    if sampler_seed is not None and not 0 <= sampler_seed <= MAX_SAMPLER_SEED:
        raise AblateError(f"--sampler-seed must be from 0 to {MAX_SAMPLER_SEED:,}, got {sampler_seed}")
    if resume is not None:
        run_dir = open_run_dir(resume)  # of a format this ablate reads
        recorded = read_manifest(run_dir)
        unchecked = check_spec(run_dir, recorded, "a resume runs")  # a changed spec.yaml is refused, naming the change
        if unchecked:
            notes.append(f"{unchecked}; resuming it as spec.yaml says")
        spec = read_spec(run_dir)
        _check_resume(spec, run_dir, name, budget, dataset, out, sampler_seed)
        run_id = recorded.get("run_id") or run_dir.name
        _check_resume_storage(recorded, storage, run_dir)
        notes += _check_run_files(run_dir, storage)
        requested = recorded.get("dataset_requested")
    else:
        run_dir = None
        spec, requested = new_study(name, budget, dataset, sampler_seed)
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    check_run_paths(spec, out, run_dir, storage)  # before anything is read or written
    check_model(spec)  # a user's network: imported (saying so), its file unchanged, every axis a parameter
    check_data(spec)  # a user's data loader: imported (saying so), its file unchanged
    res = resources(cpus, gpus, gpus_per_trial, address, int(spec.base["threads"]))
    from ablate.data import load_splits  # torch: after the spec and the flags are checked, which need none
    from ablate.execute.estimate import check_data_fits
    from ablate.machine_memory import memory_limits

    base = spec.first_config()
    check_data_fits(base, memory_limits())  # loading data that can never fit would end this process unannounced
    splits = load_splits(base.dataset, data_dir, base.train_size, base.dev_size, base.test_size,
                         seed=base.data_seed, image_size=base.image_size, data_file=base.data_file,
                         data_sha256=base.data_sha256)
    if splits.note:
        notes.append(splits.note)
    if resume is not None and requested == "auto" and spec.base["dataset"] == "digits":
        notes.append("this run started on digits because MNIST was not available then; it continues on digits "
                     "(a run never changes its dataset)")
    spec.pin(dataset=splits.dataset)
    if res.address:
        check_address(res.address)
    if storage is not None:
        check_storage(storage)
    gpu = decide(res.cpus, res.gpus, res.threads, spec.first_config(), splits.in_channels, gpus_per_trial, res.address)
    if res.gpus:
        res = dataclasses.replace(res, gpus_per_trial=gpu.gpu_share, trial_cpus=gpu.cpus_per_trial)
    info = {"cpus": res.cpus, "gpus": res.gpus, "gpu_share": res.gpu_share(), "threads_per_trial": res.threads,
            "cpus_per_trial": res.cpus_per_trial(), "trials_at_once": res.concurrency(), "address": res.address,
            "storage": mask_url(storage) if storage else None}
    members, why = fuse_plan(fuse, res, spec, gpu.table, splits.in_channels, splits.num_classes)
    gpu.fuse = why
    record = run_manifest(spec, splits.dataset, info)
    record.update({"run_id": run_id, "dataset_requested": requested, "sampler": spec.sampler_text(),
                   "fuse": {"members": members, "why": why},
                   "gpu_plan": {"trials_per_gpu": gpu.trials_per_gpu, "source": gpu.source,
                                "img_per_s": {str(k): round(v, 1) for k, v in sorted(gpu.table.items())}}})
    return Launch(spec, res, run_dir, run_id, storage, retries, members, gpu, notes, record)


def check_model(spec: Study) -> None:
    """A spec's user model, before anything runs: its module imported (after one line naming it and its file; the
    reference is the user's spec's own), its source still what spec.yaml recorded, and every setting the factory is
    to be called with one of its parameters (refused in one line naming the setting and the parameters)."""
    if spec.model is None:
        return
    from ablate.models import check_axes, load_factory

    ref = spec.model
    factory = load_factory(ref.reference, ref.file, ref.sha256, announce=True)
    axes = spec.user_axes()
    check_axes(ref.reference, factory, [a for a in axes if a in spec.factor_names], "factor")
    check_axes(ref.reference, factory, [a for a in axes if a not in spec.factor_names], "setting")


def check_data(spec: Study) -> None:
    """A spec's data loader (base.dataset or --dataset MODULE:FUNCTION), before anything is read: its module imported
    after one line naming it and its file, its source still what spec.yaml recorded (a resume of a changed loader is
    refused in one line naming both hashes)."""
    if spec.data is None:
        return
    from ablate.data import check_loader

    check_loader(spec.data.reference, spec.data.file, spec.data.sha256)


def model_source(spec: Study) -> bytes | None:
    """The bytes of a user model's source file for the run folder's copy, checked against the hash the trials
    record (so the copy is what ran)."""
    return _source_copy(spec.model, "model factory")


def data_source(spec: Study) -> bytes | None:
    """The bytes of a user's data loader's source file for the run folder's copy, as model_source."""
    return _source_copy(spec.data, "data loader")


def _source_copy(ref: Any, what: str) -> bytes | None:
    if ref is None:
        return None
    import hashlib

    data = Path(ref.file).read_bytes()
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise AblateError(f"{what} {ref.reference}: {ref.file} changed while the study was being prepared (recorded "
                          f"SHA-256 {ref.sha256}); start again")
    return data


def check_run_paths(spec: Study, out: Path | None, run_dir: Path | None, storage: str | None) -> None:
    """A run folder whose path the operating system or SQLite cannot take is refused before anything is written
    (ablate.execute.path_limits): a new one (--out, or runs/<study>/<time> in the working directory, as
    create_run_dir names it) or a resumed one, and the Optuna database in it or at --storage's sqlite path."""
    from ablate.engine import sqlite_path
    from ablate.execute.path_limits import check_folder_path, check_sqlite_path
    from ablate.slug import child

    if run_dir is not None:
        folder, flag = run_dir, "--resume"
    elif out is not None:
        folder, flag = out, "--out"
    else:  # create_run_dir's default, its time stamp as long as the one it will have
        folder, flag = child(Path("runs"), spec.name) / time.strftime("%Y%m%d-%H%M%S"), "the run folder in this directory"
    full = check_folder_path(folder, flag, staged=run_dir is None)
    database = sqlite_path(storage) if storage is not None else optuna_db(full)
    if database is not None:
        check_sqlite_path(database, "--storage" if storage is not None else flag)


def start(launch: Launch, out: Path | None) -> Path:
    """Create the new run folder (spec.yaml and manifest.json at once); a resumed one is left as it is until
    the study, holding the folder's lock, finds work left (record_resume)."""
    if launch.run_dir is None:
        spec_text = launch.spec.resolved_yaml()
        launch.manifest.update(spec_record(spec_text))  # the spec it started with: a resume must run the same
        launch.run_dir = create_run_dir(launch.spec, out, spec_text, launch.manifest, trials_csv(launch.spec, []),
                                        model_source(launch.spec), data_source(launch.spec))
    return launch.run_dir


def record_resume(launch: Launch) -> None:
    """A resume's own manifest beside the first one."""
    write_resume_manifest(launch.run_dir, launch.manifest)


def _check_run_files(run_dir: Path, storage: str | None) -> list[str]:
    """What a resume needs of the run folder, before anything is written: it can be written to, its registry is
    readable and holds only what ablate writes, every registered trial's files are those its row recorded (their
    hashes), no trial folder or file is a symbolic link, and its own Optuna database is readable. Returns notes."""
    from ablate.engine import check_sqlite_file
    from ablate.run_folder import check_run_records, trials_dir

    note = check_run_records(run_dir, resuming=True).note()  # first: the probe below must not go through a link
    for folder in (run_dir, trials_dir(run_dir)):
        if not folder.is_dir():
            continue
        try:  # a real write: permission bits do not bind root, a read-only mount does
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise AblateError(f"cannot write to {folder} ({exc.strerror or exc}); a resume writes its results "
                              "there: make the run folder writable, then resume") from None
    if storage is None and optuna_db(run_dir).exists():
        check_sqlite_file(optuna_db(run_dir))
    return [note] if note else []


def _check_resume(spec: Study, run_dir: Path, name: str | Path | dict | Study | None, budget: str | None, dataset: str | None,
                  out: Path | None, sampler_seed: int | None = None) -> None:
    if spec.legacy:
        raise AblateError(f"{run_dir} was made by an older ablate whose search was asynchronous (ASHA); it cannot be "
                          "resumed reproducibly; analyse it as it is, or start a new run")
    if name is not None:
        named = new_study(name)[0].name
        if named != spec.name:
            raise AblateError(f"{run_dir} is a run of study {spec.name!r}, not {named!r}; drop the name or pass "
                              f"{spec.name}")
    for flag, value in (("--budget", budget), ("--dataset", dataset), ("--out", out), ("--sampler-seed", sampler_seed)):
        if value is not None:
            was = {"--budget": f"budget {spec.budget}", "--dataset": f"dataset {spec.base.get('dataset')}",
                   "--out": f"folder {run_dir}", "--sampler-seed": f"sampler seed {spec.sampler_seed}"}[flag]
            raise AblateError(f"{flag} cannot change when resuming (this run has {was}); drop {flag}")


def _check_resume_storage(recorded: dict[str, Any], storage: str | None, run_dir: Path) -> None:
    was = (recorded.get("resources") or {}).get("storage")
    if was and storage is None:
        raise AblateError(f"{run_dir} keeps its Optuna studies in {was}; pass --storage with that URL to resume it")
    if storage is not None and was != mask_url(storage):
        raise AblateError(f"{run_dir} keeps its Optuna studies in {was or 'its own optuna.db'}, not {mask_url(storage)}; "
                          "resume with the storage it was started with")
