"""report.md: the text of the analysis, section by section, with the figures and their captions."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..context import dataset_lines, dataset_name, model_name, protocol, resume_lines, search_line, test_images_line
from .diagnostics_report import diagnostics_lines
from .factorial_report import answer_lines, effects_section
from .lead import lead_section
from .lesion_report import lesion_lines
from ..load import Run, load_curves
from .seeding import seeds_section
from ..statistics.lr_effects import LrEffects
from .sections import (checkpoint_lines, collapse_lines, comparison_lines, depth_lines, failure_lines, pairs_table,
                       tuning_lines)
from ..statistics.tuning_budget import EXPECTED_MAX_CAPTION, Repeats
from .tuning_sections import budget_section, lead_more, lr_section
from ..formats import CUT_NOTE, fmt_param
from .tables import any_cut, table_note, to_markdown
from ..markdown_text import code, text

if TYPE_CHECKING:
    from ..statistics.factorial import Factorial

CAPTIONS = {
    "test_accuracy": "Test accuracy (best-dev checkpoint) per arm: every seed as a dot; black diamond = mean with its "
                     "95 % t-interval.",
    "paired_differences": "Paired differences in test accuracy, one dot per seed pair (a cross where a run failed and "
                          "was scored at chance); black diamond = mean with the 95 % interval the verdict used (Stein's "
                          "two-stage interval when the seed rule chose the seeds, else Student's t); dashed = no "
                          "difference.",
    "curves": "Mini-batch training loss and dev accuracy over training, per arm.",
    "grad_profile": "Gradient norm per main-path layer (projection shortcuts left out), raw ‖g‖ and relative ‖g‖/‖w‖, "
                    "at initialisation and at the last logged step.",
    "grad_heatmap": "Gradient norm per main-path layer and logged step, one panel per arm, one shared log colour "
                    "scale; each column is drawn at its real step.",
    "depth": "Train loss and test accuracy against depth, plain vs residual (mean ± 95 % t-interval, dots: seeds).",
    "depth_grad_ratio": "Input-side over output-side gradient at initialisation, against depth.",
    "tuning": "Tuning stage: best dev accuracy of every tuning trial against the learning rate (hollow: stopped early, "
              "cross: diverged or failed); lines join each arm's mean over completed trials in lr order; star = chosen "
              "for the confirm stage; dotted = chance.",
    "lr_grid": "Test accuracy against the learning rate over the grid, mean ± 95 % t-interval (dots = seeds).",
    "lr_curves": "Dev and test accuracy against the learning rate per arm: mean over the seeds of each search point "
                 "with its 95 % t-band, every run a dot (a failed one a cross at chance), star = the learning rate the "
                 "final stage ran, dotted = chance.",
    "expected_max": EXPECTED_MAX_CAPTION,
    "lesion": "Lesion study: test accuracy with one block dropped at test time, per block; dashed = intact model, "
              "dotted = chance.",
    "effects": "Effect of the focus factor against the other factor: paired difference in test accuracy between cells "
               "that differ only in the focus factor, mean ± 95 % t-interval over seeds, dots = seeds.",
}


MAX_ARMS_PAIRED = 4  # above this many arms the all-pairs table leaves the report (it stays in comparisons.csv)


@dataclass
class Search:
    """What the analysis of the search found (any part may be missing: an older run, a study without a search)."""

    lr: LrEffects | None = None
    budget: pd.DataFrame | None = None
    repeats: Repeats | None = None
    collapse: pd.DataFrame | None = None
    luck: pd.DataFrame | None = None     # per compared pair, the search's luck (ablate.analysis.statistics.search_luck)
    optimism: pd.DataFrame | None = None  # per arm, how optimistic the search's score of its choice was


def results_section(run: Run, summary: pd.DataFrame, comparisons: pd.DataFrame, best: str | None,
                    factorial_study: bool = False, collapsed: pd.DataFrame | None = None) -> list[str]:
    """'## Results': protocol, test images, the table, failures, comparisons (no winner without support)."""
    search = [search_line(run), ""] if run.study.space else []
    md = ["## Results", "", protocol(run), "", *search, test_images_line(run), "", to_markdown(summary, run, best),
          table_note(run) + (" " + CUT_NOTE if any_cut(summary) else "") + " Full precision in `summary.csv`.", ""]
    picks = "; ".join(f"{code(a)}: " + ", ".join(f"{k} = {fmt_param(v)}" for k, v in p.items())
                      for a, p in run.selected.items())
    if run.study.grid:
        md += [f"Each arm is reported at its grid point with the best mean **dev** accuracy over seeds ({picks}); "
               "choosing by test accuracy would bias the reported numbers.", ""]
    elif run.study.space:
        md += [f"Tuned parameters (best dev accuracy in the tuning stage): {picks}.", ""]
    failures = failure_lines(run, summary)
    if failures:
        md += ["Failed runs:", ""] + [f"- {line}" for line in failures] + [""]
    if collapsed is not None and len(collapsed):
        md += ["### Collapsed runs", ""] + collapse_lines(run, collapsed) + [""]
    md += ["### Comparisons", ""]
    if len(run.arm_names) > MAX_ARMS_PAIRED:
        # Many arms: the pairs (Holm over all of them) stay in comparisons.csv; the factor effects answer the question.
        md += [f"With {len(run.arm_names)} arms there are {len(comparisons)} pairs of arms; every pair is compared by "
               "seed in `comparisons.csv` (paired difference, t-interval, exact sign-flip test Holm-corrected over "
               "all pairs, per-image analysis, verdict)." + (" The factor effects above compare the cells that differ "
                                                             "in one factor only." if factorial_study else ""), ""]
    else:
        md += comparison_lines(run, comparisons) + [""]
        if len(comparisons) > 1:
            md += ["All pairs (p-values Holm-corrected over all pairs; full detail in `comparisons.csv`):", "",
                   pairs_table(run, comparisons)]
    md.append(f"**Best arm: {code(best)}**, better than every other arm with the data's support." if best else
              "No arm is shown to be better than every other: the ranking by mean is not supported by the data.")
    return md + [""]


def report_body(run: Run, summary: pd.DataFrame, comparisons: pd.DataFrame, best: str | None,
                lesion_table: pd.DataFrame | None = None, fact: Factorial | None = None, diag=None,
                min_effect: float | None = None, search: Search | None = None) -> list[str]:
    """report.md's lines up to the figures (report.html renders the same lines)."""
    study, m = run.study, run.manifest
    search = search or Search()
    md = [f"# Study {code(study.name)}: analysis", ""]
    md += lead_section(run, comparisons, lead_more(run, search.lr, search.repeats, comparisons, search.optimism),
                       search.luck)
    if fact is not None:
        md += ["## Answer", ""] + answer_lines(run, fact.design, fact.effects, fact.interactions) + [""]
    if study.description:
        md += [f"Spec description: {text(study.description)}", ""]
    used = "datasets" if len(run.datasets) > 1 else "dataset"
    md.append(f"{model_name(run)} on **{text(dataset_name(run))}** (the {used} the trials actually used). Run folder "
              f"{code(run.run_dir)}; budget {study.budget}; stages {' → '.join(study.stages)}; seeds {run.seeds}; "
              f"git commit {m.get('git_commit', 'unknown')}.")
    for line in dataset_lines(run) + resume_lines(run):
        md += ["", line]
    md += ["", "## Completeness", ""]
    missing = run.missing_lines()
    if missing:
        md.append("This run is **incomplete**; the numbers below use only the finished trials. Missing:")
        md += [""] + [f"- {text(line)}" for line in missing]
    else:
        md.append("Every planned trial has a result.")
    md.append("")
    if fact is not None:
        md += ["## Factor effects", ""] + effects_section(run, fact.design, fact.effects, fact.interactions) + [""]
    md += results_section(run, summary, comparisons, best, fact is not None, search.collapse)
    md += seeds_section(run, comparisons, min_effect)
    md += ["## Checkpoints", ""] + checkpoint_lines(run, load_curves(run)) + [""]
    if "tune" in study.stages:
        md += ["## Tuning", ""] + tuning_lines(run) + [""]
    if search.lr is not None:
        md += ["## Learning rates", ""] + lr_section(run, search.lr, comparisons) + [""]
    if search.budget is not None:
        md += ["## Tuning budget", ""] + budget_section(run, search.budget, search.repeats, search.lr) + [""]
    if run.is_depth_study():
        md += ["## Depth", ""] + depth_lines(run, summary) + [""]
    if lesion_table is not None:
        intro, *per_arm = lesion_lines(run, lesion_table)
        md += ["## Lesion study", "", intro, ""] + [f"- {line}" for line in per_arm] + ["", "Full table: `lesion.csv`.", ""]
    if diag is not None:
        md += ["## Diagnostics", ""] + diagnostics_lines(run, diag)
    return md


def figure_lines(figs: dict[str, list[Path]], captions: dict[str, str], skipped: dict[str, str], out_dir: Path) -> list[str]:
    md = ["## Figures", ""]
    for name, paths in figs.items():
        rel = Path(os.path.relpath(paths[0], out_dir)).as_posix()
        pdf = Path(os.path.relpath(paths[1], out_dir)).as_posix()
        md += [f"![{name}]({rel})", "", f"*{text(captions.get(name, CAPTIONS.get(name, name)))}* ([PDF]({pdf}))", ""]
    if skipped:
        md += ["Not drawn:", ""] + [f"- {name}: {text(why)}" for name, why in skipped.items()] + [""]
    return md
