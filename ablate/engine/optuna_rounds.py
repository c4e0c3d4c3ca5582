"""Optuna for the study engine: one Optuna study per arm, asked and told round by round."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.spec.trial_config import TrialConfig

if TYPE_CHECKING:
    from ablate.engine.planner import Outcome
    from ablate.spec.study_spec import Study


@dataclass
class Proposal:
    round: int
    index: int
    params: dict[str, Any]
    config: TrialConfig

    @property
    def trial_id(self) -> str:
        return self.config.trial_id()


class ArmSampler:
    """One arm's Optuna study: a round's proposals are asked once (persisted with their round and index as
    user attributes) and told once, when the whole round is done."""

    def __init__(self, study: "Study", arm: str, storage_url: str, study_name: str, run_dir: Path):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.study, self.arm, self.run_dir = study, arm, run_dir
        self.ostudy = optuna.create_study(study_name=study_name, storage=optuna.storages.RDBStorage(storage_url),
                                          direction="maximize", load_if_exists=True)
        # What a dashboard shows of the study: whose arm it is, where its run folder lives, what proposed.
        for key, value in {"ablate_study": study.name, "arm": arm, "run_dir": str(run_dir.resolve()),
                           "sampler": study.sampler_text()}.items():
            if self.ostudy.user_attrs.get(key) != value:
                self.ostudy.set_user_attr(key, value)
        self.space = {p.name: _distribution(optuna, p) for p in study.space}
        self.arm_obj = next(a for a in study.arms if a.name == arm)

        # An ask cut short by a crash before its round was recorded leaves a trial that belongs to no round.
        for t in self.ostudy.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if "round" not in t.user_attrs or t.user_attrs.get("abandoned"):
                self._abandon(t)

    def _abandon(self, trial) -> None:
        if not trial.user_attrs.get("abandoned"):
            self.optuna.trial.Trial(self.ostudy, trial._trial_id).set_user_attr("abandoned", True)
        self.ostudy.tell(trial.number, state=self.optuna.trial.TrialState.FAIL)

    def _round_trials(self, number: int) -> list:
        trials = [t for t in self.ostudy.get_trials(deepcopy=False)
                  if t.user_attrs.get("round") == number and not t.user_attrs.get("abandoned")]
        return sorted(trials, key=lambda t: t.user_attrs["index"])

    def sampler(self, number: int):
        # A fresh sampler per round, seeded by (sampler seed, round): its proposals depend only on the
        # results already told, so asking a round again after a crash gives the same proposals.
        seed = (self.study.sampler_seed * 100_003 + number) % 2**32
        return self.optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.study.startup)

    def proposals(self, number: int, size: int) -> list[Proposal]:
        trials = self._round_trials(number)
        if len(trials) != size:
            # Never asked, or the asking was cut short by a crash: (re)ask the whole round.
            for t in trials:
                self._abandon(t)
            self.ostudy.sampler = self.sampler(number)
            trials = []
            for index in range(size):
                trial = self.ostudy.ask(self.space)
                params = dict(trial.params)
                cfg = self.study.arm_config(self.arm_obj, **params)
                # "round" goes last: a trial carries it only once everything else is recorded, so a crash
                # between these writes leaves a trial of no round, which is abandoned when the run resumes.
                for key, value in {"index": index, "arm": self.arm, "stage": "tune", "trial_id": cfg.trial_id(),
                                   "run_dir": str(self.run_dir.resolve()), "round": number}.items():
                    trial.set_user_attr(key, value)
                trials.append(self.ostudy._storage.get_trial(trial._trial_id))
        out = []
        for t in trials:
            params = {name: t.params[name] for name in self.space}
            out.append(Proposal(number, t.user_attrs["index"], params, self.study.arm_config(self.arm_obj, **params)))
        return out

    def tell(self, number: int, outcomes: list["Outcome"]) -> None:
        """Tell the round's results in index order: ok trials as complete with their best dev accuracy,
        diverged ones as complete with 0 (the worst outcome), halving-stopped ones as pruned (with their
        best dev accuracy so far at each evaluation), failed ones as failed."""
        State = self.optuna.trial.TrialState
        for t, outcome in zip(self._round_trials(number), outcomes):
            if t.state != State.RUNNING:
                continue
            if outcome.status == "stopped":
                live = self.optuna.trial.Trial(self.ostudy, t._trial_id)
                best = -math.inf
                for step, acc in enumerate(outcome.dev_acc, start=1):
                    best = max(best, acc)
                    live.report(best, step)
                self.ostudy.tell(t.number, state=State.PRUNED)
            elif outcome.status == "error":
                self.ostudy.tell(t.number, state=State.FAIL)
            else:
                self.ostudy.tell(t.number, max(0.0, outcome.value_at()))


def _distribution(optuna, p):
    if p.distribution == "choice":
        return optuna.distributions.CategoricalDistribution(list(p.choices))
    if p.distribution == "int":
        return optuna.distributions.IntDistribution(int(p.low), int(p.high))
    return optuna.distributions.FloatDistribution(p.low, p.high, log=p.distribution == "loguniform")
