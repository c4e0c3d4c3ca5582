"""The summary table as terminal text, Markdown, LaTeX and CSV, at the precision the data carry.

Accuracies are in % with the decimals one test image resolves (200 images: 0.5 pp, one decimal);
losses with three significant digits. A row (or a difference) is bold only when the comparisons
support it (compare.supported_best); nothing is bold otherwise.
"""
from __future__ import annotations

import math
import re

import pandas as pd

from ..context import dataset_name, model_name, readable_arm
from ..formats import CUT_NOTE, Fmt, fmt_param, is_missing, loss_pm
from ..load import Run, arm_value
from ..markdown_text import text

LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


# --- the per-arm table (terminal, Markdown) ---------------------------------------------------------
def _cells(summary: pd.DataFrame, run: Run, best: str | None) -> tuple[list[str], list[list[str]], list[bool]]:
    f = Fmt.of(run)
    params = run.param_names
    failures = bool(summary["failed"].sum())
    header = ["arm", *params, "seeds", "test acc. (%)", "final-ckpt test acc. (%)", "train acc. (%)", "train loss"]
    if failures:
        header += ["failed", "all runs, failure = chance (%)"]
    rows, bold = [], []
    for r in summary.to_dict("records"):
        cells = [r["arm"], *(fmt_param(r[p]) for p in params), f"{r['n']}/{r['planned']}"]
        for metric in ("test_acc", "final_test_acc", "scored_train_acc"):
            cells.append(f.pm(r[f"{metric}_mean"], r[f"{metric}_ci_low"], r[f"{metric}_ci_high"], _cut(r, metric)))
        cells.append(loss_pm(r["scored_train_loss_mean"], r["scored_train_loss_ci_low"], r["scored_train_loss_ci_high"],
                             _cut(r, "scored_train_loss")))
        if failures:
            cells += [str(r["failed"]), f.pm(r["test_acc_all_mean"], r["test_acc_all_ci_low"], r["test_acc_all_ci_high"],
                                             _cut(r, "test_acc_all"))]
        rows.append(cells)
        bold.append(r["arm"] == best)
    return header, rows, bold


def _cut(row: dict, metric: str) -> bool:
    return bool(row.get(f"{metric}_ci_cut", False))


def any_cut(summary: pd.DataFrame) -> bool:
    """Whether an interval of the table was cut at a bound (the table's note then says what † means)."""
    cols = [c for c in summary.columns if c.endswith("_ci_cut")]
    return bool(len(cols) and summary[cols].fillna(False).astype(bool).to_numpy().any())


def table_note(run: Run) -> str:
    return (f"Mean ± half-width of the 95 % Student-t interval over the seeds of the {run.final_stage} stage; "
            "seeds = runs scored on test / planned. Test accuracy of the best-dev checkpoint (the reported score) "
            "and of the final checkpoint; train accuracy and loss of the best-dev checkpoint on the whole training "
            "subset in eval mode. n/a: not recorded by this run.")


def to_text(summary: pd.DataFrame, run: Run, best: str | None = None) -> str:
    """Aligned plain-text table for the terminal; a starred arm is better than every other, with support."""
    header, rows, bold = _cells(summary, run, best)
    rows = [[("* " if b else "  ") + r[0], *r[1:]] for r, b in zip(rows, bold)]
    header = ["  " + header[0], *header[1:]]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(header), "-" * len(line(header)), *(line(r) for r in rows)]
    star = ("* = better than every other arm (paired CI excludes 0, sign-flip p < 0.05)" if best
            else "no arm is starred: no difference is supported by the data" if len(rows) <= 2
            else "no arm is starred: none is better than every other arm with support; the paired comparisons "
                 "are in analyze's report")
    out.append(f"({model_name(run)} on {dataset_name(run)}; mean ± 95 % CI half-width over seeds; {star})")
    if any_cut(summary):
        out.append(CUT_NOTE)
    return "\n".join(out)


