"""What a study still has to run, decided in one place from the run folder and Optuna's storage.

The tuning stage of every arm proceeds in rounds of a fixed size (the spec's `search.round`). A
round's proposals are asked from a sampler seeded by (sampler seed, round number), after every
earlier round's results were told, so they depend on the spec and those results alone. Inside a
round, synchronous successive halving (`search.halving`) runs every live trial to the next rung (a
number of dev evaluations; the trial pauses there with a checkpoint), ranks them all, and lets the
best ceil(n / eta) go on from their checkpoints. When an arm's last round is done, its best
configuration is rerun over the confirm seeds. Nothing here depends on timing or on how many
trials run at once: a study gives the same trials on 1 CPU or 16, straight through or killed and
resumed. No Ray here; the study engine executes the `Work` items handed out by `Planner.next`.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ablate.spec.trial_config import TrialConfig, fusable
from ablate.errors import AblateError
from ablate.train.trial_files import CHECKPOINT, PAUSED
from ablate.atomic_files import atomic_write_text
from ablate.engine.run_folder import append_registry, read_metrics, read_registry, registry_key, registry_row
from ablate.engine.selection import best_params
from ablate.engine.optuna_rounds import ArmSampler, Proposal
from ablate.engine.storage import storage_url
from ablate.engine.seed_decisions import decided_seeds, remaining
from ablate.engine.trial_plan import PlannedTrial, plan_fixed_stage
from ablate.spec.study_spec import Study

FINISHED = "FINISHED"  # Planner.next: nothing is left to hand out and nothing is running
STAGE_ORDER = ("tune", "grid", "confirm")


@dataclass(frozen=True)
class Work:
    """One segment of one trial for the engine to run: to `stop_after_evals` evaluations (None: to the end),
    continuing from the trial folder's checkpoint when `resume`."""

    stage: str
    arm: str
    config: TrialConfig
    params: dict[str, Any]
    round: int | None = None
    index: int | None = None
    stop_after_evals: int | None = None
    resume: bool = False
    group: str | None = None  # trials of one group run fused, as one model batched over its members

    @property
    def trial_id(self) -> str:
        return self.config.trial_id()

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "arm": self.arm, "config": self.config.to_dict(), "params": self.params,
                "round": self.round, "index": self.index, "stop_after_evals": self.stop_after_evals,
                "resume": self.resume, "group": self.group}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Work":
        return cls(**{**data, "config": TrialConfig.from_dict(data["config"])})


@dataclass
class Outcome:
    """A trial folder as the planner sees it: new, paused at a rung, or final (ok/diverged/stopped/error)."""

    state: str
    status: str | None = None
    dev_acc: list[float] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state == "final"

    def value_at(self, rung: int | None = None) -> float:
        """Best dev accuracy over the first `rung` evaluations (all of them with None); -inf for a trial that
        diverged or failed, so that it never takes a place that a working trial could have."""
        if self.status in ("diverged", "error"):
            return -math.inf
        seen = self.dev_acc if rung is None else self.dev_acc[:rung]
        return max(seen, default=-math.inf)


def _dev_curve(folder: Path) -> list[float]:
    try:
        with open(folder / "curves.csv", newline="", encoding="utf-8") as fh:
            return [float(r["dev_acc"]) for r in csv.DictReader(fh) if r.get("dev_acc")]
    except (OSError, ValueError, KeyError):
        return []


