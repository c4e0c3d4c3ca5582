"""The search space of a study: its parameters and their distributions, and successive halving.

Every problem raises AblateError naming the spec (`source`) and what to write instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ablate.spec.reading import check_keys, check_setting_names, is_int, is_number, need



DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
SEARCH_KEYS = {"space", "sampler", "trials", "points", "round", "startup", "sampler_seed", "tuning_seeds", "repeats",
               "halving"}
SAMPLERS = ("tpe", "grid")
HALVING_KEYS = {"eta", "min_evals", "min_fraction"}
# Halving's first rung sits at half of training or later: earlier, every arm is still near chance and the ranking
# is noise (issue 17: 6.5-20 % dev accuracy at a 25 % rung, ties broken by proposal order).
MIN_RUNG_FRACTION = 0.5
# A search of this many points or fewer is ranked at its end: `halving: true` is off for it.
HALVING_MIN_POINTS = 9


@dataclass(frozen=True)
class Param:
    name: str
    distribution: str
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None


@dataclass(frozen=True)
class Halving:
    """Synchronous successive halving inside each round: every live search point runs to a rung (a number of
    dev evaluations), then only the best ceil(n / eta) go on. Rungs lie strictly before a trial's last
    evaluation, so a trial that runs all its steps is never recorded as stopped, and at or after
    `min_fraction` of its evaluations, so no point is judged while every arm is still near chance."""

    eta: int = 2
    min_evals: int = 2
    min_fraction: float = MIN_RUNG_FRACTION

    def rungs(self, evaluations: int) -> list[int]:
        """Rungs (evaluation counts) for trials of `evaluations` dev evaluations: evaluations / eta^j, rounded
        up, for j = 1, 2, ... while at least min_evals and min_fraction of `evaluations`, and below it."""
        floor = max(self.min_evals, math.ceil(self.min_fraction * evaluations))
        out, j = set(), 1
        while True:
            rung = math.ceil(evaluations / self.eta ** j)
            if rung < floor:
                return sorted(out)
            if rung < evaluations:
                out.add(rung)
            j += 1


def parse_halving(value: Any, source: str) -> Halving | None:
    if value is False or value is None:
        return None
    if value is True:
        return Halving()
    need(isinstance(value, dict), source, "search.halving must be true, false or {eta: 2, min_evals: 2, min_fraction: 0.5}")
    check_keys(value, HALVING_KEYS, source, "search.halving")
    halving = Halving(**{**Halving().__dict__, **value})
    need(is_int(halving.eta) and halving.eta >= 2, source, f"search.halving.eta must be an integer >= 2, got {halving.eta!r}")
    need(is_int(halving.min_evals) and halving.min_evals >= 1, source,
          f"search.halving.min_evals must be an integer >= 1, got {halving.min_evals!r}")
    fraction = halving.min_fraction
    need(is_number(fraction) and MIN_RUNG_FRACTION <= fraction < 1, source,
         f"search.halving.min_fraction (where the first rung may sit, as a fraction of training) must be from "
         f"{MIN_RUNG_FRACTION} to below 1, got {fraction!r}: earlier, every arm is still near chance")
    return Halving(halving.eta, halving.min_evals, float(fraction))


def grid_points(space: list[Param], points: int) -> list[dict[str, Any]]:
    """The points of a fixed grid over the space, in order (the first parameter varies slowest): a choice
    parameter takes all of its choices; a numeric one `points` values from low to high inclusive, evenly spaced
    (on a log scale for loguniform), rounded to 3 significant digits (ints to whole numbers, repeats removed)."""
    axes = []
    for p in space:
        if p.distribution == "choice":
            values = list(p.choices)
        elif p.distribution == "loguniform":
            values = [float(f"{p.low * (p.high / p.low) ** (i / (points - 1)):.3g}") for i in range(points)]
        elif p.distribution == "uniform":
            values = [float(f"{p.low + (p.high - p.low) * i / (points - 1):.3g}") for i in range(points)]
        else:
            values = [round(p.low + (p.high - p.low) * i / (points - 1)) for i in range(points)]
        axes.append((p.name, list(dict.fromkeys(values))))
    out: list[dict[str, Any]] = [{}]
    for name, values in axes:
        out = [{**point, name: v} for point in out for v in values]
    return out


def parse_space(search: Any, source: str, user_axes: bool = False) -> list[Param]:
    if search is None:
        return []
    need(isinstance(search, dict), source, f"search must be a mapping with {', '.join(sorted(SEARCH_KEYS))}")
    check_keys(search, SEARCH_KEYS, source, "search")
    space = search.get("space")
    need(isinstance(space, dict) and space, source, "search.space must name at least one parameter, e.g. lr: {distribution: loguniform, low: 0.001, high: 0.3}")
    check_setting_names(space, source, "search parameter(s)", user_axes)
    params = []
    for name, body in space.items():
        where = f"search.space.{name}"
        need(isinstance(body, dict), source, f"{where} must be a mapping with distribution and bounds")
        check_keys(body, {"distribution", "low", "high", "choices"}, source, where)
        dist = body.get("distribution")
        need(dist in DISTRIBUTIONS, source, f"{where}: unknown distribution {dist!r}; valid: {', '.join(DISTRIBUTIONS)}")
        if dist == "choice":
            choices = body.get("choices")
            need(isinstance(choices, list) and choices, source, f"{where}: choices must be a non-empty list")
            params.append(Param(name, dist, choices=tuple(choices)))
            continue
        low, high = body.get("low"), body.get("high")
        need(is_number(low) and is_number(high), source, f"{where}: low and high must be numbers")
        need(low < high, source, f"{where}: empty range, low ({low}) must be below high ({high})")
        if dist == "loguniform":
            need(low > 0, source, f"{where}: loguniform needs low > 0, got {low}")
        if dist == "int":
            need(float(low).is_integer() and float(high).is_integer(), source, f"{where}: int bounds must be whole numbers")
            params.append(Param(name, dist, int(low), int(high)))
        else:
            params.append(Param(name, dist, float(low), float(high)))
    return params
