"""Factorial answers: each factor's effect at each level of the others, and the interaction of two factors.

A *factor* is a spec factor (or a varied setting of an explicit arm list) or a grid parameter; a *cell*
is one combination of factor levels, i.e. an arm (and, in a grid study, one grid point), with its test
accuracies per seed. The effect of factor F at level l is, at fixed levels of the other factors, cell
(F = l) minus the cell at F's reference level (False for a true/false factor, else its first listed
value), paired by seed: mean paired difference, 95 % t-interval, exact sign-flip test, Holm-corrected
within F's family (all effects of F). A nested factor (one with `requires`) is absent from the cells
that do not satisfy its requirement; such a cell matches any level of it, so in the `where` study
each residual arm is compared with the one plain arm.

The interaction of two crossed factors (the focus F, usually `residual`, and the other G) is the
difference of F's effects between G's levels, paired by seed: for two levels of G the difference of
differences; for three or more numeric levels the per-seed least-squares slope of F's effect against
G (against log10 G when G's levels span a factor of 10 or more, e.g. learning rates), with its
t-interval and sign-flip test over seeds and whether the mean effect is monotone in G (a slope
describes nothing else; the report then gives the effect at each level instead), and the
difference of differences between G's last and first level; for three or more categorical levels the difference of differences of each level
against the first, Holm-corrected together.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import stats
from .compare import verdict
from ..load import Run

EFFECT_COLUMNS = ["factor", "level", "reference", "context", "arm", "reference_arm", "n_pairs", "seeds", "diff",
                  "ci_low", "ci_high", "ci_cut", "sd", "p_sign_flip", "sign_flip_exact", "min_p", "p_holm", "verdict", "why",
                  "diffs"]  # diffs: the per-seed paired differences (for the figure; not written to effects.csv)
INTERACTION_COLUMNS = ["focus", "level", "other", "kind", "contrast", "unit", "n_seeds", "seeds", "estimate",
                       "ci_low", "ci_high", "p_sign_flip", "sign_flip_exact", "min_p", "monotone", "p_holm"]


def key(value: Any) -> str:
    """A hashable, order-stable name for a factor level (levels may be lists, e.g. residual_stages)."""
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class Cell:
    arm: str
    levels: dict[str, Any]                      # factor -> level, only the factors this cell sets
    acc: dict[int, float] = field(default_factory=dict)   # seed -> test accuracy

    def name(self, grid: list[str]) -> str:
        point = ",".join(f"{g}={self.levels[g]:g}" if isinstance(self.levels[g], float) else f"{g}={self.levels[g]}"
                         for g in grid if g in self.levels)
        return f"{self.arm} @ {point}" if point else self.arm


@dataclass
class Design:
    factors: list[str]
    levels: dict[str, list]                     # factor -> levels in spec order
    cells: list[Cell]
    grid: list[str]

    def reference(self, factor: str) -> Any:
        values = self.levels[factor]
        return False if any(v is False for v in values) else values[0]

    @property
    def focus(self) -> str:
        return "residual" if "residual" in self.factors else self.factors[0]


def design(run: Run) -> Design | None:
    """The run's factorial design, or None when it has fewer than two factors (a single-factor study)."""
    study = run.study
    grid = list(study.grid)
    factors = list(study.factor_names) + grid
    if len(factors) < 2:
        return None
    levels: dict[str, list] = {}
    raw = study.raw.get("factors") or {}
    for f in study.factor_names:
        body = raw.get(f)
        values = body if isinstance(body, list) else (body or {}).get("values")
        if values is None:  # an explicit arm list: the values in order of appearance
            values = [a.settings[f] for a in study.arms if f in a.settings]
        levels[f] = list({key(v): v for v in values}.values())
    for g in grid:
        levels[g] = list(study.grid[g])
    if grid:
        rows = run.trials[(run.trials["stage"] == run.final_stage) & (run.trials["status"] == "ok")
                          & run.trials["test_acc"].notna()]
    else:
        rows = run.ok
    cells = []
    for arm in study.arms:
        set_here = {f: arm.settings[f] for f in study.factor_names if f in arm.settings}
        points = study.grid_points() if grid else [{}]
        for point in points:
            sel = rows[rows["arm"] == arm.name]
            for g, v in point.items():
                sel = sel[np.isclose(sel[g].astype(float), float(v))] if isinstance(v, (int, float)) else sel[sel[g] == v]
            acc = {int(s): float(a) for s, a in zip(sel["seed"], sel["test_acc"])}
            cells.append(Cell(arm.name, {**set_here, **point}, acc))
    return Design(factors, levels, cells, grid)


