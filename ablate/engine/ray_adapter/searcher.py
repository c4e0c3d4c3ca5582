"""Ray Tune extension point: the searcher that hands out the planner's work.

Imported only when a study runs, so that importing ablate never imports Ray.
"""
from __future__ import annotations

from ray.tune.search import Searcher

from ablate.engine.planner import FINISHED, Planner


class PlannerSearch(Searcher):
    """Every Ray trial is one TrialPlan of the planner: a tuning proposal's segment up to its rung, a confirm
    run or a grid point. The searcher holds no state of its own (the run folder does), so save/restore are
    no-ops and a resumed study is a fresh searcher over the same folder."""

    def __init__(self, planner: Planner, on_change=None):
        super().__init__(metric="best_dev_acc", mode="max")
        self.planner, self.on_change = planner, on_change
        self.works = {}

    def suggest(self, trial_id):
        work = self.planner.next()
        if work == FINISHED:
            return Searcher.FINISHED
        if work is None:
            return None
        works = [work, *self.planner.take_group(work)]  # a fused group goes out as one Ray trial
        self.works[trial_id] = works
        return {"works": [w.to_dict() for w in works]}

    def on_trial_complete(self, trial_id, result=None, error=False):
        works = self.works.pop(trial_id, None)
        if works:
            for work in works:
                self.planner.finished(work, failed=error)
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
