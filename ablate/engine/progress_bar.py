"""The live progress line of a running study: finished trials per stage and the trials running now. tqdm.auto
draws it: a line on stderr in a terminal, a widget in a Jupyter notebook that has ipywidgets (else a text line).

The line is for the eyes only: where its reader has gone (`ablate study ... 2>&1 | tee log`, and Ctrl-C ended tee
first), it is dropped, never an error of the study's (which would take the place of the interruption)."""
from __future__ import annotations

import contextlib
import sys

from ablate.engine.planner import Planner
from ablate.spec import Study
from ablate.messages import closed_output, one_line


class Progress:
    """The live progress line: finished trials per stage (a tuning trial counts once, however many segments)."""

    def __init__(self, study: Study, planner: Planner):
        from tqdm.auto import tqdm

        self.study, self.planner = study, planner
        self.totals = self._totals()
        def bar():
            return tqdm(total=sum(self.totals.values()), desc=study.name, unit="trial", file=sys.stderr,
                        dynamic_ncols=True, initial=sum(planner.counts().values()))

        try:
            self.bar = bar()
        except BrokenPipeError:  # its first drawing found stderr's reader gone
            closed_output(sys.stderr)
            self.bar = bar()

    def _totals(self) -> dict[str, int]:
        """Trials per stage the study will have run: registered plus remaining (an adaptive seed rule that asks
        for more seeds raises them)."""
        registered = self.planner.counts()
        return {stage: registered.get(stage, 0) + n for stage, n in self.planner.remaining().items()}

    def refresh(self) -> None:
        self.totals = self._totals()
        self.bar.total = sum(self.totals.values())
        widget = getattr(self.bar, "container", None)  # a notebook's bar: its widget keeps the total it was drawn with
        if widget is not None:
            widget.children[-2].max = self.bar.total
        counts = self.planner.finished_counts()
        self.bar.n = sum(counts.values())
        stages = " ".join(f"{s} {counts.get(s, 0)}/{n}" for s, n in self.totals.items())
        with _unless_closed():
            self.bar.set_postfix_str(f"{stages} | running {len(self.planner.in_flight)}")

    def say(self, line: str) -> None:
        """One line above the progress line (passwords masked, control characters shown escaped)."""
        with _unless_closed():
            self.bar.write(one_line(line), file=sys.stderr)

    def close(self) -> None:
        with _unless_closed():
            self.bar.close()


@contextlib.contextmanager
def _unless_closed():
    """Writes to stderr that its reader may have left: then stderr goes to /dev/null and the write is dropped."""
    try:
        yield
    except BrokenPipeError:
        closed_output(sys.stderr)