def _matches(cell: Cell, ref: Cell, factor: str) -> bool:
    """ref is cell's counterpart at factor's reference level: every other factor ref sets, cell sets equally."""
    return all(g in cell.levels and key(cell.levels[g]) == key(v) for g, v in ref.levels.items() if g != factor)


def _cell(d: Design, name: str) -> Cell:
    return next(c for c in d.cells if c.name(d.grid) == name)


def _pairs(a: Cell, b: Cell) -> tuple[list[int], np.ndarray]:
    seeds = sorted(set(a.acc) & set(b.acc))
    return seeds, np.array([a.acc[s] - b.acc[s] for s in seeds])


def effects(d: Design) -> pd.DataFrame:
    """Every factor's effect at every combination of the other factors' levels (see the module docstring)."""
    rows = []
    for factor in d.factors:
        ref_level = d.reference(factor)
        family = []
        for cell in d.cells:
            if factor not in cell.levels or key(cell.levels[factor]) == key(ref_level):
                continue
            refs = [c for c in d.cells if factor in c.levels and key(c.levels[factor]) == key(ref_level)
                    and _matches(cell, c, factor)]
            if len(refs) != 1:
                continue  # no counterpart (an unbalanced design) or several (ambiguous): no effect to state
            ref = refs[0]
            seeds, diffs = _pairs(cell, ref)
            p = stats.paired_diff(diffs, np.zeros_like(diffs))
            low, high, cut = stats.cut_to(p.low, p.high, -1.0, 1.0)  # a difference of accuracies lies in [-1, 1]
            context = {g: v for g, v in cell.levels.items() if g != factor}
            family.append({"factor": factor, "level": cell.levels[factor], "reference": ref_level, "context": context,
                           "arm": cell.name(d.grid), "reference_arm": ref.name(d.grid), "n_pairs": p.n,
                           "seeds": " ".join(map(str, seeds)), "diff": p.mean, "ci_low": low, "ci_high": high,
                           "ci_cut": cut, "sd": p.sd, "p_sign_flip": p.p_sign_flip, "sign_flip_exact": p.sign_flip_exact,
                           "min_p": p.min_p, "diffs": diffs.tolist()})
        holm = stats.holm([r["p_sign_flip"] for r in family])
        for r, ph in zip(family, holm):
            r["p_holm"] = ph
            r["verdict"], r["why"] = verdict({"n_pairs": r["n_pairs"], "diff_ci_low": r["ci_low"],
                                              "diff_ci_high": r["ci_high"], "min_p": r["min_p"],
                                              "sign_flip_exact": r["sign_flip_exact"], "p_holm": ph, "image_pairs": 0,
                                              "arm_a": r["arm"], "arm_b": r["reference_arm"], "diff": r["diff"]},
                                             multiple=len(family) > 1)
        rows += family
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


def is_numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def log_scale(values: list) -> bool:
    """Levels spread geometrically (all positive, the largest at least 10x the smallest): slopes per decade."""
    return is_numeric(values) and min(values) > 0 and max(values) / min(values) >= 10


def trend_unit(factor: str, values: list) -> tuple[str, float]:
    """(words, step) for a slope against a numeric factor: per tenfold increase, per even step, else per unit."""
    if log_scale(values):
        return f"per tenfold increase of {factor}", 1.0
    gaps = np.diff(sorted(float(v) for v in values))
    if len(gaps) and np.allclose(gaps, gaps[0]):
        step = float(gaps[0])
        what = "added layers" if factor == "depth" else factor
        return f"per {step:g} {what}", step
    return f"per unit of {factor}", 1.0


def _slopes(x: np.ndarray, per_seed: dict[int, dict[str, float]], level_keys: list[str]) -> tuple[list[int], np.ndarray]:
    seeds = [s for s, e in per_seed.items() if all(k in e for k in level_keys)]
    xc = x - x.mean()
    out = [float(np.dot(xc, [per_seed[s][k] for k in level_keys]) / np.dot(xc, xc)) for s in seeds]
    return seeds, np.array(out)


