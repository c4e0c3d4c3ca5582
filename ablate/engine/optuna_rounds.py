"""Optuna for the study engine: one Optuna study per arm (and per repeat of the search), asked and told round by
round. Only Optuna's public API is used: the study's own methods, and the storage object the engine opened."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ablate.spec import Study


@dataclass(frozen=True)
class SearchPoint:
    """A point of the search space proposed for an arm: round `round`, position `index` in it."""

    round: int
    index: int
    params: dict[str, Any]


@dataclass(frozen=True)
class PointOutcome:
    """What a finished round tells Optuna of one point: `complete` with its score (the mean best dev accuracy
    over its tuning seeds, a diverged seed counting 0), `pruned` by halving with its score after each
    evaluation up to its rung, or `failed` (every seed failed)."""

    state: str
    value: float | None = None
    curve: tuple[float, ...] = ()


class ArmSampler:
    """One arm's Optuna study (for one repeat of the search): a round's points are asked once (persisted with
    their round and index as user attributes) and told once, when the whole round is done."""

    def __init__(self, study: "Study", arm: str, storage_url: str, study_name: str, run_dir: Path, repeat: int = 0):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.study, self.arm, self.run_dir, self.repeat = study, arm, run_dir, repeat
        self.storage = optuna.storages.RDBStorage(storage_url)
        self.ostudy = optuna.create_study(study_name=study_name, storage=self.storage, direction="maximize",
                                          load_if_exists=True)
        self.study_id = self.storage.get_study_id_from_name(study_name)
        self.asked: dict[int, list[SearchPoint]] = {}  # rounds read or asked in full, by number
        self.told: set[int] = set()  # rounds whose every point is told
        # What a dashboard shows of the study: whose arm it is, where its run folder lives, what proposed.
        for key, value in {"ablate_study": study.name, "arm": arm, "repeat": repeat, "run_dir": str(run_dir.resolve()),
                           "sampler": study.sampler_text()}.items():
            if self.ostudy.user_attrs.get(key) != value:
                self.ostudy.set_user_attr(key, value)
        if study.sampler == "grid":  # exactly the grid's values, whatever rounding made of the bounds
            self.space = {p.name: optuna.distributions.CategoricalDistribution(
                list(dict.fromkeys(point[p.name] for point in study.search_points))) for p in study.space}
        else:
            self.space = {p.name: _distribution(optuna, p) for p in study.space}

        # An ask cut short by a crash before its round was recorded leaves a trial that belongs to no round.
        for t in self.ostudy.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if "round" not in t.user_attrs or t.user_attrs.get("abandoned"):
                self._abandon(t)

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def _abandon(self, trial) -> None:
        if not trial.user_attrs.get("abandoned"):
            self.storage.set_trial_user_attr(self._trial_id(trial.number), "abandoned", True)
        self.ostudy.tell(trial.number, state=self.optuna.trial.TrialState.FAIL)

    def _round_trials(self, number: int) -> list:
        trials = [t for t in self.ostudy.get_trials(deepcopy=False)
                  if t.user_attrs.get("round") == number and not t.user_attrs.get("abandoned")]
        return sorted(trials, key=lambda t: t.user_attrs["index"])

    def sampler(self, number: int):
        # A fresh sampler per round, seeded by (sampler seed, round): its proposals depend only on the
        # results already told, so asking a round again after a crash gives the same proposals.
        seed = ((self.study.sampler_seed + self.repeat) * 100_003 + number) % 2**32
        return self.optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.study.startup)

    def points(self, number: int, size: int) -> list[SearchPoint]:
        # A round asked in full never changes (only an ask cut short is asked again, here): read from the storage
        # once, not at each of the planner's registrations.
        if number in self.asked and len(self.asked[number]) == size:
            return list(self.asked[number])
        trials = self._round_trials(number)
        if len(trials) == size:
            self.asked[number] = [SearchPoint(number, t.user_attrs["index"],
                                              {name: t.params[name] for name in self.space}) for t in trials]
            return list(self.asked[number])
        # Never asked, or the asking was cut short by a crash: (re)ask the whole round.
        for t in trials:
            self._abandon(t)
        self.ostudy.sampler = self.sampler(number)
        out = []
        for index in range(size):
            if self.study.sampler == "grid":
                self.ostudy.enqueue_trial(self.study.search_points[number * self.study.round_size + index])
            trial = self.ostudy.ask(self.space)
            params = {name: trial.params[name] for name in self.space}
            arm = next(a for a in self.study.arms if a.name == self.arm)
            ids = [self.study.trial_config(arm, params, seed).trial_id() for seed in self.study.tuning_seeds(self.repeat)]
            # "round" goes last: a trial carries it only once everything else is recorded, so a crash
            # between these writes leaves a trial of no round, which is abandoned when the run resumes.
            for key, value in {"index": index, "arm": self.arm, "repeat": self.repeat, "stage": "tune",
                               "trial_id": ids[0], "trial_ids": ids, "run_dir": str(self.run_dir.resolve()),
                               "round": number}.items():
                trial.set_user_attr(key, value)
            out.append(SearchPoint(number, index, params))
        return out

    def tell(self, number: int, outcomes: list[PointOutcome]) -> None:
        """Tell the round's points in index order (see PointOutcome); a point told already is left alone."""
        if number in self.told:
            return
        State = self.optuna.trial.TrialState
        trials = self._round_trials(number)
        for t, outcome in zip(trials, outcomes):
            if t.state != State.RUNNING:
                continue
            if outcome.state == "pruned":
                trial_id = self._trial_id(t.number)
                for step, value in enumerate(outcome.curve, start=1):
                    self.storage.set_trial_intermediate_value(trial_id, step, value)
                self.ostudy.tell(t.number, state=State.PRUNED)
            elif outcome.state == "failed":
                self.ostudy.tell(t.number, state=State.FAIL)
            else:
                self.ostudy.tell(t.number, outcome.value)
        if len(trials) == len(outcomes):
            self.told.add(number)  # every point of the round is told: nothing is left to tell


def _distribution(optuna, p):
    if p.distribution == "choice":
        return optuna.distributions.CategoricalDistribution(list(p.choices))
    if p.distribution == "int":
        return optuna.distributions.IntDistribution(int(p.low), int(p.high))
    return optuna.distributions.FloatDistribution(p.low, p.high, log=p.distribution == "loguniform")
