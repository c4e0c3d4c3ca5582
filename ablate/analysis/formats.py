"""How the report writes a number: accuracies and differences at the decimals a run's test set resolves (Fmt),
losses with three significant digits, p-values, hyperparameter values, and the mark of an interval cut at a bound.
Shared by the statistics' verdict reasons, the tables and the report's text."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .context import acc_digits
from .load import Run

CUT_MARK = "†"
CUT_NOTE = ("†: the 95 % t-interval reached past what is possible (below 0 or above 100 % accuracy, a loss below 0) "
            "and is cut at that bound, so it is shown as [low, high].")


def is_missing(x: Any) -> bool:
    """A value the run did not record (None) or could not compute (NaN)."""
    return x is None or (isinstance(x, float) and math.isnan(x))


@dataclass(frozen=True)
class Fmt:
    """Number formats for one run: `digits` decimals for accuracies and differences in %/pp."""

    digits: int = 1

    @classmethod
    def of(cls, run: Run) -> "Fmt":
        return cls(acc_digits(run))

    def acc(self, x: float) -> str:
        return "n/a" if is_missing(x) else f"{100 * x:.{self.digits}f}"

    def pct(self, x: float) -> str:
        return "n/a" if is_missing(x) else f"{self.acc(x)} %"

    def pp(self, x: float) -> str:
        if is_missing(x):
            return "n/a"
        v = round(100 * x, self.digits) + 0.0  # + 0.0 turns -0.0 into 0.0
        return f"{v:+.{self.digits}f}"

    def ci(self, low: float, high: float) -> str:
        return "n/a" if is_missing(low) else f"[{self.pp(low)}, {self.pp(high)}]"

    def pm(self, mean: float, low: float, high: float, cut: bool = False) -> str:
        """'mean ± half-width' of an accuracy in %, just the mean when there is no interval; an interval cut at 0 or
        100 % is no longer symmetric: 'mean [low, high]' and CUT_MARK."""
        if is_missing(mean):
            return "n/a"
        m = f"{100 * mean:.{self.digits}f}"
        if is_missing(low):
            return m
        if cut:
            return f"{m} [{100 * low:.{self.digits}f}, {100 * high:.{self.digits}f}]{CUT_MARK}"
        return f"{m} ± {100 * (high - low) / 2:.{self.digits}f}"


def _loss_decimals(x: float) -> int:
    return max(0, 2 - math.floor(math.log10(abs(x)))) if x and math.isfinite(x) else 3


def loss_pm(mean: float, low: float, high: float, cut: bool = False) -> str:
    if is_missing(mean):
        return "n/a"
    d = _loss_decimals(mean)
    if is_missing(low):
        return f"{mean:.{d}f}"
    if cut:
        return f"{mean:.{d}f} [{low:.{d}f}, {high:.{d}f}]{CUT_MARK}"
    return f"{mean:.{d}f} ± {(high - low) / 2:.{d}f}"


def fmt_param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def fmt_p(p: float) -> str:
    if is_missing(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_eq(p: float) -> str:
    """'p = 0.250', 'p < 0.001', 'p = n/a'."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"
