"""Runs one work item of the planner (a trial segment, or a fused group of trials) and writes its trial folder:
a paused segment's checkpoint, or a finished trial. Knows nothing of Ray.
"""
from __future__ import annotations

import errno
import shutil
import time
from pathlib import Path
from typing import Any

from ablate.engine import fault_hook, liveness, memory_faults, trial_failures
from ablate.engine.trial_plan import TrialPlan
from ablate.run_folder import (TIMELINE, read_checkpoint, read_paused, timeline_segment, timeline_segments, trial_dir,
    write_config)
from ablate.spec import TrialConfig


def trial_device(gpu_ids: list) -> str:
    """The device Ray allocated to this trial: its GPU when it was given a share of one, else the CPU
    (whatever else the machine has: a trial with no GPU share must not use one)."""
    return "cuda" if gpu_ids else "cpu"


def trial_folder(run_dir: str | Path, trial_id: str, config: TrialConfig) -> Path:
    """run_dir/trials/<trial_id>, made if missing, with the trial's config.yaml (before anything runs, so that a
    trial that fails still says what it was); never written through a symbolic link. One that is a link (put
    there while the study ran: a resume refuses it before anything runs) fails as a fault of the machine (OSError),
    so that the study stops for a resume rather than recording the trial's config as failed."""
    folder = trial_dir(run_dir, trial_id)
    for path in (folder.parent, folder):
        if path.is_symlink():
            raise OSError(errno.ELOOP, f"{path} is a symbolic link; a trial's results are never written through one")
    folder.mkdir(parents=True, exist_ok=True)
    write_config(folder, config)
    return folder


def _timeline(earlier: list[dict[str, float]], queued: float | None, entered: float, result,
              written: float) -> dict[str, Any]:
    """metrics.json's (or paused.json's) timeline: the earlier segments', then this one's
    (ablate.run_folder.timeline)."""
    return {TIMELINE: [*earlier, timeline_segment(queued, entered, result.marks, written)]}


def run_work(work: TrialPlan, run_dir: str | Path, data_dir: str | None, device: str = "cpu",
             where: dict[str, Any] | None = None, keep: bool | None = None, queued: float | None = None):
    """Run one TrialPlan and write its trial folder: a paused segment (checkpoint) or a finished trial; its result,
    or None when the study cancelled it (liveness.TrialCancelled: its folder is removed).
    Knows nothing of Ray; the trainable below adds where the trial ran. `queued`: when the planner handed the
    work out (time.time()), the first mark of its timeline."""
    from ablate.train import run_trial, write_paused, write_trial_folder

    entered = time.time()
    cfg = work.config
    folder = trial_folder(run_dir, work.trial_id, cfg)
    where = {"started_at": entered, **(where or {})}
    # A continuation starts from the checkpoint the last segment left; when there is none (lost or
    # damaged), the trial starts over, which gives the same numbers, only later.
    checkpoint = read_checkpoint(folder) if work.resume else None
    earlier = timeline_segments(read_paused(folder)) if checkpoint is not None else []
    # By default final-stage runs keep their best-dev weights (for the lesion study), tuning runs none.
    keep = work.stage in ("confirm", "grid") if keep is None else keep
    beat = liveness.Heartbeat(folder, where, cfg.total_steps())  # the study watches it (ablate.engine.liveness)
    try:
        fault_hook.strike([work], "start", beat)
        result = run_trial(cfg, data_dir=data_dir, device=device, keep_best_state=keep,
                           stop_after_evals=work.stop_after_evals, resume=checkpoint, beat=beat)
        extra = {**where, "ended_at": time.time()}
        beat("writing the trial folder", result.steps)
        fault_hook.strike([work], "write")
        if result.status == "paused":
            write_paused(folder, cfg, result, extra=extra, timeline=lambda: _timeline(earlier, queued, entered,
                                                                                       result, time.time()))
        else:
            write_trial_folder(folder, cfg, result, extra=extra, plot=False, weights=keep,
                               timeline=lambda: _timeline(earlier, queued, entered, result, time.time()))
    except liveness.TrialCancelled:
        # A seed run ahead that the seed rule did not ask for: nothing of it is kept (ablate.engine.planner).
        shutil.rmtree(folder, ignore_errors=True)
        return None
    except Exception as exc:
        # Recorded for the engine, then raised so that Ray retries the trial (FailureConfig); once the retries
        # are spent the engine judges whether the failure is the config's (ablate.engine.trial_failures).
        trial_failures.record_attempt(folder, exc, {"device": device, **where,
                                                    **memory_faults.facts(exc, device, beat.place())})
        raise
    finally:
        beat.close()
    trial_failures.clear(folder)
    return result


def run_works(works: list[TrialPlan], run_dir: str | Path, data_dir: str | None, device: str = "cpu",
              where: dict[str, Any] | None = None, keep_stages: tuple[str, ...] = ("confirm", "grid"),
              queued: float | None = None) -> list:
    """One TrialPlan alone, or the members of a fused group as one model (ablate.train.fused): each member's trial folder
    holds the files it would write alone (not the same numbers: fusing rounds differently) and, as fused_with in
    metrics.json (and so in the registry and trials.csv), the ids of the trials it was fused with. [] when the study
    cancelled the one trial (a fused group is never run ahead of the seed rule, so never cancelled)."""
    if len(works) == 1:
        result = run_work(works[0], run_dir, data_dir, device, where, keep=works[0].stage in keep_stages, queued=queued)
        return [] if result is None else [result]
    from ablate.train import run_fused, write_trial_folder

    entered = time.time()
    where = {"started_at": entered, **(where or {})}
    folders = [trial_folder(run_dir, w.trial_id, w.config) for w in works]
    beat = liveness.Heartbeat(folders[0], where, works[0].config.total_steps())  # one per Ray trial: the first's
    try:
        fault_hook.strike(works, "start", beat)
        results = run_fused([w.config for w in works], device=device, data_dir=data_dir,
                            keep_best_state=any(w.stage in keep_stages for w in works), beat=beat)
        ids = [w.trial_id for w in works]
        beat("writing the trial folder", max(r.steps for r in results))
        fault_hook.strike(works, "write")
        for work, folder, result in zip(works, folders, results):
            extra = {**where, "ended_at": time.time(), "fused_with": [i for i in ids if i != work.trial_id]}
            write_trial_folder(folder, work.config, result, extra=extra, plot=False, weights=work.stage in keep_stages,
                               timeline=lambda: _timeline([], queued, entered, result, time.time()))
    except Exception as exc:
        facts = memory_faults.facts(exc, device, beat.place())
        for folder in folders:
            trial_failures.record_attempt(folder, exc, {"device": device, **where, **facts})
        raise
    finally:
        beat.close()
    for folder in folders:
        trial_failures.clear(folder)
    return results
