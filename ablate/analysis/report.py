"""analyze(): figures, summary tables and report.md for one run folder; export helpers for the CLI."""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import AblateError
from ..outputs import atomic_write_text
from . import figures as F
from . import figures_grad as G
from .compare import compare, supported_best
from .diagnostics_report import CAPTIONS as DIAGNOSTIC_CAPTIONS
from .diagnostics_report import diagnostic_figures, diagnostics_lines
from .factorial import Design, design, effects, interactions
from .factorial_report import answer_lines, effects_figure, effects_section
from .context import (dataset_lines, dataset_name, model_name, protocol, resume_lines, search_line,
                      test_images_line)
from .figures_tuning import lr_param, tuning_landscape
from .lesion_report import check_table, lesion_figure, lesion_lines
from .load import Run, load_curves, load_grad_norms, load_predictions, load_run
from .sections import (checkpoint_lines, comparison_lines, depth_lines, failure_lines, pairs_table, tuning_lines)
from .tables import caption, fmt_param, table_note, to_csv, to_latex, to_markdown, to_text
from .summary import summarize

FORMATS = ("latex", "csv", "markdown")
CAPTIONS = {
    "test_accuracy": "Test accuracy (best-dev checkpoint) per arm: every seed as a dot; black diamond = mean with its "
                     "95 % t-interval.",
    "curves": "Mini-batch training loss and dev accuracy over training, per arm.",
    "grad_profile": "Gradient norm per main-path layer (projection shortcuts left out), raw ‖g‖ and relative ‖g‖/‖w‖, "
                    "at initialisation and at the last logged step.",
    "grad_heatmap": "Gradient norm per main-path layer and logged step, one panel per arm, one shared log colour "
                    "scale; each column is drawn at its real step.",
    "depth": "Train loss and test accuracy against depth, plain vs residual (mean ± 95 % t-interval, dots: seeds).",
    "depth_grad_ratio": "Input-side over output-side gradient at initialisation, against depth.",
    "tuning": "Tuning stage: best dev accuracy of every tuning trial against the learning rate; lines join each arm's "
              "completed trials in lr order (its learning-rate sensitivity); star = chosen for the confirm stage.",
    "lr_grid": "Test accuracy against the learning rate over the grid, mean ± 95 % t-interval (dots = seeds).",
    "lesion": "Lesion study: test accuracy with one block dropped at test time, per block; dashed = intact model, "
              "dotted = chance.",
    "effects": "Effect of the focus factor against the other factor: paired difference in test accuracy between cells "
               "that differ only in the focus factor, mean ± 95 % t-interval over seeds, dots = seeds.",
}


@dataclass
class AnalysisResult:
    run_dir: Path
    out_dir: Path
    report: Path
    summary_csv: Path
    summary_tex: Path
    comparisons_csv: Path
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
    diagnostics: object | None = field(default=None, repr=False)          # ablate.diagnostics.Diagnostics, if asked for


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AblateError(f"cannot create output folder {path}: {exc.strerror or exc}; choose another --out") from None
    if not os.access(path, os.W_OK):
        raise AblateError(f"output folder {path} is not writable; choose another --out")
    return path


@dataclass
class Factorial:
    design: Design
    effects: pd.DataFrame
    interactions: pd.DataFrame


def factorial(run: Run) -> Factorial | None:
    """Each factor's effects and the interaction, for a study of two or more factors (grid parameters count)."""
    d = design(run)
    if d is None:
        return None
    eff = effects(d)
    return Factorial(d, eff, interactions(d, eff))


