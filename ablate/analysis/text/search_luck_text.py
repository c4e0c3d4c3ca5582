"""The report's lines on the search's luck and the selection's optimism (search_luck's numbers): what was computed
and on what, with a table of each."""
from __future__ import annotations

import math

import pandas as pd

from ..formats import Fmt, fmt_param
from ..load import Run
from ..markdown_text import code
from ..statistics.search_luck import DRAWS, OFF_PP, REPLAY_SEED, TPE_CAVEAT, Luck, lucks, selection_optimism


def _sd(f: Fmt, x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.{f.digits}f}"


def _share(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.0f} %"


def luck_lines(run: Run, found: list[Luck] | None = None) -> list[str]:
    """The search-luck paragraph and table."""
    f = Fmt.of(run)
    found = lucks(run) if found is None else found
    if not found:
        return []
    lines = ["Search luck: how far the effect (A − B at the configurations the search chose) moves with the luck of "
             "the search itself, which the effect's CI does not cover (Bouthillier et al. 2021). Full precision: "
             "`search_luck.csv`.", ""]
    methods = {x.method for x in found}
    if "repeats" in methods:
        n = max(x.draws for x in found)
        lines.append(f"Measured from the {n} repeats of the search (search.repeats): the SD over the repeats of the "
                     f"effect each repeat's own choice gave on the {run.final_stage} runs; off by > {OFF_PP:g} pp: the "
                     "share of the other repeats whose effect differs from the answer's (repeat 0) by more. Repeats "
                     "that chose the same configurations reran the very same confirm trials, so their agreement is "
                     "not independent evidence.")
    replays = [x for x in found if x.method == "replay"]
    if replays:
        x = replays[0]
        seeds = f"{x.seeds[0]}" if x.seeds[0] == x.seeds[1] else f"{x.seeds[0]}–{x.seeds[1]}"
        noise = "; ".join(f"{code(r.arm_a)} / {code(r.arm_b)}: {_sd(f, r.noise.sd)} pp over {r.noise.points} points "
                          f"({r.noise.df} degrees of freedom)" for r in replays)
        lines.append(
            f"Measured by replaying the selection on this run's own tuning trials (a plug-in simulation): per arm and "
            f"search point, the tuning seeds' mean dev accuracy, their share that failed and their mean test accuracy "
            f"(a failed seed at chance) are taken as the truth; one tuning seed's dev accuracy scatters around it with "
            f"the SD within points pooled over the pair's stable points (every seed ran to the end without failing, "
            f"none below halfway from its arm's best point to chance): {noise}. {DRAWS:,} fresh searches (numpy "
            f"generator seed {REPLAY_SEED}) give every point {seeds} fresh tuning seeds (as many as it had), a seed "
            f"failing with the point's failure share and then scored 0, and choose each arm's point by the study's "
            f"own rule (the highest mean dev accuracy over the tuning seeds; ties to the lower mean dev loss, then "
            f"the earlier point; never a point whose seeds all failed). The luck is the SD over those searches of the "
            f"effect at the chosen points minus the effect at the truly best ones (the points this run chose), both "
            f"as differences of the true test means, so the {run.final_stage} runs' own noise, which the CI covers, "
            f"is not counted again; off by > {OFF_PP:g} pp: the share of searches further off than that.")
        if run.study.sampler != "grid":
            lines.append(f"Caveat: {TPE_CAVEAT}.")
        if any("halving" in r.note for r in replays):
            lines.append("Points stopped by halving are left out of the replay (they have no full-length result).")
    lines += ["", "| arm A | arm B | measured by | luck SD (pp) | off by > 1 pp | searches | note |",
              "|---|---|---|---:|---:|---:|---|"]
    for x in found:
        how = {"repeats": "repeats of the search", "replay": "replay of the selection", "none": "not measured"}[x.method]
        note = x.note
        if x.method == "replay":
            note = (f"effect at the truly best points {f.pp(x.best_effect)} pp; mean offset of the chosen "
                    f"{f.pp(x.mean_offset)} pp")
        elif x.method == "repeats" and x.effects:
            note = "effects " + ", ".join(f.pp(e) for e in x.effects) + " pp"
        lines.append(f"| {code(x.arm_a, table=True)} | {code(x.arm_b, table=True)} | {how} | {_sd(f, x.sd)} | "
                     f"{_share(x.off_share)} | {f'{x.draws:,}' if x.draws else '—'} | {note.replace('|', '/')} |")
    return lines


def optimism_lines(run: Run, table: pd.DataFrame | None = None) -> list[str]:
    """The selection-optimism paragraph and table."""
    f = Fmt.of(run)
    table = selection_optimism(run) if table is None else table
    if table.empty:
        return []
    lines = [f"Selection optimism: per arm, the chosen point's mean dev accuracy over its tuning seeds (the score "
             f"that chose it) minus the mean best dev accuracy its {run.final_stage} runs reached with fresh seeds "
             "(both scored as selection scores a run: one that diverged or failed counts 0). Positive: the search "
             "overrated its own choice, as the best of several noisy scores tends to be. Full precision: "
             "`selection_optimism.csv`.", "",
             f"| arm | chosen | tuning dev (%) | tuning runs | {run.final_stage} dev (%) | {run.final_stage} runs | "
             "optimism (pp) |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in table.itertuples():
        params = ", ".join(f"{k} = {fmt_param(v)}" for k, v in (run.selected.get(r.arm) or {}).items())
        lines.append(f"| {code(r.arm, table=True)} | {params} | {f.acc(r.tuning_dev_pp / 100)} | {r.tuning_runs} | "
                     f"{f.acc(r.confirm_dev_pp / 100)} | {r.confirm_runs} | {f.pp(r.optimism_pp / 100)} |")
    return lines


def search_luck_lines(run: Run) -> list[str]:
    """The report's lines on the search's luck and the selection's optimism (empty for a study without a search)."""
    if not run.study.space:
        return []
    luck, optimism = luck_lines(run), optimism_lines(run)
    return luck + ([""] if luck and optimism else []) + optimism
