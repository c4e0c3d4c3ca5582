"""analyze(): for one run folder, the figures, the tables (summary, comparisons, learning rates, collapse, expected
max; CSV and LaTeX), report.md, report.html, methods.md and references.bib."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablate.errors import AblateError
from ablate.atomic_files import atomic_write_text
from ablate.run_folder import ANALYSIS
from .figures import arms as F
from .figures import grad as G
from .figures.paired import paired_differences
from .statistics.compare import supported_best
from .text.diagnostics_report import caption as diagnostic_caption
from .text.diagnostics_report import diagnostic_figures
from .text.exports import writable_dir
from .statistics.factorial import Factorial, factorial
from .text.factorial_report import answer_lines, effects_figure
from .statistics.collapse import collapse
from .figures.tuning import expected_max_figure, lr_curves_figure, tuning_landscape
from .statistics.lr_effects import LrEffects, lr_effects
from .statistics.tuning_budget import Repeats, expected_max_curves, repeats
from .statistics.search_luck import search_luck, selection_optimism
from .text.lesion_report import check_table, lesion_figure
from .statistics.power import check_min_effect, paired_verdicts
from .load import Run, load_curves, load_grad_norms, load_run
from .text.html_report import report_html
from .text.methods import methods
from .text.report_text import CAPTIONS, Search, figure_lines, report_body
from .runinfo import facts
from .statistics.summary import summarize
from .text.tables import to_csv, to_latex, to_text


@dataclass
class AnalysisResult:
    run_dir: Path
    out_dir: Path
    report: Path
    summary_csv: Path
    summary_tex: Path
    comparisons_csv: Path
    html: Path                           # report.html: the report in one self-contained file
    methods: Path                        # methods.md: the methods paragraph, with citation keys
    references: Path                     # references.bib: the works methods.md cites
    figures: dict[str, list[Path]]       # name -> [png, pdf]
    captions: dict[str, str]             # name -> the caption under it in report.md
    lesion_csv: Path | None              # the lesion table, when a lesion study was asked for and ran
    skipped: dict[str, str]              # figure name -> why it was not drawn
    missing: list[str]                   # one line per stage/arm with fewer finished trials than planned
    winner: str | None                   # the arm shown better than every other one, else None
    table: str                           # the terminal summary
    summary: pd.DataFrame = field(repr=False)
    comparisons: pd.DataFrame = field(repr=False)
    effects: pd.DataFrame | None = field(default=None, repr=False)        # factorial studies: factorial.effects
    interactions: pd.DataFrame | None = field(default=None, repr=False)   # and factorial.interactions
    diagnostics: object | None = field(default=None, repr=False)          # ablate.probes.diagnostics.Diagnostics, if asked for
    lr: LrEffects | None = field(default=None, repr=False)               # the learning-rate curves and effects
    collapse: pd.DataFrame | None = field(default=None, repr=False)       # collapsed runs per arm
    expected_max: pd.DataFrame | None = field(default=None, repr=False)   # expected best dev accuracy per n trials
    repeats: Repeats | None = field(default=None, repr=False)             # the repeats of the search, if any


NOT_DRAWN = "not drawn: analyze was asked for no figures (--no-figures)"


def make_figures(run: Run, fig_dir: Path, fact: Factorial | None = None, lr: LrEffects | None = None,
                 budget: pd.DataFrame | None = None, draw: bool = True, comparisons: pd.DataFrame | None = None
                 ) -> tuple[dict[str, list[Path]], dict[str, str], dict[str, str]]:
    """Draws every figure the run has data for: (paths, captions, skipped with the reason). With draw=False
    none is drawn, each is listed as skipped, and their files from an earlier analysis are removed."""
    made: dict[str, list[Path]] = {}
    captions: dict[str, str] = {}
    skipped: dict[str, str] = {}
    curves = load_curves(run) if draw else None  # read only to be drawn
    grads = load_grad_norms(run) if draw else None
    makers = {"test_accuracy": lambda: F.accuracy_per_arm(run),
              "paired_differences": lambda: paired_differences(run, comparisons) if comparisons is not None else None,
              "curves": lambda: F.curves(run, curves) if len(curves) else None}
    if fact is not None:
        makers["effects"] = lambda: effects_figure(run, fact.design, fact.effects, fact.interactions)
    else:
        for ext in ("png", "pdf"):
            (fig_dir / f"effects.{ext}").unlink(missing_ok=True)
    grad_reason = "no trial of the final stage has a grad_norms.csv (made before gradient logging, or with telemetry: false)"
    for name, fn in (("grad_profile", G.grad_profile), ("grad_heatmap", G.grad_heatmap)):
        makers[name] = (lambda fn=fn: fn(run, grads)) if grads is not None else None
    if run.is_depth_study():
        makers["depth"] = lambda: F.depth_figure(run)
        makers["depth_grad_ratio"] = (lambda: G.depth_grad_ratio(run, grads)) if grads is not None else None
    if "tune" in run.study.stages:
        makers["tuning"] = lambda: tuning_landscape(run)
    elif run.study.grid:
        makers["lr_grid"] = lambda: tuning_landscape(run)
    if lr is not None:
        makers["lr_curves"] = lambda: lr_curves_figure(run, lr)
    if budget is not None:
        makers["expected_max"] = lambda: expected_max_figure(run, budget)
    with F.theme():
        for name, maker in makers.items():
            if not draw:
                skipped[name] = NOT_DRAWN
                continue
            if maker is None:
                skipped[name] = grad_reason
                continue
            fig = maker()
            if fig is None:
                skipped[name] = "no data for it in this run"
                continue
            made[name] = F.save(fig, fig_dir, name)
            captions[name] = " ".join([CAPTIONS[name], *F.notes(fig)])
    # A figure from an earlier analysis into the same folder must not outlive the data behind it.
    for name in skipped:
        for ext in ("png", "pdf"):
            (fig_dir / f"{name}.{ext}").unlink(missing_ok=True)
    return made, captions, skipped


def _lesion_table(run: Run, lesion: "bool | pd.DataFrame", recalibrate: bool = False
                  ) -> tuple[pd.DataFrame | None, str | None]:
    """The lesion table to report, or why there is none."""
    if isinstance(lesion, pd.DataFrame):
        return check_table(lesion), None
    if not lesion:
        return None, None
    from ablate.probes import lesion_run

    try:
        return lesion_run(run.run_dir, recalibrate=recalibrate), None
    except AblateError as exc:
        return None, str(exc)


DIAGNOSTIC_NAMES = ("landscape", "landscape_2d", "shattered", "signal", "lesions_k")


def _diagnostics(run: Run, diagnostics, landscape_2d: bool, progress=None):
    """The diagnostics to report (computed now, or given), or why there are none."""
    if diagnostics is False or diagnostics is None:
        return None, None
    if diagnostics is not True:
        return diagnostics, None
    from ablate.probes import diagnose_run

    trials = [{"trial_id": r.trial_id, "arm": str(r.arm), "seed": r.seed} for r in run.ok.itertuples()]
    try:
        return diagnose_run(run.run_dir, trials, landscape_2d=landscape_2d, progress=progress), None
    except AblateError as exc:
        return None, str(exc)


def _write_diagnostics(run: Run, diag, out_dir: Path, figs: dict, captions: dict, draw: bool = True) -> None:
    folder = out_dir / "diagnostics"
    if diag is None:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        for name, table in diag.tables().items():
            atomic_write_text(folder / f"{name}.csv", table.to_csv(index=False))
    with F.theme():
        made = diagnostic_figures(run, diag) if diag is not None and draw else {}
        for name in DIAGNOSTIC_NAMES:
            fig = made.get(name)
            if fig is None:
                for ext in ("png", "pdf"):
                    (out_dir / "figures" / f"{name}.{ext}").unlink(missing_ok=True)
                continue
            figs[name] = F.save(fig, out_dir / "figures", name)
            captions[name] = " ".join([diagnostic_caption(run, name), *F.notes(fig)])


def check_out(out: Path | None) -> None:
    """An output folder analyze may write: new, empty, or one holding an earlier analysis (its report.md); a
    folder of anything else is refused (AblateError), before anything is read or written."""
    if out is None:
        return
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (out / "report.md").is_file():
        raise AblateError(f"{out} is not empty and holds no earlier analysis (no report.md); choose an empty or new "
                          "--out")
    if out.exists() and not out.is_dir():
        raise AblateError(f"{out} is a file; pass a folder for --out")


def analyze(run_dir: Path, out: Path | None = None, *, lesion: "bool | pd.DataFrame" = False,
            lesion_recalibrate: bool = False, diagnostics=False, landscape_2d: bool = False, progress=None,
            min_effect: float | None = None, figures: bool = True) -> AnalysisResult:
    """Analyse a study run folder; writes into `out` (default run_dir/analysis) and returns what it wrote.

    lesion=True also runs the lesion study (ablate.probes.lesion.lesion_run) on the final-stage trials that
    saved weights.pt; a DataFrame in lesion_run's format is reported as given. When the lesion study
    cannot run (no weights.pt), everything else is still written and `skipped["lesion"]` says why.
    lesion_recalibrate: re-estimate the BatchNorm statistics on the training images after each lesion (see
    ablate.probes.lesion; by default they stay those of training, as Veit et al. 2016).
    diagnostics=True computes ablate.probes.diagnostics on the reported trials (landscape_2d adds the 2-D plane);
    a Diagnostics object is reported as given; if they cannot run, `skipped["diagnostics"]` says why.
    `progress(i, n, trial)` is called before each trial's diagnostics. `min_effect` (percentage points): the
    difference the seeds-for-power line asks about, instead of the observed one. figures=False writes every
    table and the report without drawing a figure (the report lists them as not drawn), in a fraction of the time.
    """
    check_min_effect(min_effect)
    check_out(out)
    run = load_run(Path(run_dir))
    out_dir = writable_dir(Path(out) if out is not None else run.run_dir / ANALYSIS)
    summary = summarize(run)
    comparisons = paired_verdicts(run, min_effect)
    best = supported_best(run, comparisons)
    fact = factorial(run)
    lr = lr_effects(run)
    budget = expected_max_curves(run) if "tune" in run.study.stages else None
    reps = repeats(run) if "tune" in run.study.stages else None
    collapsed = collapse(run)
    lesion_table, lesion_skip = _lesion_table(run, lesion, lesion_recalibrate)
    diag, diag_skip = _diagnostics(run, diagnostics, landscape_2d, progress)
    figs, captions, skipped = make_figures(run, out_dir / "figures", fact, lr, budget, draw=figures,
                                           comparisons=comparisons)
    lesion_csv = None
    if lesion_table is not None:
        lesion_csv = out_dir / "lesion.csv"
        atomic_write_text(lesion_csv, lesion_table.to_csv(index=False))
    else:
        (out_dir / "lesion.csv").unlink(missing_ok=True)
        if lesion_skip:
            skipped["lesion"] = lesion_skip
    if lesion_table is not None and figures:
        with F.theme():
            fig = lesion_figure(run, lesion_table)
            figs["lesion"] = F.save(fig, out_dir / "figures", "lesion")
            captions["lesion"] = " ".join([CAPTIONS["lesion"], *F.notes(fig)])
    else:
        if lesion_table is not None:
            skipped["lesion"] = NOT_DRAWN
        for ext in ("png", "pdf"):
            (out_dir / "figures" / f"lesion.{ext}").unlink(missing_ok=True)
    _write_diagnostics(run, diag, out_dir, figs, captions, draw=figures)
    if diag_skip:
        skipped["diagnostics"] = diag_skip
    paths = {"summary_csv": out_dir / "summary.csv", "summary_tex": out_dir / "summary.tex",
             "comparisons_csv": out_dir / "comparisons.csv", "report": out_dir / "report.md",
             "html": out_dir / "report.html", "methods": out_dir / "methods.md", "references": out_dir / "references.bib"}
    atomic_write_text(paths["summary_csv"], to_csv(summary))
    atomic_write_text(paths["summary_tex"], to_latex(summary, run, comparisons, best))
    atomic_write_text(paths["comparisons_csv"], comparisons.to_csv(index=False))
    luck = search_luck(run) if budget is not None else None
    optimism = selection_optimism(run) if budget is not None else None
    tables = {"lr_curves": lr.curves if lr is not None else None, "lr_effects": lr.effects if lr is not None else None,
              "expected_max": budget, "collapse": collapsed,
              "search_luck": luck, "selection_optimism": optimism}
    for name, frame in tables.items():
        if frame is None:
            (out_dir / f"{name}.csv").unlink(missing_ok=True)
        else:
            atomic_write_text(out_dir / f"{name}.csv", frame.to_csv(index=False))
    for name in ("effects", "interactions"):
        if fact is None:
            (out_dir / f"{name}.csv").unlink(missing_ok=True)
        else:
            frame = getattr(fact, name).drop(columns=["diffs"], errors="ignore")
            atomic_write_text(out_dir / f"{name}.csv", frame.to_csv(index=False))
    body = report_body(run, summary, comparisons, best, lesion_table, fact, diag, min_effect,
                       Search(lr, budget, reps, collapsed, luck, optimism))
    atomic_write_text(paths["report"], "\n".join(body + figure_lines(figs, captions, skipped, out_dir)))
    run_facts = facts(run)
    text = methods(run, comparisons, lesion=lesion_table is not None, diag=diag, f=run_facts,
                   budget=budget is not None and not budget.empty, repeated=reps is not None)
    atomic_write_text(paths["methods"], text.markdown())
    atomic_write_text(paths["references"], text.bib())
    atomic_write_text(paths["html"], report_html(run, body, figs, captions, skipped, text, run_facts))
    table = to_text(summary, run, best)
    if fact is not None:
        answer = [line.replace("**", "") for line in answer_lines(run, fact.design, fact.effects, fact.interactions)]
        table += "\n\n" + "\n".join(answer)
    return AnalysisResult(run_dir=run.run_dir, out_dir=out_dir, figures=figs, captions=captions, skipped=skipped,
                          lesion_csv=lesion_csv, missing=run.missing_lines(), winner=best, table=table,
                          summary=summary, comparisons=comparisons, effects=fact and fact.effects,
                          interactions=fact and fact.interactions, diagnostics=diag, lr=lr, collapse=collapsed,
                          expected_max=budget, repeats=reps, **paths)
