"""What a study still has to run, decided in one place from the run folder and Optuna's storage.

The tuning stage of every arm proceeds in rounds of a fixed size (the spec's `search.round`; a grid is one
round of all its points). A round's points are asked from a sampler seeded by (sampler seed, round number),
after every earlier round's results were told, so they depend on the spec and those results alone. Each point
trains under the study's tuning seeds and is scored by their mean (ablate.engine.selection). Inside a round,
synchronous successive halving (`search.halving`) runs every live point's trials to the next rung (a number of
dev evaluations; the trials pause there with a checkpoint), ranks the points, and lets the best ceil(n / eta)
go on from their checkpoints. When an arm's last round is done, its best point is rerun over the confirm seeds;
with `search.repeats`, the whole search runs again under the next sampler seeds, each repeat confirming its own
choice. Nothing here depends on timing or on how many trials run at once: a study gives the same trials on 1
CPU or 16, straight through or killed and resumed. No Ray here; the engine executes the TrialPlans handed out
by `Planner.next`.
"""
from __future__ import annotations

import functools
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ablate.engine.optuna_rounds import ArmSampler, PointOutcome, SearchPoint
from ablate.engine.seed_decisions import decided_seeds, remaining
from ablate.engine.selection import best_params, params_key, point_score, seed_result
from ablate.engine.storage import storage_url
from ablate.engine.trial_plan import TrialPlan, plan_fixed_stage
from ablate.errors import AblateError
from ablate.spec import Study, TrialConfig, fusable
from ablate.run_folder import (CURVES, REGISTERED_AT, append_registry, checkpointed, metrics_changed, optuna_db,
    read_curves, read_metrics, read_paused, read_registry, registry_key, registry_row, remove_paused, request_cancel,
    trial_dir, write_metrics)

FINISHED = "FINISHED"  # Planner.next: nothing is left to hand out and nothing is running


@dataclass
class Outcome:
    """A trial folder as the planner sees it: new, paused at a rung, or final (ok/diverged/stopped/error), with
    its dev curve so far."""

    state: str
    status: str | None = None
    dev_acc: list[float] = field(default_factory=list)
    dev_loss: list[float] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state == "final"

    def seed_result(self, rung: int | None = None):
        """This trial as one tuning seed of its point, over its first `rung` evaluations (all with None)."""
        cut = slice(None) if rung is None else slice(rung)
        return seed_result(self.status if self.final else None, self.dev_acc[cut], self.dev_loss[cut])


