"""The live progress line of a running study: finished trials per stage and the trials running now."""
from __future__ import annotations

import sys

from ablate.engine.planner import Planner
from ablate.spec.study_spec import Study
from ablate.messages import one_line


class Progress:
    """The live progress line: finished trials per stage (a tuning trial counts once, however many segments)."""

    def __init__(self, study: Study, planner: Planner):
        from tqdm import tqdm

        self.study, self.planner = study, planner
        self.totals = self._totals()
        self.bar = tqdm(total=sum(self.totals.values()), desc=study.name, unit="trial", file=sys.stderr,
                        dynamic_ncols=True, initial=sum(planner.counts().values()))

    def _totals(self) -> dict[str, int]:
        """Trials per stage the study will have run: registered plus remaining (an adaptive seed rule that asks
        for more seeds raises them)."""
        registered = self.planner.counts()
        return {stage: registered.get(stage, 0) + n for stage, n in self.planner.remaining().items()}

    def refresh(self) -> None:
        self.totals = self._totals()
        self.bar.total = sum(self.totals.values())
        counts = self.planner.finished_counts()
        self.bar.n = sum(counts.values())
        stages = " ".join(f"{s} {counts.get(s, 0)}/{n}" for s, n in self.totals.items())
        self.bar.set_postfix_str(f"{stages} | running {len(self.planner.in_flight)}")

    def say(self, line: str) -> None:
        """One line above the progress line (passwords masked, control characters shown escaped)."""
        self.bar.write(one_line(line), file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
