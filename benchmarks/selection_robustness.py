"""How robust each way of choosing a learning rate is, per tuning trial spent: simulated on a measured table.

Give it the run folder of a grid study that trained every (arm, lr) under many seeds (e.g. `study lr-sweep`,
whose default budget runs residual and plain ResNet18 at 6 learning rates under 6 to 12 seeds), or several run
folders of one grid-searched study run under different sampler seeds (e.g. `study residual-ablation
--sampler-seed 0`, 1 and 2: their tuning trials, 3 seeds each, pool into 9 seeds at each of the 5 learning rates). Each simulated
search draws `k` of the measured seeds per learning rate as its tuning seeds, chooses each arm's learning rate by
a rule, and scores the choice on the seeds it did not draw (its confirm seeds): the paired difference of test
accuracy between the first two arms at their chosen learning rates. Repeated `--draws` times, this shows how much
the chosen learning rates and the answer move with tuning luck under each rule, and what the rule costs in
tuning trials (points x k per arm, which on a CPU is what the time is):

  max-1    the best single-seed dev accuracy (the rule issue 17 replaced; a TPE search of one seed per point
           ends at the same kind of choice)
  mean-k   the best mean dev accuracy over k tuning seeds (k = 2, 3): the study's own rule

Both choose as the study's selection does (ablate.analysis.statistics.search_points.choose_points, which `analyze` uses for
the report's search luck too): a seed that diverged counts 0 (ablate.engine.selection.SeedResult), ties go to the
earlier point (here the smaller learning rate; no dev loss is compared), a point whose drawn seeds all diverged is
never chosen.

  python benchmarks/selection_robustness.py RUN_DIR [RUN_DIR ...] [--draws 2000]

It prints, per rule, the share of draws that chose each arm's most frequent learning rate, the SD and the 5-95 %
range of the effect over draws, and the tuning trials per arm. Nothing is trained here.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ablate.analysis.statistics.search_points import choose_points  # noqa: E402
from ablate.run_folder.registry import read_registry  # noqa: E402
from ablate.engine.selection import SeedResult  # noqa: E402
from ablate.spec.reading import read_yaml  # noqa: E402
from ablate.spec.study_spec import parse_study  # noqa: E402


def table(run_dirs: list[Path]) -> tuple[list[str], list[float], list[int], dict]:
    """(arms, lrs, seeds, {(arm, lr, seed): (dev, test)}) of the finished grid or tuning trials (the learning rate
    their only searched parameter) measured at every point, pooled over the run folders."""
    cells = {}
    for run_dir in run_dirs:
        for r in read_registry(run_dir):
            if (r.get("stage") in ("grid", "tune") and r.get("status") in ("ok", "diverged")
                    and list(r.get("params") or {}) == ["lr"]):
                acc = r.get("best_dev_acc")
                dev = SeedResult(r["status"], float("-inf") if acc is None else float(acc))  # selection's view
                test = r.get("test_acc") if r["status"] == "ok" else None
                cells[(r["arm"], float(r["params"]["lr"]), r["seed"])] = (dev, test)
    arms = list(dict.fromkeys(a for a, _, _ in cells))
    spec = run_dirs[0] / "spec.yaml"
    if spec.exists():  # the spec's order of arms (residual before plain in the shipped studies)
        order = [a.name for a in parse_study(read_yaml(spec), source=str(spec)).arms]
        arms.sort(key=lambda a: order.index(a) if a in order else len(order))
    lrs = sorted({lr for _, lr, _ in cells})
    seeds = sorted(s for s in {s for _, _, s in cells} if all((a, lr, s) in cells for a in arms for lr in lrs))
    if len(arms) < 2 or len(seeds) < 4:
        raise SystemExit(f"{', '.join(map(str, run_dirs))}: needs 2 arms and at least 4 seeds at every lr "
                         f"(found arms {arms}, complete seeds {seeds})")
    return arms, lrs, seeds, cells


def choose(rule: str, arm: str, lrs: list[float], tuning: list[int], cells: dict) -> float | None:
    """The learning rate `rule` chooses for `arm` from the tuning seeds drawn, by the study's selection
    (search_points.choose_points; the lrs in ascending order are the tie order); None when every drawn seed of
    every learning rate diverged."""
    seeds = [[cells[(arm, lr, s)][0] for s in tuning] for lr in lrs]
    values = [[s.value for s in runs] for runs in seeds]
    score = [max(v) if rule == "max-1" else float(np.mean(v)) for v in values]
    eligible = [any(s.status not in ("diverged", "error") for s in runs) for runs in seeds]
    pick = int(choose_points(np.array([score]), np.array([eligible]))[0])
    return lrs[pick] if pick >= 0 else None


def simulate(rule: str, k: int, arms, lrs, seeds, cells, draws: int, rng) -> dict:
    chosen = defaultdict(Counter)
    effects = []
    for _ in range(draws):
        tuning = list(rng.choice(seeds, size=k, replace=False))
        confirm = [s for s in seeds if s not in tuning]
        picks = {a: choose(rule, a, lrs, tuning, cells) for a in arms[:2]}
        for a, lr in picks.items():
            chosen[a][lr] += 1  # None: no choice (every drawn seed diverged)
        if None in picks.values():
            continue
        diffs = [cells[(arms[0], picks[arms[0]], s)][1] - cells[(arms[1], picks[arms[1]], s)][1] for s in confirm
                 if cells[(arms[0], picks[arms[0]], s)][1] is not None and cells[(arms[1], picks[arms[1]], s)][1] is not None]
        if diffs:
            effects.append(100 * float(np.mean(diffs)))
    eff = np.array(effects)
    return {"rule": rule, "k": k, "trials_per_arm": len(lrs) * k,
            "mode_share": {a: max(c.values()) / draws for a, c in chosen.items()},
            "mode_lr": {a: c.most_common(1)[0][0] for a, c in chosen.items()},
            "no_choice": {a: c[None] / draws for a, c in chosen.items()},
            "effect_mean": eff.mean(), "effect_sd": eff.std(ddof=1), "effect_p5": np.percentile(eff, 5),
            "effect_p95": np.percentile(eff, 95)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    arms, lrs, seeds, cells = table(args.run_dirs)
    rng = np.random.default_rng(args.seed)
    print(f"{', '.join(map(str, args.run_dirs))}: arms {arms[0]} minus {arms[1]}, lrs {', '.join(f'{lr:g}' for lr in lrs)}, "
          f"{len(seeds)} seeds measured at every point; {args.draws} simulated searches per rule")
    print(f"{'rule':8s} {'trials/arm':>10s}  " + "  ".join(f"{a[:22]:>22s}" for a in arms[:2])
          + f"  {'effect pp: mean':>15s} {'SD':>6s} {'5-95 %':>15s}")
    rules = [("max-1", 1), ("mean-2", 2), ("mean-3", 3)]
    for rule, k in rules:
        if k > len(seeds) - 2:
            continue
        r = simulate("max-1" if rule == "max-1" else "mean", k, arms, lrs, seeds, cells, args.draws, rng)
        picks = "  ".join(f"{r['mode_lr'][a]:>9g} {100 * r['mode_share'][a]:5.1f} %".rjust(22) for a in arms[:2])
        print(f"{rule:8s} {r['trials_per_arm']:10d}  {picks}  {r['effect_mean']:15.1f} {r['effect_sd']:6.1f} "
              f"[{r['effect_p5']:+.1f}, {r['effect_p95']:+.1f}]")
    print("columns per arm: the learning rate chosen most often and the share of searches that chose it")


if __name__ == "__main__":
    main()
