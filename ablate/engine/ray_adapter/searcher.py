"""Ray Tune extension point: the searcher that hands out the planner's work, and the callback that tells it why
a trial failed.

Imported only when a study runs, so that importing ablate never imports Ray.
"""
from __future__ import annotations

import time
from pathlib import Path

from ray.tune import Callback
from ray.tune.search import Searcher

from ablate.engine import FINISHED, Planner, trial_failures
from ablate.run_folder import (error_text_path, remove_heartbeat, trial_dir, withdraw_cancel, write_error_text,
    write_metrics)


class PlannerSearch(Searcher):
    """Every Ray trial is one TrialPlan of the planner: a tuning proposal's segment up to its rung, a confirm
    run or a grid point. The searcher holds no state of its own (the run folder does), so save/restore are
    no-ops and a resumed study is a fresh searcher over the same folder.

    A trial whose retries ran out is judged (ablate.engine.trial_failures) once Ray says why it failed
    (TrialErrors below): a failure of its config is a result; any other stops the study, which hands out no
    more work, lets the running trials finish and tells the planner nothing of the failed trial, so that its
    round is neither told to Optuna nor decided by halving until `--resume` has run it."""

    def __init__(self, planner: Planner, on_change=None, say=print):
        super().__init__(metric="best_dev_acc", mode="max")
        self.planner, self.on_change, self.say = planner, on_change, say
        self.works: dict[str, list] = {}  # Ray trial id -> the planner's work it runs
        self.failing: dict[str, list] = {}  # Ray trial id -> its work, until TrialErrors judges it
        self.faults: list[str] = []  # one line per trial that failed for a reason outside its config

    def suggest(self, trial_id):
        if self.faults:
            return Searcher.FINISHED
        work = self.planner.next()
        if work == FINISHED:
            return Searcher.FINISHED
        if work is None:
            return None
        works = [work, *self.planner.take_group(work)]  # a fused group goes out as one Ray trial
        for w in works:  # its attempts start over
            trial_failures.clear(self._folder(w))
            remove_heartbeat(self._folder(w))
            withdraw_cancel(self._folder(w))
        self.works[trial_id] = works
        if self.on_change is not None:  # the progress line's count of running trials
            self.on_change()
        return {"works": [w.to_dict() for w in works], "queued": time.time()}  # the timeline's first mark

    def on_trial_complete(self, trial_id, result=None, error=False):
        works = self.works.pop(trial_id, None)
        if works and error:
            self.failing[trial_id] = works
        elif works:
            for work in works:
                trial_failures.clear(self._folder(work))  # a stall declared as it ended is no failure
                self.planner.finished(work)
            self._changed()

    def judge(self, trial_id: str, failures: int, reported: BaseException | None, report_text: str = "") -> None:
        """A Ray trial's retries ran out: record a failure of the config as the result, or stop the study."""
        works = self.failing.pop(trial_id, None)
        if not works:
            return
        for work in works:
            folder = self._folder(work)
            verdict = trial_failures.judge(folder, failures, reported)
            where = _keep_traceback(folder, report_text)
            label = work_label(work)
            times = {1: "once", 2: "twice"}.get(failures, f"{failures} times")
            if verdict.is_result:
                write_metrics(folder, trial_failures.error_metrics(work.trial_id, verdict))
                self.planner.finished(work, failed=True)
                self.say(f"trial {label} failed {times}: {verdict.cause}; recorded as its result, {verdict.why}; "
                         f"{where}")
            else:
                self.planner.finished(work)
                line = f"trial {label} failed {times}: {verdict.cause}; {verdict.why}; {where}"
                self.faults.append(line)
                self.say(line + "; the study stops when the trials running now end")
        self._changed()

    def _folder(self, work) -> Path:
        return trial_dir(self.planner.run_dir, work.trial_id)

    def _changed(self) -> None:
        self.planner.refresh()
        if self.on_change is not None:
            self.on_change()

    def __getstate__(self):
        # Ray pickles the searcher into its experiment snapshot; the run folder is the searcher's state,
        # and the live planner (database connections, the progress line) stays behind.
        return {}

    def save(self, checkpoint_path):  # the run folder is the searcher's state
        pass

    def restore(self, checkpoint_path):
        pass


class TrialErrors(Callback):
    """Hands the searcher what Ray knows of a trial whose retries ran out: how many attempts failed and the
    exception of the last one (the worker's own, unwrapped from Ray's RayTaskError, or Ray's word that the
    worker died)."""

    def __init__(self, searcher: PlannerSearch):
        self.searcher = searcher

    def on_trial_error(self, iteration, trials, trial, **info):
        reported, text = None, ""
        try:
            import cloudpickle

            if trial.pickled_error_file:
                with open(trial.pickled_error_file, "rb") as fh:
                    exc = cloudpickle.load(fh)
                text = str(exc)
                cause = getattr(exc, "cause", None)  # a RayTaskError carries the worker's own exception
                reported = cause if isinstance(cause, BaseException) else exc
        except Exception:  # noqa: BLE001  what Ray could not keep, the trial folder may still say
            pass
        self.searcher.judge(trial.trial_id, trial.num_failures, reported, text)


def work_label(work) -> str:
    """How a line names a trial: its id, stage, arm, and round, index and seed."""
    where = (f"round {work.round}, index {work.index}, seed {work.config.seed}" if work.round is not None
             else f"seed {work.config.seed}")
    return f"{work.trial_id} ({work.stage}, {work.arm}, {where})"


def _keep_traceback(folder: Path, report_text: str) -> str:
    """Where the failure's traceback is: the worker's error.txt, else what Ray reported, written there now."""
    path = error_text_path(folder)
    if not path.is_file() and report_text:
        try:
            write_error_text(folder, report_text + "\n")
        except OSError as exc:
            return f"its traceback could not be written to {path} ({exc.strerror or exc})"
    return f"traceback in {path}" if path.is_file() else "no traceback was kept"