def to_markdown(summary: pd.DataFrame, run: Run, best: str | None = None) -> str:
    header, rows, bold = _cells(summary, run, best)
    lines = ["| " + " | ".join(text(h) for h in header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for cells, b in zip(rows, bold):
        spec = 1 + len(run.param_names)  # the arm's name and its parameters come from the spec
        cells = [text(c) for c in cells[:spec]] + cells[spec:]
        if b:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(summary: pd.DataFrame) -> str:
    return summary.to_csv(index=False)


# --- LaTeX -----------------------------------------------------------------------------------------
def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def _tex_pm(f: Fmt, mean: float, low: float, high: float, bold: bool = False, cut: bool = False) -> str:
    """Two cells of an r@{$\\pm$}l pair; one spanning cell without an interval, or with one cut at a bound."""
    b = (lambda s: rf"\textbf{{{s}}}") if bold else (lambda s: s)
    if is_missing(mean):
        return r"\multicolumn{2}{c}{--}"
    m = f.acc(mean)
    if is_missing(low):
        return rf"\multicolumn{{2}}{{c}}{{{b(m)}}}"
    if cut:
        return rf"\multicolumn{{2}}{{c}}{{{b(m)} [{f.acc(low)}, {f.acc(high)}]$^\dagger$}}"
    return f"{b(m)} & {b(f'{100 * (high - low) / 2:.{f.digits}f}')}"


def _tex_diff(f: Fmt, c: dict | None, sign: float, bold: bool) -> str:
    if c is None or is_missing(c["diff"]):
        return r"\multicolumn{2}{c}{--}"
    lo, hi = sorted((sign * c["diff_ci_low"], sign * c["diff_ci_high"])) if not is_missing(c["diff_ci_low"]) else (math.nan, math.nan)
    tex = lambda s: s.replace("-", "$-$")
    value = tex(f.pp(sign * c["diff"]))
    ci = "" if is_missing(lo) else tex(f"[{f.pp(lo)}, {f.pp(hi)}]")
    return (rf"\textbf{{{value}}}" if bold else value) + f" & {ci}"


def _pair(comparisons: pd.DataFrame, a: str, b: str) -> tuple[dict | None, float]:
    """The comparison row of arms a and b, and the sign that makes its difference a - b."""
    for c in comparisons.to_dict("records"):
        if (c["arm_a"], c["arm_b"]) == (a, b):
            return c, 1.0
        if (c["arm_a"], c["arm_b"]) == (b, a):
            return c, -1.0
    return None, 1.0


def _two_factor(run: Run) -> tuple[str, str] | None:
    """(row factor, column factor) when the arms are the full cross of exactly two factors."""
    names = run.study.factor_names
    if len(names) != 2 or not all(set(a.settings) == set(names) for a in run.study.arms):
        return None
    col = "residual" if "residual" in names else names[1]
    return (names[0] if col == names[1] else names[1]), col


def caption(run: Run, summary: pd.DataFrame, delta: bool = True, comparisons: pd.DataFrame | None = None) -> str:
    """What the table shows and on what: model, data sizes, steps, test-set size, seeds (plain text)."""
    def v(key: str) -> str:
        x = run.config_value(key)
        return "per-arm" if x is None else str(x)

    steps = sorted({int(s) for s in summary["total_steps"].dropna()})
    seeds = len(run.seeds)
    from ..statistics.variance import covers

    two_stage = comparisons is not None and "pilot" in comparisons and bool(comparisons["pilot"].any())
    interval = "Stein's two-stage 95 % interval (the seed rule's design)" if two_stage else "95 % t-interval"
    return (f"Test accuracy (%) of {model_name(run)} on {dataset_name(run)}: {v('train_size')} training, "
            f"{v('dev_size')} dev and {v('test_size')} test images at {v('image_size')}×{v('image_size')} px, "
            f"{'/'.join(map(str, steps)) or '?'} SGD steps of batch {v('batch_size')}; mean ± half-width of the "
            f"95 % Student-t interval over {seeds} seeds ({run.final_stage} stage), best-dev checkpoint."
            + (f" Δ: mean paired (same-seed) difference with its {interval}, every run counted (a failed one at "
               "chance)." if delta else "") + " " + covers(run, markdown=False))


def to_latex(summary: pd.DataFrame, run: Run, comparisons: pd.DataFrame | None = None, best: str | None = None) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); factor × factor for a two-factor study."""
    f = Fmt.of(run)
    comparisons = comparisons if comparisons is not None else pd.DataFrame(columns=["arm_a", "arm_b", "diff"])
    by_arm = summary.set_index("arm")
    supported = {(c["arm_a"], c["arm_b"]) for c in comparisons.to_dict("records") if c.get("verdict") == "supported"}
    layout = _two_factor(run)
    pm_col = r"r@{\,$\pm$\,}l"
    if layout is not None:
        row_f, col_f = layout
        col_values = list(dict.fromkeys(arm_value(run, a, col_f) for a in run.arm_names))
        row_values = list(dict.fromkeys(arm_value(run, a, row_f) for a in run.arm_names))
        arm_at = {(arm_value(run, a, row_f), arm_value(run, a, col_f)): a for a in run.arm_names}
        label = lambda value: readable_arm(run, arm_at[(row_values[0], value)]).split(", ")[-1] \
            if col_f in ("residual", "shortcut") else f"{col_f} {value}"
        diff = len(col_values) == 2
        cols = "l" + pm_col * len(col_values) + (r"r@{\;}l" if diff else "")
        head = [latex_escape(row_f.capitalize())] + [rf"\multicolumn{{2}}{{c}}{{{latex_escape(label(v).capitalize())}}}"
                                                     for v in col_values]
        if diff:
            head.append(rf"\multicolumn{{2}}{{c}}{{$\Delta$ {latex_escape(label(col_values[0]))} $-$ "
                        rf"{latex_escape(label(col_values[1]))}}}")
        body = []
        for rv in row_values:
            cells = [latex_escape(fmt_param(rv))]
            for cv in col_values:
                arm = arm_at.get((rv, cv))
                r = by_arm.loc[arm] if arm is not None else None
                cells.append(r"\multicolumn{2}{c}{--}" if r is None else
                             _tex_pm(f, r["test_acc_mean"], r["test_acc_ci_low"], r["test_acc_ci_high"],
                                     cut=_cut(r, "test_acc")))
            if diff:
                a, b = arm_at.get((rv, col_values[0])), arm_at.get((rv, col_values[1]))
                c, sign = _pair(comparisons, a, b) if a and b else (None, 1.0)
                cells.append(_tex_diff(f, c, sign, c is not None and (c["arm_a"], c["arm_b"]) in supported))
            body.append(" & ".join(cells) + r" \\")
        bold_note = ("Bold $\\Delta$: supported by the data (paired interval excludes 0 and exact sign-flip $p<0.05$)."
                     if any(r"\textbf" in line for line in body) else "No difference is supported by the data.")
    else:
        ref = run.arm_names[0]
        params = run.param_names
        cols = "l" + "r" * (len(params) + 1) + pm_col * 2 + r"r@{\;}l"
        head = ["Arm", *(latex_escape(p) for p in params), "$n$", r"\multicolumn{2}{c}{Test acc.}",
                r"\multicolumn{2}{c}{Final ckpt.}", rf"\multicolumn{{2}}{{c}}{{$\Delta$ vs.\ {latex_escape(readable_arm(run, ref))}}}"]
        body = []
        for r in summary.to_dict("records"):
            bold = r["arm"] == best
            cells = [latex_escape(readable_arm(run, r["arm"])), *(latex_escape(fmt_param(r[p])) for p in params),
                     f"{r['n']}/{r['planned']}",
                     _tex_pm(f, r["test_acc_mean"], r["test_acc_ci_low"], r["test_acc_ci_high"], bold,
                             _cut(r, "test_acc")),
                     _tex_pm(f, r["final_test_acc_mean"], r["final_test_acc_ci_low"], r["final_test_acc_ci_high"],
                             cut=_cut(r, "final_test_acc"))]
            if bold:
                cells[0] = rf"\textbf{{{cells[0]}}}"
            c, sign = _pair(comparisons, r["arm"], ref) if r["arm"] != ref else (None, 1.0)
            cells.append(r"\multicolumn{2}{c}{(reference)}" if r["arm"] == ref else _tex_diff(f, c, sign, False))
            body.append(" & ".join(cells) + r" \\")
        bold_note = ("Bold: better than every other arm (paired interval excludes 0 and exact sign-flip $p<0.05$)."
                     if best else "No arm is bold: no difference is supported by the data." if len(summary) <= 2
                     else "No arm is bold: none is better than every other arm with support.")
        bold_note = "Final ckpt.: test accuracy of the last checkpoint. " + bold_note
    text = (latex_escape(caption(run, summary, comparisons=comparisons)).replace("±", r"$\pm$").replace("×", r"$\times$")
            .replace("Δ", r"$\Delta$").replace("–", "--").replace("Student-t", "Student-$t$").replace("t-interval", "$t$-interval"))
    key = re.sub(r"[^A-Za-z0-9:-]+", "-", run.study.name)
    if any_cut(summary):
        bold_note += r" $^\dagger$: the 95\,\% $t$-interval passed 0 or 100\,\% and is cut there, shown as [low, high]."
    return "\n".join([
        f"% Generated by 'ablate analyze' (study {latex_escape(run.study.name)}, budget {run.study.budget}, "
        f"git {str(run.manifest.get('git_commit', 'unknown'))[:12]}); needs \\usepackage{{booktabs}}.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{text} {bold_note}}}",
        rf"\label{{tab:{key}}}",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
        "",
    ])
