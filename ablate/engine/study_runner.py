"""Runs a study: takes the run folder's lock, builds the planner over the folder, and lets the Ray adapter
execute its work until nothing is left. What runs, and when, is decided by the planner (ablate.engine.planner)
from the run folder alone; a crash loses at most the segments in flight, and `--resume` goes on from the folder.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ablate.errors import AblateError
from ablate.engine.run_folder import write_trials_csv
from ablate.engine.planner import Planner, default_study_names
from ablate.spec.study_spec import Study
from ablate.engine.resources import Resources
from ablate.engine.run_lock import RunLock
from ablate.engine.ray_adapter.session import RAY_TMP_RECORD, _temp_dir, start_ray, stop_ray
from ablate.engine.ray_adapter.tuner import _fit


class StudyInterrupted(Exception):
    """Ctrl-C (or SIGTERM) stopped the study; the run folder holds everything that finished."""


def optuna_study_names(study: Study, run_id: str, storage: str | None) -> dict[tuple[str, int], str]:
    """One Optuna study per arm (and repeat of the search). In the run folder's own optuna.db the arm's name is
    enough; in a shared database the name also carries the study and the run, so two runs never feed on each
    other's trials."""
    return default_study_names(study, "" if storage is None else f"{study.name}/{run_id}/")


def run_study(study: Study, run_dir: Path, resources: Resources, data_dir: str | None,
              storage: str | None = None, retries: int = 1, run_id: str = "", tensorboard: bool = False,
              fuse: int = 1) -> None:
    """Every stage of the study in one Tuner, skipping what the run folder already holds; with fuse >= 2,
    groups of up to `fuse` trials that may be fused train as one model (ablate.train.fused)."""
    with RunLock(run_dir):
        planner = Planner(study, run_dir, storage, optuna_study_names(study, run_id, storage), fuse=fuse)
        if tensorboard:
            from ablate.engine.tensorboard import write_trial

            planner.on_register = lambda row, config: write_trial(run_dir, row, config.to_dict())
        planner.refresh()
        try:
            if planner.done:  # a finished study resumes without starting Ray
                return
            tmp = _temp_dir(run_dir)
            try:
                start_ray(resources, tmp)
                _fit(study, run_dir, resources, data_dir, planner, retries, tmp)
            except KeyboardInterrupt:
                raise StudyInterrupted() from None
            finally:
                stop_ray()
                shutil.rmtree(tmp, ignore_errors=True)
                (run_dir / RAY_TMP_RECORD).unlink(missing_ok=True)
            if planner.done:
                planner.cleanup()
            else:
                raise AblateError(f"the study stopped with work left (see the errors above); finish it with "
                                  f"ablate study --resume {run_dir}")
        finally:
            write_trials_csv(study, run_dir)
