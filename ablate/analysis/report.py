"""analyze(): figures, summary tables and report.md for one run folder; export helpers for the CLI."""
from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import AblateError
from ..outputs import atomic_write_text
from . import figures as F
from .lesion_report import check_table, lesion_figure, lesion_lines
from .load import Run, load_curves, load_grad_norms, load_run
from .summary import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, DEGRADE_RULE, compare, degradation, fmt_p, fmt_param,
                      pct, pp, summarize, to_csv, to_latex, to_markdown, to_text, winner)

FORMATS = ("latex", "csv", "markdown")
CAPTIONS = {
    "test_accuracy": "Test accuracy per arm: every seed as a dot; black diamond = mean with its 95 % t-interval.",
    "curves": "Training loss and dev accuracy over training, mean over seeds with a 95 % t-interval band.",
    "grad_profile": "Gradient L2 norm per layer along the main path (input on the left; projection shortcuts left "
                    "out), at initialisation and at the last logged step.",
    "grad_heatmap": "Gradient L2 norm per main-path layer and logged step, one panel per arm, one shared log colour scale.",
    "depth": "Final training loss and test accuracy against depth, plain vs residual (mean ± 95 % t-interval).",
    "depth_grad_ratio": "Ratio of the first layer's to the last layer's gradient norm at initialisation, against depth.",
    "tuning": "Tuning stage: best dev accuracy of every tuning trial against the learning rate (star = chosen).",
    "lr_grid": "Test accuracy against the learning rate over the grid, mean ± 95 % t-interval (dots = seeds).",
    "lesion": "Lesion study: test accuracy with one block dropped at test time, per block; dashed = intact model.",
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
    lesion_csv: Path | None              # the lesion table, when a lesion study was asked for and ran
    skipped: dict[str, str]              # figure name -> why it was not drawn
    missing: list[str]                   # one line per stage/arm with fewer finished trials than planned
    winner: str | None
    table: str                           # the terminal summary
    summary: pd.DataFrame = field(repr=False)
    comparisons: pd.DataFrame = field(repr=False)


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AblateError(f"cannot create output folder {path}: {exc.strerror or exc}; choose another --out") from None
    if not os.access(path, os.W_OK):
        raise AblateError(f"output folder {path} is not writable; choose another --out")
    return path


def make_figures(run: Run, fig_dir: Path) -> tuple[dict[str, list[Path]], dict[str, str]]:
    made: dict[str, list[Path]] = {}
    skipped: dict[str, str] = {}
    curves = load_curves(run)
    grads = load_grad_norms(run)
    makers = {"test_accuracy": lambda: F.accuracy_per_arm(run),
              "curves": lambda: F.curves(run, curves) if len(curves) else None}
    grad_reason = "no trial of the final stage has a grad_norms.csv (made before gradient logging, or with telemetry: false)"
    for name, fn in (("grad_profile", F.grad_profile), ("grad_heatmap", F.grad_heatmap)):
        makers[name] = (lambda fn=fn: fn(run, grads)) if grads is not None else None
    if run.is_depth_study():
        makers["depth"] = lambda: F.depth_figure(run)
        makers["depth_grad_ratio"] = (lambda: F.depth_grad_ratio(run, grads)) if grads is not None else None
    if "tune" in run.study.stages:
        makers["tuning"] = lambda: F.tuning_landscape(run)
    elif run.study.grid:
        makers["lr_grid"] = lambda: F.tuning_landscape(run)
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
    # A figure from an earlier analysis into the same folder must not outlive the data behind it.
    for name in skipped:
        for ext in ("png", "pdf"):
            (fig_dir / f"{name}.{ext}").unlink(missing_ok=True)
    return made, skipped


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


def analyze(run_dir: Path, out: Path | None = None, *, lesion: "bool | pd.DataFrame" = False) -> AnalysisResult:
    """Analyse a study run folder; writes into `out` (default run_dir/analysis) and returns what it wrote.

    lesion=True also runs the lesion study (ablate.lesion.lesion_run) on the final-stage trials that
    saved weights.pt; a DataFrame in lesion_run's format is reported as given. When the lesion study
    cannot run (no weights.pt), everything else is still written and `skipped["lesion"]` says why.
    """
    run = load_run(Path(run_dir))
    out_dir = _writable_dir(Path(out) if out is not None else run.run_dir / "analysis")
    summary = summarize(run)
    comparisons = compare(run)
    lesion_table, lesion_skip = _lesion_table(run, lesion)
    figs, skipped = make_figures(run, out_dir / "figures")
    lesion_csv = None
    if lesion_table is not None:
        lesion_csv = out_dir / "lesion.csv"
        atomic_write_text(lesion_csv, lesion_table.to_csv(index=False))
        with F.theme():
            figs["lesion"] = F.save(lesion_figure(run, lesion_table), out_dir / "figures", "lesion")
    else:
        for ext in ("png", "pdf"):
            (out_dir / "figures" / f"lesion.{ext}").unlink(missing_ok=True)
        (out_dir / "lesion.csv").unlink(missing_ok=True)
        if lesion_skip:
            skipped["lesion"] = lesion_skip
    paths = {"summary_csv": out_dir / "summary.csv", "summary_tex": out_dir / "summary.tex",
             "comparisons_csv": out_dir / "comparisons.csv", "report": out_dir / "report.md"}
    atomic_write_text(paths["summary_csv"], to_csv(summary))
    atomic_write_text(paths["summary_tex"], to_latex(summary, run))
    atomic_write_text(paths["comparisons_csv"], comparisons.to_csv(index=False))
    atomic_write_text(paths["report"], report_markdown(run, summary, comparisons, figs, skipped, out_dir, lesion_table))
    return AnalysisResult(run_dir=run.run_dir, out_dir=out_dir, figures=figs, skipped=skipped, lesion_csv=lesion_csv,
                          missing=run.missing_lines(), winner=winner(summary), table=to_text(summary, run),
                          summary=summary, comparisons=comparisons, **paths)


# --- report.md -------------------------------------------------------------------------------------
def _ci_text(row: pd.Series) -> str:
    if math.isnan(row["test_acc_ci_low"]):
        return f"{pct(row['test_acc_mean'])} (n = {row['n']}; no CI from a single seed)"
    return (f"{pct(row['test_acc_mean'])} (95 % CI {pct(row['test_acc_ci_low'])} to {pct(row['test_acc_ci_high'])}, "
            f"n = {row['n']} seeds)")


def _findings(run: Run, summary: pd.DataFrame, comparisons: pd.DataFrame) -> list[str]:
    best = winner(summary)
    by_arm = summary.set_index("arm")
    lines = []
    ranked = summary.dropna(subset=["test_acc_mean"]).sort_values("test_acc_mean", ascending=False)
    lines.append(f"**Winner: `{best}`**, with the highest mean test accuracy, {_ci_text(by_arm.loc[best])}.")
    unscored = [a for a in run.arm_names if a not in set(ranked["arm"])]
    if unscored:
        comp = run.completeness[run.completeness["stage"] == run.final_stage].set_index("arm")
        why = "; ".join(f"`{a}` ({comp.loc[a, 'diverged']} diverged, {comp.loc[a, 'error']} failed, "
                        f"{comp.loc[a, 'finished']} of {comp.loc[a, 'planned']} run)" for a in unscored)
        lines.append(f"Arms without any test score, so left out of the comparison: {why}.")
    if len(ranked) < 2:
        return lines
    second = ranked.iloc[1]["arm"]
    lines.append(f"Runner-up: `{second}`, {_ci_text(by_arm.loc[second])}.")
    c = comparisons[(comparisons["arm_a"] == best) & (comparisons["arm_b"] == second)].iloc[0]
    ci = ("" if math.isnan(c["diff_ci_low"]) else
          f", 95 % bootstrap CI [{pp(c['diff_ci_low'])}, {pp(c['diff_ci_high'])}] "
          f"({BOOTSTRAP_RESAMPLES:,} resamples of the seeds within each arm, generator seed {BOOTSTRAP_SEED})")
    lines.append(f"Difference in mean test accuracy, `{best}` minus `{second}`: {pp(c['diff'])} percentage points{ci}.")
    lines.append(_test_sentence(c, multiple=len(ranked) > 2))
    few = int(ranked["n"].min())
    if few < 3:
        lines.append(f"Caution: some arm has only {few} finished seed(s), so its t-interval is very wide (it can "
                     "pass 0 % or 100 %); add seeds before trusting this ranking.")
    return lines


def _test_sentence(c: pd.Series, multiple: bool) -> str:
    if c["test"] == "none":
        p = "" if math.isnan(c["p"]) else f" (p = {fmt_p(c['p'])})"
        return f"No paired test was run: {c['why']}{p}."
    name = "Wilcoxon signed-rank test" if c["test"] == "wilcoxon" else "paired t-test"
    stat = "W" if c["test"] == "wilcoxon" else "t"
    holm = f", Holm-corrected over all pairs p = {fmt_p(c['p_holm'])}" if multiple else ""
    p_used = c["p_holm"] if multiple else c["p"]
    verdict = "significant" if p_used < 0.05 else "not significant"
    return (f"Paired by seed, {name} ({c['why']}): {stat} = {c['statistic']:.3g}, p = {fmt_p(c['p'])}{holm}; "
            f"the difference is {verdict} at the 5 % level.")


def _pairs_table(comparisons: pd.DataFrame) -> str:
    lines = ["| better arm | other arm | difference (pp) | 95 % bootstrap CI (pp) | test | n pairs | p | p (Holm) |",
             "|---|---|---:|---:|---|---:|---:|---:|"]
    for c in comparisons.itertuples():
        ci = "n/a" if math.isnan(c.diff_ci_low) else f"[{pp(c.diff_ci_low)}, {pp(c.diff_ci_high)}]"
        lines.append(f"| `{c.arm_a}` | `{c.arm_b}` | {pp(c.diff)} | {ci} | {c.test} | {c.n_pairs} | "
                     f"{fmt_p(c.p)} | {fmt_p(c.p_holm)} |")
    return "\n".join(lines) + "\n"


def _depth_lines(run: Run, summary: pd.DataFrame) -> list[str]:
    results = degradation(run, summary)
    if not results:
        return ["No plain (residual = false) arm has finished trials, so plain-network degradation is not assessed."]
    lines = [f"Definition: {DEGRADE_RULE}."]
    for r in results:
        who = "The plain network" if r["series"] == "plain" else f"The plain series `{r['series']}`"
        base = (f"{pct(r['base_mean'])} at depth {r['base_depth']}"
                + ("" if math.isnan(r["half_width"]) else f", threshold {pct(r['base_mean'] - r['half_width'])}"))
        if r.get("reason"):
            lines.append(f"{who}: cannot be assessed, {r['reason']} ({base}).")
        elif r["degrades_at"] is None:
            lines.append(f"{who} does not degrade at any depth tested ({', '.join(map(str, r['depths']))}; {base}).")
        else:
            lines.append(f"{who} starts to degrade at depth **{r['degrades_at']}** ({base}).")
    return lines


def report_markdown(run: Run, summary: pd.DataFrame, comparisons: pd.DataFrame, figs: dict[str, list[Path]],
                    skipped: dict[str, str], out_dir: Path, lesion_table: pd.DataFrame | None = None) -> str:
    study, m = run.study, run.manifest
    md = [f"# Study `{study.name}`: analysis", ""]
    if study.description:
        md += [study.description, ""]
    md.append(f"Run folder `{run.run_dir}`; budget {study.budget}; dataset {m.get('dataset', study.base.get('dataset'))}; "
              f"stages {' → '.join(study.stages)}; seeds {study.seeds}; git commit {m.get('git_commit', 'unknown')}.")
    md += ["", "## Completeness", ""]
    missing = run.missing_lines()
    if missing:
        md.append("This run is **incomplete**; the numbers below use only the finished trials. Missing:")
        md += [""] + [f"- {line}" for line in missing]
    else:
        md.append("Every planned trial has a result.")
    bad = run.completeness[run.completeness["stage"] == run.final_stage]
    for r in bad.itertuples():
        if r.diverged or r.error:
            md.append(f"- arm `{r.arm}`: {r.diverged} diverged and {r.error} failed {run.final_stage} trial(s), "
                      "left out of the accuracy statistics")
    md += ["", "## Results", "", to_markdown(summary, run),
           f"Mean ± half-width of the 95 % Student-t interval over seeds ({run.final_stage} stage); "
           "n = seeds that finished normally and were scored on test / seeds planned. "
           "Full precision in `summary.csv`.", ""]
    if study.grid:
        picks = "; ".join(f"`{a}`: " + ", ".join(f"{k} = {fmt_param(v)}" for k, v in p.items())
                          for a, p in run.selected.items())
        md += [f"Each arm is reported at its grid point with the best mean **dev** accuracy over seeds ({picks}); "
               "choosing by test accuracy would bias the reported numbers.", ""]
    elif study.space:
        picks = "; ".join(f"`{a}`: " + ", ".join(f"{k} = {fmt_param(v)}" for k, v in p.items())
                          for a, p in run.selected.items())
        md += [f"Tuned parameters (best dev accuracy in the tuning stage): {picks}.", ""]
    md += [f"- {line}" for line in _findings(run, summary, comparisons)] + [""]
    if len(comparisons) > 1:
        md += ["### All pairs", "",
               "Paired by seed; Wilcoxon signed-rank with at least 6 pairs, else the paired t-test (the signed-rank "
               "test cannot reach p < 0.05 below 6 pairs). p-values Holm-corrected over all "
               f"{len(comparisons)} pairs.", "", _pairs_table(comparisons)]
    if run.is_depth_study():
        md += ["## Depth", ""] + _depth_lines(run, summary) + [""]
    if lesion_table is not None:
        intro, *per_arm = lesion_lines(run, lesion_table)
        md += ["## Lesion study", "", intro, ""] + [f"- {line}" for line in per_arm] + ["", "Full table: `lesion.csv`.", ""]
    md += ["## Figures", ""]
    for name, paths in figs.items():
        rel = Path(os.path.relpath(paths[0], out_dir)).as_posix()
        pdf = Path(os.path.relpath(paths[1], out_dir)).as_posix()
        md += [f"![{name}]({rel})", "", f"*{CAPTIONS.get(name, name)}* ([PDF]({pdf}))", ""]
    if skipped:
        md += ["Not drawn:", ""] + [f"- {name}: {why}" for name, why in skipped.items()] + [""]
    return "\n".join(md)


def add_report_section(result: AnalysisResult, title: str, body_markdown: str) -> None:
    """Append a section to report.md (e.g. lesion results computed by another command)."""
    text = result.report.read_text(encoding="utf-8").rstrip("\n")
    atomic_write_text(result.report, f"{text}\n\n## {title}\n\n{body_markdown.strip()}\n")


# --- export ----------------------------------------------------------------------------------------
def export(run_dir: Path, fmt: str) -> str:
    """The summary table as LaTeX, CSV or Markdown text (no figures drawn)."""
    key = str(fmt).lower()
    if key not in FORMATS:
        raise AblateError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    run = load_run(Path(run_dir))
    summary = summarize(run)
    if key == "latex":
        return to_latex(summary, run)
    if key == "csv":
        return to_csv(summary)
    return to_markdown(summary, run)


def arm_slug(arm: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", arm.replace("=", "-").replace(",", "_")).strip("-_") or "arm"


def export_configs(run_dir: Path, dest: Path) -> list[Path]:
    """Copy every final-stage trial's config.yaml to dest/<arm-slug>_seed<seed>_<trial_id>.yaml."""
    run = load_run(Path(run_dir))
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise AblateError(f"{dest} exists and is not a folder; pass a folder for the configs")
    rows = run.trials[run.trials["stage"] == run.final_stage]
    sources = [(r, run.run_dir / "trials" / r.trial_id / "config.yaml") for r in rows.itertuples()]
    sources = [(r, p) for r, p in sources if p.is_file()]
    if not sources:
        raise AblateError(f"no {run.final_stage}-stage trial of {run.run_dir} has a config.yaml to export")
    _writable_dir(dest)
    out = []
    for r, src in sorted(sources, key=lambda x: (str(x[0].arm), x[0].seed, x[0].trial_id)):
        target = dest / f"{arm_slug(str(r.arm))}_seed{r.seed}_{r.trial_id}.yaml"
        shutil.copyfile(src, target)
        out.append(target)
    return out
