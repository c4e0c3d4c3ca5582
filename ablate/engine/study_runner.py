"""Runs a study: takes the run folder's lock, builds the planner over the folder, and lets the Ray adapter
execute its work until nothing is left. What runs, and when, is decided by the planner (ablate.engine.planner)
from the run folder alone; a crash loses at most the segments in flight, and `--resume` goes on from the folder.
"""
from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Callable

from ablate.engine import fault_hook, interrupts
from ablate.errors import AblateError
from ablate.engine.liveness import DEFAULT_STALL_SECONDS
from ablate.engine.interrupts import interrupt_signal
from ablate.engine.planner import Planner, default_study_names
from ablate.engine.storage import open_storage
from ablate.engine.trial_failures import INFRASTRUCTURE, describe, kind_of
from ablate.spec import Study
from ablate.engine.resources import Resources
from ablate.engine.run_lock import RunLock
from ablate.engine.ray_adapter import ray_temp_dir, start_ray, stop_ray, tune_study
from ablate.run_folder import remove_ray_tmp, write_trials_csv


class StudyInterrupted(Exception):
    """Ctrl-C (or SIGTERM) stopped the study; the run folder holds everything that finished."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @staticmethod
    def line(signum: int, run_dir: Path) -> str:
        """What the command says when a signal stopped the study (exit code 128 + signum)."""
        return (f"{'terminated' if signum == signal.SIGTERM else 'interrupted'}: what finished is kept in {run_dir}; "
                f"finish it with: ablate study --resume {run_dir}")


class StudyStopped(Exception):
    """Trials failed for reasons outside their configs (or the study's own files could not be written): the
    study stopped with nothing of their rounds decided; `--resume` finishes it once the cause is gone."""

    def __init__(self, run_dir: Path, faults: list[str], cause: str | None = None):
        self.run_dir, self.faults, self.cause = run_dir, faults, cause
        if cause:
            what = f"the study stopped: {cause}"
        else:
            n = len(faults)
            what = (f"the study stopped: {n} trial{'s' if n > 1 else ''} failed for a reason outside "
                    f"{'their' if n > 1 else 'its'} config (above); nothing of {'their' if n > 1 else 'its'} "
                    "round was told to Optuna or decided")
        self.what, self.hint = what, f"once the cause is fixed, finish it with: ablate study --resume {run_dir}"
        super().__init__(f"{what}; {self.hint}")


def optuna_study_names(study: Study, run_id: str, storage: str | None) -> dict[tuple[str, int], str]:
    """One Optuna study per arm (and repeat of the search). In the run folder's own optuna.db the arm's name is
    enough; in a shared database the name also carries the study and the run, so two runs never feed on each
    other's trials."""
    return default_study_names(study, "" if storage is None else f"{study.name}/{run_id}/")


def run_study(study: Study, run_dir: Path, resources: Resources, data_dir: str | None,
              storage: str | None = None, retries: int = 1, run_id: str = "", tensorboard: bool = False,
              fuse: int = 1, on_start: Callable[[], None] | None = None,
              stall_seconds: float = DEFAULT_STALL_SECONDS) -> None:
    """Every stage of the study in one Tuner, skipping what the run folder already holds; with fuse >= 2,
    groups of up to `fuse` trials that may be fused train as one model (ablate.train.fused). `on_start` is
    called once it is known that work is left (a resume records itself then: resuming a finished run is none).
    A trial with no progress for its bound (ablate.engine.liveness, `stall_seconds`) is killed as stalled.

    trials.csv is there at every moment the run folder is (made with it, ablate.run_folder.run_files), and follows
    the registry: rewritten whenever results are registered, and when the study ends, stops or is interrupted.
    Interrupted (Ctrl-C, SIGTERM), the study stops within seconds whatever its workers are doing (stopped, in a
    C call, dead): its Ray session is shut down (which ends them) and a watchdog ends what blocks longer
    (ablate.engine.interrupts)."""
    with RunLock(run_dir):
        ended = False
        try:
            _run(study, run_dir, resources, data_dir, storage, retries, run_id, tensorboard, fuse, on_start,
                 stall_seconds)
            ended = True
        except KeyboardInterrupt as exc:
            _stopping(exc, run_dir)
            raise StudyInterrupted(interrupt_signal(exc)) from None
        except (AblateError, StudyStopped):
            raise
        except Exception as exc:
            interrupt = interrupts.interrupt_behind(exc)
            if interrupt is not None:  # the interrupt's cleanup failed (e.g. stderr piped into a tee Ctrl-C ended)
                _stopping(interrupt, run_dir)
                raise StudyInterrupted(interrupt_signal(interrupt)) from None
            # The study's own writes failing (a full disk under trials.jsonl or optuna.db, no thread to be had)
            # stop it like a trial's fault of the machine.
            if kind_of(exc) != INFRASTRUCTURE:
                raise
            raise StudyStopped(run_dir, [], describe(exc)) from exc
        finally:
            try:
                write_trials_csv(study, run_dir)  # as the study ends, stops or is interrupted
            except OSError as exc:
                if ended:  # nothing else went wrong: say this
                    raise StudyStopped(run_dir, [], f"trials.csv could not be written ({describe(exc)})") from exc
            finally:
                interrupts.stopped()


def _stopping(exc: BaseException, run_dir: Path) -> None:
    """Interrupted: the cleanup from here on is not cut short by another signal, and ends within seconds."""
    signum = interrupt_signal(exc)
    interrupts.stopping(signum, lambda: StudyInterrupted.line(signum, run_dir))


class _TrialsCsv:
    """Rewrites trials.csv from the planner's rows after results were registered (planner.on_register)."""

    def __init__(self, study: Study, run_dir: Path, planner: Planner):
        self.study, self.run_dir, self.planner = study, run_dir, planner
        self.pending = True
        then = planner.on_register

        def registered(row, config) -> None:
            self.pending = True
            if then is not None:
                then(row, config)

        planner.on_register = registered

    def flush(self) -> None:
        if not self.pending:
            return
        self.pending = False
        try:
            write_trials_csv(self.study, self.run_dir, list(self.planner.rows.values()))
        except OSError:
            self.pending = True  # a full disk: tried again at the next change, and said when the study ends


def _run(study, run_dir, resources, data_dir, storage, retries, run_id, tensorboard, fuse, on_start,
         stall_seconds) -> None:
    if storage is not None:
        open_storage(storage)  # a new SQLite file is made here, not when the command line was checked
    planner = Planner(study, run_dir, storage, optuna_study_names(study, run_id, storage), fuse=fuse)
    if tensorboard:
        from ablate.engine.tensorboard import write_trial

        planner.on_register = lambda row, config: write_trial(run_dir, row, config.to_dict())
    csv = _TrialsCsv(study, run_dir, planner)
    planner.refresh()
    csv.flush()
    if planner.done:  # a finished study resumes without starting Ray
        return
    if on_start is not None:
        on_start()
    tmp = ray_temp_dir(run_dir)
    try:
        try:
            fault_hook.strike_ray_start()
            start_ray(resources, tmp)
        except AblateError:
            raise
        except Exception as exc:  # Ray's node did not come up (an overloaded machine, a cluster gone): not the spec's
            raise StudyStopped(run_dir, [], f"Ray could not start ({describe(exc)})") from exc
        faults = tune_study(study, run_dir, resources, data_dir, planner, retries, tmp, stall_seconds, csv.flush)
    except KeyboardInterrupt as exc:
        _stopping(exc, run_dir)  # before Ray's shutdown, which another Ctrl-C would cut short
        raise
    finally:
        stop_ray()
        shutil.rmtree(tmp, ignore_errors=True)
        remove_ray_tmp(run_dir)
    if faults:
        raise StudyStopped(run_dir, faults)
    if planner.done:
        planner.cleanup()
    else:
        raise AblateError(f"the study stopped with work left (see the errors above); finish it with "
                          f"ablate study --resume {run_dir}")