def read_outcome(folder: Path, failed: bool = False) -> Outcome:
    """`failed`: this process has seen the trial's retries run out, so an error is final; otherwise an error
    left by an earlier process is run again (from its checkpoint, when it has one)."""
    metrics = read_metrics(folder)
    status = metrics.get("status") if metrics else None
    if status in ("ok", "diverged", "stopped") or (status == "error" and failed):
        return Outcome("final", status, _dev_curve(folder), metrics)
    try:
        paused = json.loads((folder / PAUSED).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        paused = None
    if isinstance(paused, dict) and (folder / CHECKPOINT).is_file():
        return Outcome("paused", None, list(paused.get("dev_acc") or []), paused)
    return Outcome("new")


class Planner:
    """Decides, from what the run folder holds, which trial segments can run now.

    `next()` hands out one Work (None: wait for a running one; FINISHED: the study is done);
    `finished(work, failed)` records that a handed-out segment ended (its folder says how).
    Every decision is recomputed from the folder, so a fresh planner over a half-finished run folder
    continues exactly where a killed one stopped.
    """

    def __init__(self, study: Study, run_dir: Path, storage: str | None = None, study_names: dict[str, str] | None = None,
                 fuse: int = 1):
        self.study, self.run_dir = study, Path(run_dir)
        self.fuse = fuse  # members per fused group (1: no fusing)
        self.trials_dir = self.run_dir / "trials"
        self.failed: set[str] = set()
        self.in_flight: dict[str, Work] = {}
        self.ready: list[Work] = []
        self.done = False
        self.dirty = True
        self.seeds, self.seeds_final = list(study.seeds), True
        self.rows = {registry_key(r): r for r in read_registry(self.run_dir)}
        self.arms = {a.name: a for a in study.arms}
        self.on_register = None  # called with (registry row, config) for each newly registered result
        self.optuna: dict[str, ArmSampler] = {}
        if study.space:
            names = study_names or {a.name: a.name for a in study.arms}
            url = storage_url(storage) if storage else f"sqlite:///{(self.run_dir / 'optuna.db').resolve()}"
            self.optuna = {a.name: ArmSampler(study, a.name, url, names[a.name], self.run_dir) for a in study.arms}

    # --- the engine's side ---------------------------------------------------------------------
    def next(self) -> Work | str | None:
        if self.dirty:
            self.refresh()
        for i, work in enumerate(self.ready):
            if work.trial_id not in self.in_flight:
                del self.ready[i]
                self.in_flight[work.trial_id] = work
                return work
        if self.done:
            return FINISHED
        if not self.in_flight:
            raise AblateError(f"the study in {self.run_dir} has work left but none can start; this is a bug in "
                              "ablate, please report it with the run folder")
        return None

    def take_group(self, work: Work) -> list[Work]:
        """The ready members of `work`'s fused group besides it, now handed out with it."""
        if work.group is None:
            return []
        mates = [w for w in self.ready if w.group == work.group and w.trial_id not in self.in_flight]
        for w in mates:
            self.ready.remove(w)
            self.in_flight[w.trial_id] = w
        return mates

    def finished(self, work: Work, failed: bool = False) -> None:
        """`failed`: the trial failed for a reason of its config, and its metrics.json records the error (a
        result). A failure of the machine is never reported here as failed: the trial stays unfinished."""
        self.in_flight.pop(work.trial_id, None)
        if failed:
            self.failed.add(work.trial_id)
        self.dirty = True

    def counts(self) -> dict[str, int]:
        """Registry rows per stage: what has finished so far."""
        out = {stage: 0 for stage in self.study.stages}
        for row in self.rows.values():
            out[row["stage"]] = out.get(row["stage"], 0) + 1
        return out

    # --- the decisions -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Recompute the ready work from the run folder (asking, telling, stopping and registering on the way)."""
        self.dirty = False
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
        self.done = complete and self.seeds_final and not self.in_flight

    def _plan(self) -> tuple[list[list[Work]], bool]:
        per_arm: list[list[Work]] = []
        complete = True
        if self.study.space:
            for arm in self.study.arms:
                work, tuned = self._tune_arm(arm.name)
                if tuned:
                    work += self._fixed(self._confirm_plan(arm.name))
                complete &= tuned and not work
                per_arm.append(work)
        else:
            plan = plan_fixed_stage(self.study, self.study.stages[-1], seeds=self.seeds)
            for arm in self.study.arms:
                work = self._fixed([p for p in plan if p.arm == arm.name])
                complete &= not work
                per_arm.append(work)
        return per_arm, complete

    def _tune_arm(self, arm: str) -> tuple[list[Work], bool]:
        """Ready tuning work of an arm, and whether its tuning is complete."""
        sampler = self.optuna[arm]
        earlier: dict[str, tuple[int, int]] = {}  # trial id -> (round, index) of its first proposal in this arm
        for number, size in enumerate(_round_sizes(self.study)):
            proposals = sampler.proposals(number, size)
            if proposals is None:
                return [], False  # cannot happen after a completed round; kept for safety
            work, done = self._round(arm, proposals, earlier)
            for p in proposals:
                earlier.setdefault(p.trial_id, (p.round, p.index))
            if not done:
                return work, False
            sampler.tell(number, [self._outcome(p.trial_id) for p in proposals])
        return [], True

    def _round(self, arm: str, proposals: list[Proposal], earlier: dict[str, tuple[int, int]]) -> tuple[list[Work], bool]:
        first: dict[str, Proposal] = {}
        for p in proposals:
            first.setdefault(p.trial_id, p)  # a repeated proposal shares its trial with the first one
        contenders = list(first)
        outcome = {t: self._outcome(t) for t in contenders}
        halving = self.study.halving
        longest = max(len(first[t].config.evaluation_steps()) for t in contenders)
        for rung in (halving.rungs(longest) if halving else []):
            if len(contenders) <= 1:
                break  # a lone contender always goes on: no need to pause it at the remaining rungs
            behind = [t for t in contenders if not outcome[t].final and len(outcome[t].dev_acc) < rung]
            if behind:
                return [self._work(arm, first[t], outcome[t], rung) for t in behind], False
            ranked = sorted(contenders, key=lambda t: (-outcome[t].value_at(rung), first[t].index))
            keep = set(ranked[: math.ceil(len(contenders) / halving.eta)])
            for t in contenders:
                if t not in keep and not outcome[t].final:
                    outcome[t] = self._stop(t, outcome[t], rung)
            contenders = [t for t in contenders if t in keep]
        behind = [t for t in contenders if not outcome[t].final]
        if behind:
            work = [self._work(arm, first[t], outcome[t], None) for t in behind]
            if not halving:  # trials that run from start to end in one piece can be fused
                groups = dict(zip(contenders, self._groups([first[t].config for t in contenders],
                                                          f"tune:{arm}:{proposals[0].round}")))
                work = [replace(w, group=groups[w.trial_id]) for w in work]
            return work, False
        for p in proposals:
            repeat = earlier.get(p.trial_id) or ((first[p.trial_id].round, first[p.trial_id].index)
                                                 if first[p.trial_id] is not p else None)
            self._register(PlannedTrial("tune", arm, p.config, dict(p.params)), outcome[p.trial_id],
                           round=p.round, index=p.index, repeat_of=repeat)
        return [], True

    def _work(self, arm: str, p: Proposal, outcome: Outcome, stop: int | None) -> Work:
        return Work("tune", arm, p.config, dict(p.params), p.round, p.index, stop, outcome.state == "paused")

    def _stop(self, trial_id: str, outcome: Outcome, rung: int) -> Outcome:
        """Halving stopped this trial at `rung`: its paused state becomes its final record."""
        folder = self.trials_dir / trial_id
        metrics = {**outcome.metrics, "status": "stopped", "stopped_at_evaluations": rung}
        metrics.pop("dev_acc", None)
        atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        (folder / CHECKPOINT).unlink(missing_ok=True)
        (folder / PAUSED).unlink(missing_ok=True)
        return Outcome("final", "stopped", outcome.dev_acc, metrics)

    def _confirm_plan(self, arm: str) -> list[PlannedTrial]:
        rows = [r for r in self.rows.values() if r["stage"] == "tune" and r["arm"] == arm]
        best = best_params(self.study, rows).get(arm)
        if best is None:
            return []  # no tuning trial of this arm finished: nothing to confirm
        return [p for p in plan_fixed_stage(self.study, "confirm", {arm: best}, seeds=self.seeds) if p.arm == arm]

    def _fixed(self, plan: list[PlannedTrial]) -> list[Work]:
        """Confirm or grid trials: each runs once, to the end; a config that already finished is reused."""
        groups = self._groups([p.config for p in plan], f"{plan[0].stage}:{plan[0].arm}" if plan else "")
        work = []
        for p, group in zip(plan, groups):
            outcome = self._outcome(p.trial_id)
            if outcome.final and outcome.status != "stopped":
                self._register(p, outcome)
            else:
                work.append(Work(p.stage, p.arm, p.config, dict(p.params), group=group))
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
        return read_outcome(self.trials_dir / trial_id, failed=trial_id in self.failed)

    def _register(self, planned: PlannedTrial, outcome: Outcome, round: int | None = None, index: int | None = None,
                  repeat_of: tuple[int, int] | None = None) -> None:
        row = registry_row(planned, outcome.metrics)
        if round is not None:
            row.update({"round": round, "index": index})
        if repeat_of is not None:
            row["repeat_of"] = list(repeat_of)  # a repeated proposal: this (round, index) ran the trial
        key = registry_key(row)
        old = self.rows.get(key)
        if old is None or any(old.get(k) != row.get(k) for k in ("status", "best_dev_acc", "test_acc")):
            append_registry(self.run_dir, row)
            self.rows[key] = row
            if self.on_register is not None:
                self.on_register(row, planned.config)

    def cleanup(self) -> None:
        """Checkpoints of trials that are final (left when a crash came between the final record and their
        removal) are only dead weight."""
        for path in self.trials_dir.glob(f"*/{CHECKPOINT}"):
            if read_outcome(path.parent).final:
                path.unlink(missing_ok=True)
                (path.parent / PAUSED).unlink(missing_ok=True)

    # --- read-only views -------------------------------------------------------------------------
    def remaining(self) -> dict[str, int]:
        return remaining(self.study, list(self.rows.values()))


def _round_sizes(study: Study) -> list[int]:
    full, rest = divmod(study.trials_per_arm, study.round_size)
    return [study.round_size] * full + ([rest] if rest else [])


def _interleave(groups: list[list[Work]]) -> list[Work]:
    out = []
    for i in range(max((len(g) for g in groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out
