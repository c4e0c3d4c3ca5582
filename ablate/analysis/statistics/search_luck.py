"""The search's luck, measured: how much the effect (the paired test-accuracy difference arm A − arm B at the
configurations the search chose) moves with the luck of the search, and how optimistic the search's score of its own
choice was. Torch-free.

search_luck(run), one row per compared pair (ablate.spec.study_spec.compared_pairs), columns LUCK_COLUMNS:

- luck_method "repeats" (the spec ran `search.repeats` > 1): luck_sd_pp is the SD over the repeats of the effect
  each repeat's own choice gave on the confirm runs (tuning_budget.repeats); luck_off_1pp_share the share of the
  other repeats whose effect differs from the answer's (repeat 0) by more than OFF_PP; luck_draws the repeats with
  an effect. Repeats that chose the same configurations reran the very same confirm trials, so they agree by
  construction: agreement across repeats is not independent evidence.
- luck_method "replay" (one search, its points trained under several tuning seeds): a plug-in simulation on the
  run's own tuning trials. Per arm and search point (ablate.analysis.statistics.search_points), the tuning seeds' mean dev
  accuracy of those that did not fail, their share that failed, and their mean test accuracy (a failed seed at
  chance, as the report scores a failed run) are taken as the truth; the noise of one tuning seed's dev accuracy is
  the SD within points, pooled over the pair's stable points (every seed ran to the end without failing and none
  fell below halfway from its arm's best point score to chance, the collapse rule of ablate.analysis.statistics.collapse).
  DRAWS fresh searches (generator seed REPLAY_SEED) give every point as many fresh tuning seeds as it had, each
  failing with the point's failure share (scored 0, as selection scores it) or drawing its dev accuracy from a
  normal around the truth (cut to [0, 1]), and choose each arm's point by the study's own rule
  (search_points.choose_points: the highest mean, ties to the lower mean dev loss then the earlier point, never a
  point whose seeds all failed). luck_sd_pp is the SD over the searches of (effect at the chosen points − effect at
  the truly best points), effects taken as differences of the true test means, so the confirm runs' own noise (in
  the effect's CI already) is not counted twice; the truly best points are those selection chooses from the truth,
  i.e. the points the run chose. luck_off_1pp_share is the share of searches off by more than OFF_PP. Points
  stopped by halving are left out (they have no full-length result). A TPE search proposed its points adaptively:
  a fresh search would propose other points, so a replay over the points it proposed is an approximation, and
  luck_note says so.
- luck_method "none": luck_note says why (no search, one tuning seed per point, no stable point, ...).

selection_optimism(run), one row per arm, columns OPTIMISM_COLUMNS: the chosen point's score in the search (the mean
over its tuning seeds of the best dev accuracy, a failed seed 0) minus the mean best dev accuracy of the confirm
runs of that same point (fresh seeds, scored alike), in percentage points, with the runs behind each.

The report's lines on both are search_luck_text's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ablate.run_folder import read_registry
from ablate.engine import FAILED
from ablate.spec import compared_pairs
from . import stats
from ..context import chance
from ..load import Run
from .search_points import Point, chosen, choose_points, search_points, tie_order
from .tuning_budget import repeats

DRAWS = 10_000      # simulated searches per compared pair
REPLAY_SEED = 0     # numpy generator seed of the replay (the same numbers on every analysis of a run)
MAX_CELLS = 2_000_000  # simulated (search, point) scores held at once: a large search is replayed in blocks
OFF_PP = 1.0        # a search is "off" when its effect is more than this many percentage points from the truth's
LUCK_COLUMNS = ["arm_a", "arm_b", "luck_sd_pp", "luck_off_1pp_share", "luck_method", "luck_draws", "luck_note"]
OPTIMISM_COLUMNS = ["arm", "tuning_dev_pp", "confirm_dev_pp", "optimism_pp", "tuning_runs", "confirm_runs"]
TPE_CAVEAT = ("the TPE search proposed its points adaptively, from the results of earlier rounds, and a fresh search "
              "would propose other points: replaying the selection over the points this one proposed is an "
              "approximation")
PLUG_IN_CAVEAT = "plug-in replay: the tuning trials' means are taken as the truth"


@dataclass
class Noise:
    sd: float            # pooled within-point SD of one tuning seed's dev accuracy (fraction)
    points: int          # stable points it was pooled over
    df: int              # degrees of freedom: sum over those points of (seeds - 1)


@dataclass
class Luck:
    """One compared pair's luck, with what the report says about how it was measured."""

    arm_a: str
    arm_b: str
    method: str                      # "repeats", "replay" or "none"
    sd: float = math.nan             # fraction
    off_share: float = math.nan
    draws: int = 0
    note: str = ""
    mean_offset: float = math.nan    # replay: mean of (chosen - best); repeats: nan
    best_effect: float = math.nan    # replay: the effect at the truly best points (tuning test means)
    noise: Noise | None = None
    seeds: tuple[int, int] = (0, 0)  # replay: fewest and most tuning seeds per point
    points: tuple[int, int] = (0, 0)  # replay: points of arm A and arm B replayed
    effects: list[float] | None = None  # repeats: the effect of each repeat, in order

    def row(self) -> dict:
        return {"arm_a": self.arm_a, "arm_b": self.arm_b, "luck_sd_pp": 100 * self.sd,
                "luck_off_1pp_share": self.off_share, "luck_method": self.method, "luck_draws": self.draws,
                "luck_note": self.note}


