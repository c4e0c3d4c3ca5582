"""The per-arm summary table and the comparisons between arms, plus their text renderings."""
from __future__ import annotations

import itertools
import math
import re
from typing import Any

import pandas as pd

from . import stats
from .load import Run, arm_value, series_of

METRICS = ("test_acc", "final_train_loss")
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def summarize(run: Run) -> pd.DataFrame:
    """One row per arm (spec order): settings, chosen params, counts, mean/std/95 % t-CI per metric."""
    study = run.study
    rows = []
    for arm in study.arms:
        rep = run.reported[run.reported["arm"] == arm.name]
        ok = run.ok[run.ok["arm"] == arm.name]
        row: dict[str, Any] = {"arm": arm.name}
        row.update({k: arm.settings.get(k, study.base.get(k)) for k in study.factor_names})
        row.update({k: run.selected.get(arm.name, {}).get(k) for k in run.param_names})
        # For a grid study an arm reports one grid point, so its seeds are what is planned for it.
        planned = len(study.seeds)
        row.update({"planned": planned, "finished": len(rep), "n": len(ok),
                    "diverged": int((rep["status"] == "diverged").sum())})
        for metric in METRICS:
            ci = stats.mean_ci(ok[metric])
            row.update({f"{metric}_mean": ci.mean, f"{metric}_std": stats.std(ok[metric]),
                        f"{metric}_ci_low": ci.low, f"{metric}_ci_high": ci.high})
        rows.append(row)
    return pd.DataFrame(rows)


def winner(summary: pd.DataFrame) -> str | None:
    means = summary.set_index("arm")["test_acc_mean"].dropna()
    return str(means.idxmax()) if len(means) else None


def compare(run: Run) -> pd.DataFrame:
    """Every pair of arms: difference in mean test accuracy (bootstrap CI) and a paired test by seed.

    Each pair is oriented so that `arm_a` has the higher mean. Holm's correction runs over all
    pairs whenever there are more than two arms.
    """
    ok = run.ok
    means = {a: ok.loc[ok["arm"] == a, "test_acc"].mean() for a in run.arm_names}
    arms = [a for a in run.arm_names if not math.isnan(means[a])]
    rows = []
    for a, b in itertools.combinations(arms, 2):
        if means[b] > means[a]:
            a, b = b, a
        xa = ok.loc[ok["arm"] == a, ["seed", "test_acc"]]
        xb = ok.loc[ok["arm"] == b, ["seed", "test_acc"]]
        diff = stats.bootstrap_diff_ci(xa["test_acc"], xb["test_acc"], BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
        pairs = xa.merge(xb, on="seed", suffixes=("_a", "_b"))
        test = stats.paired_test(pairs["test_acc_a"], pairs["test_acc_b"])
        rows.append({"arm_a": a, "arm_b": b, "mean_a": means[a], "mean_b": means[b], "diff": diff.mean,
                     "diff_ci_low": diff.low, "diff_ci_high": diff.high, "test": test.test,
                     "statistic": test.statistic, "p": test.pvalue, "n_pairs": test.n, "why": test.reason})
    df = pd.DataFrame(rows, columns=["arm_a", "arm_b", "mean_a", "mean_b", "diff", "diff_ci_low", "diff_ci_high",
                                     "test", "statistic", "p", "n_pairs", "why"])
    df["p_holm"] = stats.holm(df["p"].tolist()) if len(arms) > 2 else df["p"]
    return df


def degradation(run: Run, summary: pd.DataFrame) -> list[dict[str, Any]]:
    """For depth studies, per plain series: the first depth where plain accuracy drops (see DEGRADE_RULE)."""
    if not run.is_depth_study():
        return []
    s = summary.assign(series=[series_of(run, a) for a in summary["arm"]],
                       plain=[not bool(arm_value(run, a, "residual")) for a in summary["arm"]])
    out = []
    for series, group in s[s["plain"]].groupby("series", sort=False):
        g = group.dropna(subset=["test_acc_mean"]).sort_values("depth")
        if g.empty:
            continue
        base = g.iloc[0]
        half = (base["test_acc_ci_high"] - base["test_acc_ci_low"]) / 2
        result = {"series": series, "base_depth": int(base["depth"]), "base_mean": base["test_acc_mean"],
                  "half_width": half, "depths": [int(d) for d in g["depth"]], "degrades_at": None}
        if math.isnan(half):
            result["reason"] = f"the CI at depth {int(base['depth'])} needs at least 2 seeds"
        else:
            for r in g.iloc[1:].itertuples():
                if r.test_acc_mean < base["test_acc_mean"] - half:
                    result["degrades_at"] = int(r.depth)
                    break
        out.append(result)
    return out


DEGRADE_RULE = ("the plain network *degrades* at the first depth whose mean test accuracy falls below its "
                "mean test accuracy at the smallest depth by more than the half-width of that smallest-depth "
                "mean's 95 % t-interval")


# --- renderings ------------------------------------------------------------------------------------
def fmt_param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def _pm(mean: float, low: float, high: float, scale: float, digits: int) -> tuple[str, str]:
    if math.isnan(mean):
        return "–", ""
    m = f"{scale * mean:.{digits}f}"
    return m, "" if math.isnan(low) else f"{scale * (high - low) / 2:.{digits}f}"


def _cells(summary: pd.DataFrame, run: Run) -> tuple[list[str], list[list[str]], list[bool]]:
    params = run.param_names
    header = ["arm", *params, "n", "test accuracy (%)", "final train loss"]
    best = winner(summary)
    rows, bold = [], []
    for r in summary.to_dict("records"):
        cells = [r["arm"], *(fmt_param(r[p]) for p in params), f"{r['n']}/{r['planned']}"]
        for metric, scale, digits in (("test_acc", 100, 2), ("final_train_loss", 1, 4)):
            m, h = _pm(r[f"{metric}_mean"], r[f"{metric}_ci_low"], r[f"{metric}_ci_high"], scale, digits)
            cells.append(f"{m} ± {h}" if h else m)
        rows.append(cells)
        bold.append(r["arm"] == best)
    return header, rows, bold


def to_text(summary: pd.DataFrame, run: Run) -> str:
    """Aligned plain-text table for the terminal; the best arm is starred."""
    header, rows, bold = _cells(summary, run)
    rows = [[("* " if b else "  ") + r[0], *r[1:]] for r, b in zip(rows, bold)]
    header = ["  " + header[0], *header[1:]]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(header), "-" * len(line(header)), *(line(r) for r in rows)]
    out.append(f"(mean ± 95 % CI half-width over seeds, {run.final_stage} stage; n = seeds scored on test/planned; * = best test accuracy)")
    return "\n".join(out)