def monotone(values: list[float]) -> bool:
    """Whether a sequence (the mean effect at increasing levels) never turns: rising, falling or flat throughout.
    A linear trend describes only such an effect; 13.8 / 35.2 / 58.2 / 27.5 pp is not one."""
    steps = np.diff(np.asarray(values, dtype=float))
    tol = 1e-12 * max(1.0, float(np.nanmax(np.abs(values)))) if len(values) else 0.0
    return bool(np.all(steps >= -tol) or np.all(steps <= tol))


def interactions(d: Design, eff: pd.DataFrame) -> pd.DataFrame:
    """The interaction of the focus factor with the one other factor, when there are exactly two and they cross."""
    if len(d.factors) != 2 or eff.empty:
        return pd.DataFrame(columns=INTERACTION_COLUMNS)
    focus = d.focus
    other = next(f for f in d.factors if f != focus)
    mine = eff[eff["factor"] == focus]
    levels = d.levels[other]
    rows = []
    for level_key, group in mine.groupby(mine["level"].map(key), sort=False):
        by_other = {key(r.context.get(other)): r for r in group.itertuples() if other in r.context}
        if len(by_other) != len(levels) or not all(key(v) in by_other for v in levels):
            continue  # not crossed: the focus factor's effect is not measured at every level of the other
        if not all(other in _cell(d, r.reference_arm).levels for r in by_other.values()):
            continue  # nested: one reference cell serves every level, so the "interaction" is just the other's effect
        # Per seed, the focus effect at each level of the other factor, recomputed from the cells.
        per_seed: dict[int, dict[str, float]] = {}
        for lv in levels:
            r = by_other[key(lv)]
            cell, ref = _cell(d, r.arm), _cell(d, r.reference_arm)
            for s in set(cell.acc) & set(ref.acc):
                per_seed.setdefault(s, {})[key(lv)] = cell.acc[s] - ref.acc[s]
        level = group["level"].iloc[0]
        base = {"focus": focus, "level": level, "other": other}

        def dod(a: Any, b: Any) -> dict:
            seeds = sorted(s for s, e in per_seed.items() if key(a) in e and key(b) in e)
            dd = np.array([per_seed[s][key(a)] - per_seed[s][key(b)] for s in seeds])
            p = stats.paired_diff(dd, np.zeros_like(dd))
            return {**base, "kind": "difference of differences", "contrast": f"{other} {a} minus {other} {b}",
                    "unit": "", "n_seeds": p.n, "seeds": " ".join(map(str, seeds)), "estimate": p.mean,
                    "ci_low": p.low, "ci_high": p.high, "p_sign_flip": p.p_sign_flip,
                    "sign_flip_exact": p.sign_flip_exact, "min_p": p.min_p}

        if len(levels) == 2:
            rows.append(dod(levels[1], levels[0]))
        elif is_numeric(levels):
            x = np.array([math.log10(v) if log_scale(levels) else float(v) for v in levels])
            unit, step = trend_unit(other, levels)
            seeds, slopes = _slopes(x, per_seed, [key(v) for v in levels])
            p = stats.paired_diff(slopes * step, np.zeros_like(slopes))
            rows.append({**base, "kind": "linear trend", "contrast": f"slope of the effect against {other}",
                         "unit": unit, "n_seeds": p.n, "seeds": " ".join(map(str, seeds)), "estimate": p.mean,
                         "ci_low": p.low, "ci_high": p.high, "p_sign_flip": p.p_sign_flip,
                         "sign_flip_exact": p.sign_flip_exact, "min_p": p.min_p,
                         "monotone": monotone([by_other[key(v)].diff for v in sorted(levels)])})
            order = sorted(levels)
            rows.append(dod(order[-1], order[0]))
        else:
            rows += [dod(lv, levels[0]) for lv in levels[1:]]
    out = pd.DataFrame(rows, columns=INTERACTION_COLUMNS)
    out["p_holm"] = stats.holm(out["p_sign_flip"].tolist()) if len(out) else []
    return out


@dataclass
class Factorial:
    design: Design
    effects: pd.DataFrame
    interactions: pd.DataFrame


def factorial(run: Run) -> "Factorial | None":
    """Each factor's effects and the interaction, for a study of two or more factors (grid parameters count)."""
    d = design(run)
    if d is None:
        return None
    eff = effects(d)
    return Factorial(d, eff, interactions(d, eff))