def _noise(groups: list[list[Point]], level: float) -> Noise | None:
    """The within-point SD of one tuning seed's dev accuracy, pooled over the stable points of the given arms."""
    ss, df, count = 0.0, 0, 0
    for points in groups:
        usable = [p for p in points if p.eligible and p.complete]
        if not usable:
            continue
        best = max(p.score.acc for p in usable)
        if not best > level:
            continue  # an arm at chance everywhere: no typical run to measure the spread of
        floor = level + (best - level) / 2
        for p in usable:
            values = np.array([s.value for s in p.seeds])
            if len(values) < 2 or any(p.failed) or values.min() < floor:
                continue
            ss += float(((values - values.mean()) ** 2).sum())
            df += len(values) - 1
            count += 1
    return Noise(math.sqrt(ss / df), count, df) if df else None


def _truth_test(p: Point, level: float) -> float:
    values = [level if bad else t for bad, t in zip(p.failed, p.tests)]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _simulate(points: list[Point], sd: float, rng: np.random.Generator, draws: int) -> np.ndarray:
    """The point each of `draws` fresh searches chooses among `points` (in tie order): an index, -1 for none. The
    searches run in blocks of at most MAX_CELLS // points, so memory stays bounded however large the search."""
    out = np.empty(draws, dtype=int)
    block = max(1, MAX_CELLS // max(1, len(points)))
    for start in range(0, draws, block):
        rows = min(block, draws - start)
        scores = np.empty((rows, len(points)))
        eligible = np.empty((rows, len(points)), dtype=bool)
        for j, p in enumerate(points):
            k = len(p.seeds)
            ok = [s.value for s in p.seeds if s.status not in FAILED]
            fails = rng.random((rows, k)) < 1 - len(ok) / k
            dev = np.clip(rng.normal(float(np.mean(ok)) if ok else 0.0, sd, (rows, k)), 0.0, 1.0)
            scores[:, j] = np.where(fails, 0.0, dev).mean(axis=1)
            eligible[:, j] = ~fails.all(axis=1)
        out[start:start + rows] = choose_points(scores, eligible)
    return out


def _none(a: str, b: str, why: str) -> Luck:
    return Luck(a, b, "none", note=why)


def _replay(run: Run, a: str, b: str, points: list[Point], level: float) -> Luck:
    per_arm = {arm: [p for p in points if p.arm == arm] for arm in (a, b)}
    empty = [arm for arm in (a, b) if not per_arm[arm]]
    if empty:
        return _none(a, b, f"arm {empty[0]} has no tuning trial that ended")
    if max((len(p.seeds) for arm in (a, b) for p in per_arm[arm]), default=0) < 2:
        return _none(a, b, "each search point ran under one tuning seed, so the tuning trials hold no spread of dev "
                           "accuracy at a point to replay the search with (search.tuning_seeds: 3, or search.repeats, "
                           "measures it)")
    noise = _noise([per_arm[a], per_arm[b]], level)
    if noise is None:
        return _none(a, b, "no search point of either arm had two or more tuning seeds that all ran to the end within "
                           "reach of the arm's best point (none stable), so there is no spread to replay with")
    replayed: dict[str, list[Point]] = {}
    for arm in (a, b):
        full = [p for p in per_arm[arm] if p.complete]
        replayed[arm] = [full[i] for i in tie_order(full)]
        if not any(p.eligible for p in replayed[arm]):
            return _none(a, b, f"arm {arm} has no search point that ran to the end without every seed failing")
    tests = {arm: np.array([_truth_test(p, level) for p in replayed[arm]]) for arm in (a, b)}
    best = {arm: replayed[arm].index(chosen(replayed[arm])[(arm, 0)]) for arm in (a, b)}
    best_effect = float(tests[a][best[a]] - tests[b][best[b]])
    if not math.isfinite(best_effect):
        return _none(a, b, "the tuning trials of the chosen points recorded no test accuracy")
    rng = np.random.default_rng(REPLAY_SEED)
    pick = {arm: _simulate(replayed[arm], noise.sd, rng, DRAWS) for arm in (a, b)}
    ok = (pick[a] >= 0) & (pick[b] >= 0)
    effect = np.full(DRAWS, np.nan)
    effect[ok] = tests[a][pick[a][ok]] - tests[b][pick[b][ok]]
    diff = effect[np.isfinite(effect)] - best_effect
    if diff.size < 2:
        return _none(a, b, "too few simulated searches chose a point with a test accuracy in both arms")
    notes = [PLUG_IN_CAVEAT]
    if run.study.sampler != "grid":
        notes.append(TPE_CAVEAT)
    stopped = sum(not p.complete for arm in (a, b) for p in per_arm[arm])
    if stopped:
        notes.append(f"{stopped} point(s) stopped by halving left out")
    if diff.size < DRAWS:
        notes.append(f"{DRAWS - diff.size} of {DRAWS:,} searches chose no point with a test accuracy in one arm and "
                     "are left out")
    counts = [len(p.seeds) for arm in (a, b) for p in replayed[arm]]
    return Luck(a, b, "replay", float(np.std(diff, ddof=1)), float(np.mean(np.abs(diff) > OFF_PP / 100 + 1e-12)),
                int(diff.size), "; ".join(notes), float(np.mean(diff)), best_effect, noise, (min(counts), max(counts)),
                (len(replayed[a]), len(replayed[b])))


def _from_repeats(a: str, b: str, effects: pd.DataFrame) -> Luck:
    g = effects[(effects["arm_a"] == a) & (effects["arm_b"] == b)].sort_values("repeat")
    values = [float(x) for x in g["diff"] if x is not None and math.isfinite(x)]
    if len(values) < 2:
        return _none(a, b, f"the search was repeated, but only {len(values)} repeat(s) have an effect for this pair "
                           "(confirm runs of both arms' choices)")
    answer = values[0] if math.isfinite(float(g["diff"].iloc[0])) else math.nan
    others = np.array(values[1:]) if math.isfinite(answer) else np.array([])
    off = float(np.mean(np.abs(others - answer) > OFF_PP / 100 + 1e-12)) if others.size else math.nan
    return Luck(a, b, "repeats", stats.std(values), off, len(values),
                "repeats that chose the same configurations reran the same confirm trials, so their agreement is "
                "not independent evidence", effects=[float(x) for x in g["diff"]])


def lucks(run: Run) -> list[Luck]:
    """Per compared pair, its Luck (see the module's docstring)."""
    pairs = [(a, b) for a, b in compared_pairs(run.study)]
    if not run.study.space:
        why = ("a fixed grid (grid:) reports each arm at its best point over the same seeds it scores; there is no "
               "separate search to replay" if run.study.grid else "no search: the spec fixed every configuration")
        return [_none(a, b, why) for a, b in pairs]
    if run.study.legacy:
        return [_none(a, b, "an older ablate's asynchronous search, whose proposals depended on timing: not replayed")
                for a, b in pairs]
    reps = repeats(run)
    if reps is not None:
        return [_from_repeats(a, b, reps.effects) for a, b in pairs]
    points = search_points(run.study, read_registry(run.run_dir), repeat=0)
    level = chance(run)
    return [_replay(run, a, b, points, level) for a, b in pairs]


def search_luck(run: Run) -> pd.DataFrame:
    """One row per compared pair: arm_a, arm_b, luck_sd_pp (the SD of the effect with the search's luck, percentage
    points), luck_off_1pp_share (share of searches, or of repeats, off by more than 1 pp), luck_method ("repeats",
    "replay" or "none"), luck_draws (simulated searches, or repeats, behind it) and luck_note (why none, or the
    approximation's caveat). Deterministic: the replay's generator is seeded (REPLAY_SEED) and its draws fixed
    (DRAWS)."""
    return pd.DataFrame([x.row() for x in lucks(run)], columns=LUCK_COLUMNS)


def _same(a: dict, b: dict) -> bool:
    """Two parameter sets are the same point (floats equal to 12 significant digits: a value read back from a
    table is the value proposed)."""
    if set(a) != set(b):
        return False
    for k, x in a.items():
        y = b[k]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if float(f"{float(x):.12g}") != float(f"{float(y):.12g}"):
                return False
        elif x != y:
            return False
    return True


def selection_optimism(run: Run) -> pd.DataFrame:
    """One row per arm (spec order) with a chosen search point: arm, tuning_dev_pp (the chosen point's mean dev
    accuracy over its tuning seeds, a failed seed 0: the score that chose it, in %), confirm_dev_pp (the mean best
    dev accuracy of the confirm runs of that same point, fresh seeds, a failed run 0, in %), optimism_pp (their
    difference: positive when the search's score of its own choice was optimistic), tuning_runs, confirm_runs.
    Empty for a study without a search."""
    if not run.study.space or run.study.legacy:
        return pd.DataFrame(columns=OPTIMISM_COLUMNS)
    points = search_points(run.study, read_registry(run.run_dir), repeat=0)
    rows = []
    for arm in run.arm_names:
        params = run.selected.get(arm)
        point = next((p for p in points if p.arm == arm and params is not None and _same(p.params, params)), None)
        if point is None:
            continue
        conf = run.reported[run.reported["arm"] == arm].drop_duplicates("trial_id")
        failed = conf["status"].isin(FAILED)
        dev = conf["best_dev_acc"].clip(lower=0.0).where(~failed, 0.0)
        dev = dev[(failed | (conf["status"] == "ok")) & dev.notna()]
        tuning = point.score.acc
        confirm = float(dev.mean()) if len(dev) else math.nan
        rows.append({"arm": arm, "tuning_dev_pp": 100 * tuning, "confirm_dev_pp": 100 * confirm,
                     "optimism_pp": 100 * (tuning - confirm), "tuning_runs": len(point.seeds), "confirm_runs": len(dev)})
    return pd.DataFrame(rows, columns=OPTIMISM_COLUMNS)
