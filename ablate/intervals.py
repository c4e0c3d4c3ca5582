"""Student-t intervals of paired differences: shared by the analysis and by the study engine's
adaptive confirmation (which must not import the analysis and its plotting libraries)."""
from __future__ import annotations

import math
from typing import Sequence


def t_half_width(diffs: Sequence[float], confidence: float = 0.95) -> float:
    """Half-width of the Student-t confidence interval of the mean of `diffs`; inf with fewer than 2."""
    from scipy import stats

    values = [float(d) for d in diffs if d is not None and math.isfinite(d)]
    n = len(values)
    if n < 2:
        return math.inf
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd / math.sqrt(n)