def make_figures(run: Run, fig_dir: Path, fact: Factorial | None = None
                 ) -> tuple[dict[str, list[Path]], dict[str, str], dict[str, str]]:
    """Draws every figure the run has data for: (paths, captions, skipped with the reason)."""
    made: dict[str, list[Path]] = {}
    captions: dict[str, str] = {}
    skipped: dict[str, str] = {}
    curves = load_curves(run)
    grads = load_grad_norms(run)
    makers = {"test_accuracy": lambda: F.accuracy_per_arm(run),
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
    with F.theme():
        for name, maker in makers.items():
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


def _lesion_table(run: Run, lesion: "bool | pd.DataFrame") -> tuple[pd.DataFrame | None, str | None]:
    """The lesion table to report, or why there is none."""
    if isinstance(lesion, pd.DataFrame):
        return check_table(lesion), None
    if not lesion:
        return None, None
    from ..lesion import lesion_run  # imports torch: only when a lesion study is asked for

    try:
        return lesion_run(run.run_dir), None
    except AblateError as exc:
        return None, str(exc)


DIAGNOSTIC_NAMES = ("landscape", "landscape_2d", "shattered", "signal", "lesions_k")


def _diagnostics(run: Run, diagnostics, landscape_2d: bool, progress=None):
    """The diagnostics to report (computed now, or given), or why there are none."""
    if diagnostics is False or diagnostics is None:
        return None, None
    if diagnostics is not True:
        return diagnostics, None
    from ..diagnostics import diagnose_run  # imports torch: only when diagnostics are asked for

    trials = [{"trial_id": r.trial_id, "arm": str(r.arm), "seed": r.seed} for r in run.ok.itertuples()]
    try:
        return diagnose_run(run.run_dir, trials, landscape_2d=landscape_2d, progress=progress), None
    except AblateError as exc:
        return None, str(exc)


def _write_diagnostics(run: Run, diag, out_dir: Path, figs: dict, captions: dict) -> None:
    folder = out_dir / "diagnostics"
    if diag is None:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        for name, table in diag.tables().items():
            atomic_write_text(folder / f"{name}.csv", table.to_csv(index=False))
    with F.theme():
        made = diagnostic_figures(run, diag) if diag is not None else {}
        for name in DIAGNOSTIC_NAMES:
            fig = made.get(name)
            if fig is None:
                for ext in ("png", "pdf"):
                    (out_dir / "figures" / f"{name}.{ext}").unlink(missing_ok=True)
                continue
            figs[name] = F.save(fig, out_dir / "figures", name)
            captions[name] = " ".join([DIAGNOSTIC_CAPTIONS[name], *F.notes(fig)])


def analyze(run_dir: Path, out: Path | None = None, *, lesion: "bool | pd.DataFrame" = False,
            diagnostics=False, landscape_2d: bool = False, progress=None) -> AnalysisResult:
    """Analyse a study run folder; writes into `out` (default run_dir/analysis) and returns what it wrote.

    lesion=True also runs the lesion study (ablate.lesion.lesion_run) on the final-stage trials that
    saved weights.pt; a DataFrame in lesion_run's format is reported as given. When the lesion study
    cannot run (no weights.pt), everything else is still written and `skipped["lesion"]` says why.
    diagnostics=True computes ablate.diagnostics on the reported trials (landscape_2d adds the 2-D plane);
    a Diagnostics object is reported as given; if they cannot run, `skipped["diagnostics"]` says why.
    `progress(i, n, trial)` is called before each trial's diagnostics.
    """
    run = load_run(Path(run_dir))
    out_dir = _writable_dir(Path(out) if out is not None else run.run_dir / "analysis")
    summary = summarize(run)
    comparisons = compare(run, load_predictions(run))
    best = supported_best(run, comparisons)
    fact = factorial(run)
    lesion_table, lesion_skip = _lesion_table(run, lesion)
    diag, diag_skip = _diagnostics(run, diagnostics, landscape_2d, progress)
    figs, captions, skipped = make_figures(run, out_dir / "figures", fact)
    lesion_csv = None
    if lesion_table is not None:
        lesion_csv = out_dir / "lesion.csv"
        atomic_write_text(lesion_csv, lesion_table.to_csv(index=False))
        with F.theme():
            fig = lesion_figure(run, lesion_table)
            figs["lesion"] = F.save(fig, out_dir / "figures", "lesion")
            captions["lesion"] = " ".join([CAPTIONS["lesion"], *F.notes(fig)])
    else:
        for ext in ("png", "pdf"):
            (out_dir / "figures" / f"lesion.{ext}").unlink(missing_ok=True)
        (out_dir / "lesion.csv").unlink(missing_ok=True)
        if lesion_skip:
            skipped["lesion"] = lesion_skip
    _write_diagnostics(run, diag, out_dir, figs, captions)
    if diag_skip:
        skipped["diagnostics"] = diag_skip
    paths = {"summary_csv": out_dir / "summary.csv", "summary_tex": out_dir / "summary.tex",
             "comparisons_csv": out_dir / "comparisons.csv", "report": out_dir / "report.md"}
    atomic_write_text(paths["summary_csv"], to_csv(summary))
    atomic_write_text(paths["summary_tex"], to_latex(summary, run, comparisons, best))
    atomic_write_text(paths["comparisons_csv"], comparisons.to_csv(index=False))
    for name in ("effects", "interactions"):
        if fact is None:
            (out_dir / f"{name}.csv").unlink(missing_ok=True)
        else:
            frame = getattr(fact, name).drop(columns=["diffs"], errors="ignore")
            atomic_write_text(out_dir / f"{name}.csv", frame.to_csv(index=False))
    text = report_markdown(run, summary, comparisons, best, figs, captions, skipped, out_dir, lesion_table, fact, diag)
    atomic_write_text(paths["report"], text)
    table = to_text(summary, run, best)
    if fact is not None:
        answer = [line.replace("**", "") for line in answer_lines(run, fact.design, fact.effects, fact.interactions)]
        table += "\n\n" + "\n".join(answer)
    return AnalysisResult(run_dir=run.run_dir, out_dir=out_dir, figures=figs, captions=captions, skipped=skipped,
                          lesion_csv=lesion_csv, missing=run.missing_lines(), winner=best, table=table,
                          summary=summary, comparisons=comparisons, effects=fact and fact.effects,
                          interactions=fact and fact.interactions, diagnostics=diag, **paths)


# --- report.md -------------------------------------------------------------------------------------
MAX_ARMS_PAIRED = 4  # above this many arms the all-pairs table leaves the report (it stays in comparisons.csv)


def results_section(run: Run, summary: pd.DataFrame, comparisons: pd.DataFrame, best: str | None,
                    factorial_study: bool = False) -> list[str]:
    """'## Results': protocol, test images, the table, failures, comparisons (no winner without support)."""
    search = [search_line(run), ""] if run.study.space else []
    md = ["## Results", "", protocol(run), "", *search, test_images_line(run), "", to_markdown(summary, run, best),
          table_note(run) + " Full precision in `summary.csv`.", ""]
    picks = "; ".join(f"`{a}`: " + ", ".join(f"{k} = {fmt_param(v)}" for k, v in p.items())
                      for a, p in run.selected.items())
    if run.study.grid:
        md += [f"Each arm is reported at its grid point with the best mean **dev** accuracy over seeds ({picks}); "
               "choosing by test accuracy would bias the reported numbers.", ""]
    elif run.study.space:
        md += [f"Tuned parameters (best dev accuracy in the tuning stage): {picks}.", ""]
    failures = failure_lines(run, summary)
    if failures:
        md += ["Failed runs:", ""] + [f"- {line}" for line in failures] + [""]
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
    md.append(f"**Best arm: `{best}`**, better than every other arm with the data's support." if best else
              "No arm is shown to be better than every other: the ranking by mean is not supported by the data.")
    return md + [""]


def report_markdown(run: Run, summary: pd.DataFrame, comparisons: pd.DataFrame, best: str | None,
                    figs: dict[str, list[Path]], captions: dict[str, str], skipped: dict[str, str], out_dir: Path,
                    lesion_table: pd.DataFrame | None = None, fact: Factorial | None = None, diag=None) -> str:
    study, m = run.study, run.manifest
    md = [f"# Study `{study.name}`: analysis", ""]
    if fact is not None:
        md += ["## Answer", ""] + answer_lines(run, fact.design, fact.effects, fact.interactions) + [""]
    if study.description:
        md += [f"Spec description: {study.description}", ""]
    used = "datasets" if len(run.datasets) > 1 else "dataset"
    md.append(f"{model_name(run)} on **{dataset_name(run)}** (the {used} the trials actually used). Run folder "
              f"`{run.run_dir}`; budget {study.budget}; stages {' → '.join(study.stages)}; seeds {study.seeds}; "
              f"git commit {m.get('git_commit', 'unknown')}.")
    for line in dataset_lines(run) + resume_lines(run):
        md += ["", line]
    md += ["", "## Completeness", ""]
    missing = run.missing_lines()
    if missing:
        md.append("This run is **incomplete**; the numbers below use only the finished trials. Missing:")
        md += [""] + [f"- {line}" for line in missing]
    else:
        md.append("Every planned trial has a result.")
    md.append("")
    if fact is not None:
        md += ["## Factor effects", ""] + effects_section(run, fact.design, fact.effects, fact.interactions) + [""]
    md += results_section(run, summary, comparisons, best, fact is not None)
    md += ["## Checkpoints", ""] + checkpoint_lines(run, load_curves(run)) + [""]
    if "tune" in study.stages:
        md += ["## Tuning", ""] + tuning_lines(run, lr_param(run)) + [""]
    if run.is_depth_study():
        md += ["## Depth", ""] + depth_lines(run, summary) + [""]
    if lesion_table is not None:
        intro, *per_arm = lesion_lines(run, lesion_table)
        md += ["## Lesion study", "", intro, ""] + [f"- {line}" for line in per_arm] + ["", "Full table: `lesion.csv`.", ""]
    if diag is not None:
        md += ["## Diagnostics", ""] + diagnostics_lines(run, diag)
    md += ["## Figures", ""]
    for name, paths in figs.items():
        rel = Path(os.path.relpath(paths[0], out_dir)).as_posix()
        pdf = Path(os.path.relpath(paths[1], out_dir)).as_posix()
        md += [f"![{name}]({rel})", "", f"*{captions.get(name, CAPTIONS.get(name, name))}* ([PDF]({pdf}))", ""]
    if skipped:
        md += ["Not drawn:", ""] + [f"- {name}: {why}" for name, why in skipped.items()] + [""]
    return "\n".join(md)


def add_report_section(result: AnalysisResult, title: str, body_markdown: str) -> None:
    """Append a section to report.md (e.g. lesion results computed by another command)."""
    text = result.report.read_text(encoding="utf-8").rstrip("\n")
    atomic_write_text(result.report, f"{text}\n\n## {title}\n\n{body_markdown.strip()}\n")


# --- export ----------------------------------------------------------------------------------------
def export(run_dir: Path, fmt: str) -> str:
    """The summary table as LaTeX, CSV or Markdown text (no figures drawn); each names the dataset used."""
    key = str(fmt).lower()
    if key not in FORMATS:
        raise AblateError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    run = load_run(Path(run_dir))
    summary = summarize(run)
    if key == "csv":
        return to_csv(summary)
    comparisons = compare(run, load_predictions(run))
    best = supported_best(run, comparisons)
    if key == "latex":
        return to_latex(summary, run, comparisons, best)
    return to_markdown(summary, run, best) + "\n" + caption(run, summary, delta=False) + "\n"


def terminal_table(run_dir: Path) -> str:
    """The table `analyze` prints, from the same code: what `study` shows when it ends."""
    run = load_run(Path(run_dir))
    summary = summarize(run)
    best = supported_best(run, compare(run, load_predictions(run)))
    return to_text(summary, run, best)


def arm_slug(arm: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", arm.replace("=", "-").replace(",", "_")).strip("-_") or "arm"


RECORDS = ("metrics.json", "curves.csv", "grad_norms.csv", "predictions.csv")


def export_configs(run_dir: Path, dest: Path) -> list[Path]:
    """Every final-stage trial as dest/<arm-slug>_seed<seed>_<trial_id>/: its config.yaml (runnable with
    `train --config`) with what it recorded beside it (metrics.json, curves.csv, grad_norms.csv,
    predictions.csv), so `reproduce dest/<folder>` can check it anywhere; dest/index.csv lists them.
    Returns the config paths."""
    run = load_run(Path(run_dir))
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise AblateError(f"{dest} exists and is not a folder; pass a folder for the configs")
    rows = run.trials[run.trials["stage"] == run.final_stage]
    sources = [(r, run.run_dir / "trials" / r.trial_id) for r in rows.itertuples()]
    sources = [(r, folder) for r, folder in sources if (folder / "config.yaml").is_file()]
    if not sources:
        raise AblateError(f"no {run.final_stage}-stage trial of {run.run_dir} has a config.yaml to export")
    _writable_dir(dest)
    out, index = [], ["folder,arm,seed,trial_id,status,test_acc,dataset"]
    for r, folder in sorted(sources, key=lambda x: (str(x[0].arm), x[0].seed, x[0].trial_id)):
        name = f"{arm_slug(str(r.arm))}_seed{r.seed}_{r.trial_id}"
        target = dest / name
        target.mkdir(exist_ok=True)
        for file in ("config.yaml", *RECORDS):
            if (folder / file).is_file():
                shutil.copyfile(folder / file, target / file)
        out.append(target / "config.yaml")
        acc = "" if pd.isna(r.test_acc) else f"{r.test_acc:.6g}"
        index.append(f"{name},{r.arm},{r.seed},{r.trial_id},{r.status},{acc},{getattr(r, 'dataset', '') or ''}")
    atomic_write_text(dest / "index.csv", "\n".join(index) + "\n")
    return out