def to_markdown(summary: pd.DataFrame, run: Run) -> str:
    header, rows, bold = _cells(summary, run)
    esc = lambda s: s.replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for cells, b in zip(rows, bold):
        cells = [esc(c) for c in cells]
        if b:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def to_latex(summary: pd.DataFrame, run: Run) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); the best arm's row in bold."""
    header, rows, bold = _cells(summary, run)
    tex_header = ["Arm", *(latex_escape(p) for p in run.param_names), "$n$", r"Test acc.\ (\%)", "Final train loss"]
    body = []
    for cells, b in zip(rows, bold):
        tex = [latex_escape(cells[0])] + [latex_escape(c) for c in cells[1:-2]]
        for c in cells[-2:]:
            tex.append(c.replace(" ± ", r" $\pm$ ").replace("–", "--"))
        if b:
            tex = [rf"\textbf{{{c}}}" for c in tex]
        body.append(" & ".join(tex) + r" \\")
    name = latex_escape(run.study.name)
    key = re.sub(r"[^A-Za-z0-9:-]+", "-", run.study.name)
    cols = "l" + "r" * (len(tex_header) - 1)
    return "\n".join([
        f"% Generated by 'ablate analyze' from {latex_escape(str(run.run_dir))}; needs \\usepackage{{booktabs}}.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{Study {name} ({run.final_stage} stage): mean $\pm$ 95\,\% confidence-interval half-width "
        rf"(Student $t$) over seeds; $n$ = seeds scored on test/planned. Best test accuracy in bold.}}",
        rf"\label{{tab:{key}}}",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        " & ".join(tex_header) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
        "",
    ])


def to_csv(summary: pd.DataFrame) -> str:
    return summary.to_csv(index=False)


def pct(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f} %"


def pp(x: float) -> str:
    """Percentage points, signed."""
    return "n/a" if math.isnan(x) else f"{100 * x:+.2f}"


def fmt_p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