def _dev_curve(folder: Path) -> tuple[list[float], list[float]]:
    """Dev accuracy and loss of each evaluation so far (curves.csv: written by finished and paused trials); a loss
    the file leaves blank counts as infinite. Nothing, when the trial has no readable curves. The planner reads every
    trial's curve at each registration: a file is parsed again only once its inode, size or modification time
    changed (_parsed_dev_curve)."""
    path = folder / CURVES
    try:
        st = path.stat()
    except OSError:
        return [], []
    acc, loss = _parsed_dev_curve(str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    return list(acc), list(loss)


@functools.lru_cache(maxsize=10_000)
def _parsed_dev_curve(path: str, inode: int, size: int, mtime_ns: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The dev curve of the curves.csv at `path` as it is in that state of the file (the other arguments)."""
    try:
        curves = read_curves(Path(path).parent)
    except AblateError:
        curves = None
    evaluations = curves.evaluations() if curves is not None else []
    return (tuple(acc for _, _, acc in evaluations),
            tuple(math.inf if loss is None else loss for _, loss, _ in evaluations))


def read_outcome(folder: Path, failed: bool = False) -> Outcome:
    """`failed`: this process has seen the trial's retries run out, so an error is final; otherwise an error
    left by an earlier process is run again (from its checkpoint, when it has one)."""
    metrics = read_metrics(folder)
    status = metrics.get("status") if metrics else None
    if status in ("ok", "diverged", "stopped") or (status == "error" and failed):
        return Outcome("final", status, *_dev_curve(folder), metrics)
    paused = read_paused(folder)
    if paused is not None:
        acc, loss = _dev_curve(folder)
        acc = list(paused.get("dev_acc") or acc)
        return Outcome("paused", None, acc, (loss + [math.inf] * len(acc))[:len(acc)], paused)
    return Outcome("new")


class Planner:
    """Decides, from what the run folder holds, which trial segments can run now.

    `next()` hands out one TrialPlan (None: wait for a running one; FINISHED: the study is done);
    `finished(plan, failed)` records that a handed-out segment ended (its folder says how).
    Every decision is recomputed from the folder, so a fresh planner over a half-finished run folder
    continues exactly where a killed one stopped.
    """

    def __init__(self, study: Study, run_dir: Path, storage: str | None = None,
                 study_names: dict[tuple[str, int], str] | None = None, fuse: int = 1):
        self.study, self.run_dir = study, Path(run_dir)
        self.fuse = fuse  # members per fused group (1: no fusing)
        self.failed: set[str] = set()
        self.in_flight: dict[str, TrialPlan] = {}
        self.settled: set[str] = set()  # tuning trials finished (or stopped) whose round is not registered yet
        self.ready: list[TrialPlan] = []
        self.ahead: set[str] = set()  # trials handed out ahead of the seed rule's decision (see _ahead), by id
        self.confirming: list[tuple[str, int]] = []  # (arm, repeat) whose search is decided: their confirm seeds run
        self.done = False
        self.dirty = True
        self.seeds, self.seeds_final = list(study.seeds), True
        self.rows = {registry_key(r): r for r in read_registry(self.run_dir)}
        self.arms = {a.name: a for a in study.arms}
        self.on_register = None  # called with (registry row, config) for each newly registered result
        self.optuna: dict[tuple[str, int], ArmSampler] = {}
        if study.space:
            names = study_names or default_study_names(study)
            url = storage_url(storage) if storage else f"sqlite:///{optuna_db(self.run_dir).resolve()}"
            self.optuna = {(a.name, r): ArmSampler(study, a.name, url, names[(a.name, r)], self.run_dir, r)
                           for a in study.arms for r in range(study.repeats)}

    # --- the engine's side ---------------------------------------------------------------------
    def next(self) -> TrialPlan | str | None:
        if self.dirty:
            self.refresh()
        for i, work in enumerate(self.ready):
            if work.trial_id not in self.in_flight:
                del self.ready[i]
                self.in_flight[work.trial_id] = work
                return work
        if self.done:
            return FINISHED
        work = self._ahead()
        if work is not None:
            self.in_flight[work.trial_id] = work
            self.ahead.add(work.trial_id)
            return work
        if not self.in_flight:
            raise AblateError(f"the study in {self.run_dir} has work left but none can start; this is a bug in "
                              "ablate, please report it with the run folder")
        return None

    def take_group(self, work: TrialPlan) -> list[TrialPlan]:
        """The ready members of `work`'s fused group besides it, now handed out with it."""
        if work.group is None:
            return []
        mates = [w for w in self.ready if w.group == work.group and w.trial_id not in self.in_flight]
        for w in mates:
            self.ready.remove(w)
            self.in_flight[w.trial_id] = w
        return mates

    def finished(self, work: TrialPlan, failed: bool = False) -> None:
        """`failed`: the trial failed for a reason of its config, and its metrics.json records the error (a
        result). A failure of the machine is never reported here as failed: the trial stays unfinished."""
        self.in_flight.pop(work.trial_id, None)
        self.ahead.discard(work.trial_id)
        if failed:
            self.failed.add(work.trial_id)
        self.dirty = True

    def counts(self) -> dict[str, int]:
        """Registry rows per stage: what has finished so far."""
        out = {stage: 0 for stage in self.study.stages}
        for row in self.rows.values():
            out[row["stage"]] = out.get(row["stage"], 0) + 1
        return out

    def finished_counts(self) -> dict[str, int]:
        """What the progress line shows: registry rows per stage, and the tuning trials that have finished
        while their round is still running (a round is registered whole once its last trial ends)."""
        out = self.counts()
        registered = {row["trial_id"] for row in self.rows.values() if row["stage"] == "tune"}
        out["tune"] = out.get("tune", 0) + len(self.settled - registered)
        return out

    # --- the decisions -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Recompute the ready work from the run folder (asking, telling, stopping and registering on the way)."""
        self.dirty = False
        self.settled = set()
        while True:
            # An adaptive seed rule decides from the registered results how many seeds run; registering
            # results found on disk can move that decision on, so plan again until it settles.
            self.seeds = decided_seeds(self.study, list(self.rows.values()))[0]
            per_arm, complete = self._plan()
            seeds, self.seeds_final = decided_seeds(self.study, list(self.rows.values()))
            if seeds == self.seeds:
                break
        # Arms take turns, so every arm's rounds move on side by side.
        self.ready = _interleave(per_arm)
        if self.seeds_final:  # the rule is done: a seed run ahead of it that it did not ask for stops now
            decided = {p.trial_id for p in self._final_plans(self.seeds)}
            for trial_id in self.ahead - decided:
                request_cancel(trial_dir(self.run_dir, trial_id))
        self.done = complete and self.seeds_final and not self.in_flight

    def _plan(self) -> tuple[list[list[TrialPlan]], bool]:
        per_arm: list[list[TrialPlan]] = []
        complete = True
        self.confirming = []
        if self.study.space:
            for arm in self.study.arms:
                work: dict[str, TrialPlan] = {}  # by trial id: repeats that chose the same point share its trials
                for repeat in range(self.study.repeats):
                    tuning, tuned = self._tune_arm(arm.name, repeat)
                    if tuned:
                        self.confirming.append((arm.name, repeat))
                        tuning = self._fixed(self._confirm_plan(arm.name, repeat, self.seeds))
                    for plan in tuning:
                        work.setdefault(plan.trial_id, plan)
                    complete &= tuned
                complete &= not work
                per_arm.append(list(work.values()))
        else:
            plan = plan_fixed_stage(self.study, self.study.stages[-1], seeds=self.seeds)
            for arm in self.study.arms:
                work = self._fixed([p for p in plan if p.arm == arm.name])
                complete &= not work
                per_arm.append(work)
        return per_arm, complete

    def _tune_arm(self, arm: str, repeat: int) -> tuple[list[TrialPlan], bool]:
        """Ready tuning work of an arm's search (one repeat of it), and whether that search is complete."""
        sampler = self.optuna[(arm, repeat)]
        earlier: dict[str, tuple[int, int]] = {}  # params -> (round, index) of their first proposal in this search
        for number, size in enumerate(_round_sizes(self.study)):
            points = sampler.points(number, size)
            work, done = self._round(arm, repeat, points, earlier)
            for p in points:
                earlier.setdefault(params_key(p.params), (p.round, p.index))
            if not done:
                return work, False
            trials = self._point_trials(arm, repeat, points)
            sampler.tell(number, [self._point_outcome(trials[params_key(p.params)]) for p in points])
        return [], True

    def _point_trials(self, arm: str, repeat: int, points: list[SearchPoint]) -> dict[str, list[TrialPlan]]:
        """The trials of each distinct point of a round (one per tuning seed), by params; a point proposed again
        shares the trials of its first proposal."""
        out: dict[str, list[TrialPlan]] = {}
        for p in points:
            key = params_key(p.params)
            if key not in out:
                out[key] = [TrialPlan("tune", arm, self.study.trial_config(self.arms[arm], p.params, seed),
                                      dict(p.params), p.round, p.index, repeat)
                            for seed in self.study.tuning_seeds(repeat)]
        return out

    def _score(self, trials: list[TrialPlan], outcome: dict[str, Outcome], rung: int | None = None):
        first = trials[0]
        return point_score([outcome[t.trial_id].seed_result(rung) for t in trials], (first.round, first.index))

    def _point_outcome(self, trials: list[TrialPlan]) -> PointOutcome:
        """What Optuna is told of a finished point: complete with its score, pruned with its score after each
        evaluation (halving stopped it), or failed (every seed failed)."""
        outcomes = [self._outcome(t.trial_id) for t in trials]
        if any(o.status == "stopped" for o in outcomes):
            steps = min(len(o.dev_acc) for o in outcomes)
            curve = tuple(point_score([o.seed_result(i) for o in outcomes], (0, 0)).acc for i in range(1, steps + 1))
            return PointOutcome("pruned", curve=curve)
        if all(o.status == "error" for o in outcomes):
            return PointOutcome("failed")
        return PointOutcome("complete", point_score([o.seed_result() for o in outcomes], (0, 0)).acc)

    def _round(self, arm: str, repeat: int, points: list[SearchPoint],
               earlier: dict[str, tuple[int, int]]) -> tuple[list[TrialPlan], bool]:
        trials = self._point_trials(arm, repeat, points)
        contenders = list(trials)
        outcome = {t.trial_id: self._outcome(t.trial_id) for key in contenders for t in trials[key]}
        self.settled.update(i for i, o in outcome.items() if o.final)
        halving = self.study.halving
        longest = max(len(t.config.evaluation_steps()) for key in contenders for t in trials[key])
        for rung in (halving.rungs(longest) if halving else []):
            if len(contenders) <= 1:
                break  # a lone contender always goes on: no need to pause it at the remaining rungs
            behind = [t for key in contenders for t in trials[key]
                      if not outcome[t.trial_id].final and len(outcome[t.trial_id].dev_acc) < rung]
            if behind:
                return [t.segment(rung, outcome[t.trial_id].state == "paused") for t in behind], False
            ranked = sorted(contenders, key=lambda key: self._score(trials[key], outcome, rung).rank())
            keep = set(ranked[: math.ceil(len(contenders) / halving.eta)])
            for key in contenders:
                if key not in keep:
                    for t in trials[key]:
                        if not outcome[t.trial_id].final:
                            outcome[t.trial_id] = self._stop(t.trial_id, outcome[t.trial_id], rung)
                            self.settled.add(t.trial_id)
            contenders = [key for key in contenders if key in keep]
        behind = [t for key in contenders for t in trials[key] if not outcome[t.trial_id].final]
        if behind:
            work = [t.segment(None, outcome[t.trial_id].state == "paused") for t in behind]
            if not halving:  # trials that run from start to end in one piece can be fused
                every = [t for key in contenders for t in trials[key]]
                groups = dict(zip((t.trial_id for t in every),
                                  self._groups([t.config for t in every], f"tune:{arm}:{repeat}:{points[0].round}")))
                work = [replace(w, group=groups[w.trial_id]) for w in work]
            return work, False
        for p in points:
            key = params_key(p.params)
            first = trials[key][0]
            repeat_of = earlier.get(key) or ((first.round, first.index) if (first.round, first.index) != (p.round, p.index)
                                             else None)
            for t in trials[key]:
                self._register(replace(t, round=p.round, index=p.index), outcome[t.trial_id], repeat_of=repeat_of)
        return [], True

    def _stop(self, trial_id: str, outcome: Outcome, rung: int) -> Outcome:
        """Halving stopped this trial at `rung`: its paused state becomes its final record."""
        folder = trial_dir(self.run_dir, trial_id)
        metrics = {**outcome.metrics, "status": "stopped", "stopped_at_evaluations": rung}
        metrics.pop("dev_acc", None)
        write_metrics(folder, metrics)
        remove_paused(folder)
        return Outcome("final", "stopped", outcome.dev_acc, metrics)

    def _confirm_plan(self, arm: str, repeat: int, seeds: list[int]) -> list[TrialPlan]:
        best = best_params(self.study, list(self.rows.values()), repeat).get(arm)
        if best is None:
            return []  # no tuning trial of this arm finished: nothing to confirm
        return [p for p in plan_fixed_stage(self.study, "confirm", {arm: best}, seeds=seeds) if p.arm == arm]

    def _final_plans(self, seeds: list[int]) -> list[TrialPlan]:
        """The final stage's trials at `seeds`, of the arms that have reached it (a search study: those whose
        search is decided), in the plan's order."""
        if self.study.space:
            return [p for arm, repeat in self.confirming for p in self._confirm_plan(arm, repeat, seeds)]
        return plan_fixed_stage(self.study, self.study.stages[-1], seeds=seeds)

    def _ahead(self) -> TrialPlan | None:
        """A trial of the next seed the adaptive seed rule may ask for, handed out while nothing it has decided is
        left to hand out and a slot would otherwise wait for the rule's decision (the pilot's last trials, or the
        seeds it asked for, still running): each arm's trial at that seed in turn, one seed ahead, never more. Its
        result is registered only when the rule asks for its seed (the rule reads registered results alone, so
        nothing run ahead can sway it, and trials.csv is what it is on 1 CPU); when the rule stops without it, it
        is cancelled where it runs and its folder removed. None: nothing to run ahead."""
        rule = self.study.seed_rule
        if rule is None or self.seeds_final or len(self.seeds) >= len(self.study.seeds):
            return None  # next() asks only once nothing decided is left to hand out
        for plan in self._final_plans([self.study.seeds[len(self.seeds)]]):
            if plan.trial_id not in self.in_flight and self._outcome(plan.trial_id).state == "new":
                return plan
        return None

    def _fixed(self, plan: list[TrialPlan]) -> list[TrialPlan]:
        """Confirm or grid trials: each runs once, to the end; a config that already finished is reused."""
        groups = self._groups([p.config for p in plan], f"{plan[0].stage}:{plan[0].arm}" if plan else "")
        work = []
        for p, group in zip(plan, groups):
            outcome = self._outcome(p.trial_id)
            if outcome.final and outcome.status != "stopped":
                self._register(p, outcome)
            else:
                work.append(replace(p, group=group))
        return work

    def _groups(self, configs: list[TrialConfig], prefix: str) -> list[str | None]:
        """Fused groups over a plan, decided by the plan alone (finished trials included), so a resumed study
        fuses the same members together: consecutive runs of up to `fuse` trials that may be fused."""
        out: list[str | None] = [None] * len(configs)
        if self.fuse < 2:
            return out
        start, number = 0, 0
        while start < len(configs):
            end = start + 1
            while end < len(configs) and end - start < self.fuse and fusable(configs[start:end + 1]) is None:
                end += 1
            if end - start >= 2:
                out[start:end] = [f"{prefix}:{number}"] * (end - start)
                number += 1
            start = end
        return out

    def _outcome(self, trial_id: str) -> Outcome:
        return read_outcome(trial_dir(self.run_dir, trial_id), failed=trial_id in self.failed)

    def _register(self, plan: TrialPlan, outcome: Outcome, repeat_of: tuple[int, int] | None = None) -> None:
        row = registry_row(plan, outcome.metrics, repeats=self.study.repeats > 1)
        if plan.stage == "tune":
            result = outcome.seed_result()
            row["best_dev_loss"] = result.loss_at_best if math.isfinite(result.loss_at_best) else None
        if repeat_of is not None:
            row["repeat_of"] = list(repeat_of)  # a repeated proposal: this (round, index) ran the trial
        key = registry_key(row)
        old = self.rows.get(key)
        # A trial that ran again (after an error, or a lost metrics.json) is registered again even with the same
        # numbers: its row binds the files it left by their hashes.
        if old is None or any(old.get(k) != row.get(k) for k in ("status", "best_dev_acc", "test_acc")) \
                or metrics_changed(old, trial_dir(self.run_dir, plan.trial_id)):
            row[REGISTERED_AT] = time.time()  # the timeline's last mark (ablate.run_folder.timeline)
            row = append_registry(self.run_dir, row)  # with the hashes of the trial's files
            self.rows[key] = row
            if self.on_register is not None:
                self.on_register(row, plan.config)

    def cleanup(self) -> None:
        """Checkpoints of trials that are final (left when a crash came between the final record and their
        removal) are only dead weight; so are the folders of trials run ahead of the seed rule at seeds it did not
        ask for (one that ended as it was cancelled, or before a crash)."""
        for folder in list(checkpointed(self.run_dir)):
            if read_outcome(folder).final:
                remove_paused(folder)
        if self.study.seed_rule is not None:
            undecided = self.study.seeds[len(self.seeds):]
            for plan in self._final_plans(undecided) if undecided else []:
                shutil.rmtree(trial_dir(self.run_dir, plan.trial_id), ignore_errors=True)

    # --- read-only views -------------------------------------------------------------------------
    def remaining(self) -> dict[str, int]:
        return remaining(self.study, list(self.rows.values()))


def default_study_names(study: Study, prefix: str = "") -> dict[tuple[str, int], str]:
    """One Optuna study per arm and repeat of the search: the arm's name (and the repeat from the second on),
    after `prefix` (a shared database needs the study and run in it)."""
    return {(a.name, r): f"{prefix}{a.name}" + (f" (repeat {r})" if r else "") for a in study.arms
            for r in range(study.repeats)}


def _round_sizes(study: Study) -> list[int]:
    full, rest = divmod(study.trials_per_arm, study.round_size)
    return [study.round_size] * full + ([rest] if rest else [])


def _interleave(groups: list[list[TrialPlan]]) -> list[TrialPlan]:
    out = []
    for i in range(max((len(g) for g in groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out
