"""summary.tex for a paper, the exports, and every output naming the dataset actually used and saying
when a study was resumed; on constructed run folders."""
import io
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from typer.testing import CliRunner

from ablate.analysis import analyze, export
from ablate.cli.app import app
from helpers.runs import build_run, spec_doc

RES, PLAIN = "residual=true", "residual=false"


def two_arm_run(tmp_path, **kwargs):
    accs = {RES: [0.990, 0.995, 0.995], PLAIN: [0.895, 0.940, 0.985]}
    trials = [{"arm": a, "seed": s, "test_acc": acc, "final_test_acc": acc - 0.01} for a, v in accs.items()
              for s, acc in enumerate(v)]
    return build_run(tmp_path / "run", trials, **kwargs)


def columns_of(spec: str) -> int:
    """Cells a row of a tabular with this column spec has (r@{...}l is two cells)."""
    return len(re.findall(r"[lrc]", re.sub(r"@\{[^{}]*(\{[^{}]*\}[^{}]*)*\}", "", spec)))


def check_tabular(tex: str) -> list[str]:
    begins, ends = re.findall(r"\\begin\{(\w+)\}", tex), re.findall(r"\\end\{(\w+)\}", tex)
    assert sorted(begins) == sorted(ends)
    spec = re.search(r"\\begin\{tabular\}\{(.*)\}\n", tex).group(1)
    n = columns_of(spec)
    body = tex[tex.index(r"\toprule"): tex.index(r"\bottomrule")]
    rows = [l for l in body.splitlines() if l.endswith(r"\\")]
    for row in rows:
        spans = sum(int(k) - 1 for k in re.findall(r"\\multicolumn\{(\d+)\}", row))
        assert row.count(" & ") + 1 + spans == n, row
    return rows


def test_latex_for_a_paper_readable_labels_caption_difference_column_no_paths(tmp_path):
    run = two_arm_run(tmp_path)
    result = analyze(run)
    tex = result.summary_tex.read_text()
    rows = check_tabular(tex)
    assert [r.split(" & ")[0] for r in rows[1:]] == ["residual", "plain"]
    assert r"\textbf" not in tex and "No arm is bold: no difference is supported by the data." in tex
    caption = re.search(r"\\caption\{(.*)\}\n", tex).group(1)
    for text in ("ResNet-18 on scikit-learn digits", "1000 training, 200 dev and 200 test images", "32$\\times$32 px",
                 "80 SGD steps of batch 64", "over 3 seeds"):
        assert text in caption, text
    # plain minus residual, paired by seed, with its t-interval, in the precision of 200 test images
    d = np.array([0.895, 0.940, 0.985]) - np.array([0.990, 0.995, 0.995])
    low, high = st.t.interval(0.95, 2, loc=d.mean(), scale=st.sem(d))
    fmt = lambda x: f"{100 * x:+.1f}".replace("-", "$-$")
    assert rows[2].endswith(f"& {fmt(d.mean())} & [{fmt(low)}, {fmt(high)}] \\\\")
    assert rows[1].endswith(r"\multicolumn{2}{c}{(reference)} \\")
    assert str(tmp_path) not in tex and "/" not in tex.splitlines()[0]


def test_latex_two_factor_study_is_laid_out_factor_by_factor(tmp_path):
    doc = spec_doc(seeds=[0, 1], base={**spec_doc()["base"], "family": "cifar", "shortcut": "identity"},
                   factors={"depth": {"values": [20, 32]}, "residual": {"values": [True, False]}})
    accs = {(20, True): (0.95, 0.96), (20, False): (0.90, 0.92), (32, True): (0.96, 0.97), (32, False): (0.50, 0.60)}
    trials = [{"arm": f"depth={d},residual={str(r).lower()}", "seed": s, "test_acc": a}
              for (d, r), v in accs.items() for s, a in enumerate(v)]
    tex = analyze(build_run(tmp_path / "run", trials, doc=doc), figures=False).summary_tex.read_text()
    rows = check_tabular(tex)
    assert rows[0] == (r"Depth & \multicolumn{2}{c}{Residual} & \multicolumn{2}{c}{Plain} & "
                       r"\multicolumn{2}{c}{$\Delta$ residual $-$ plain} \\")
    assert [r.split(" & ")[0] for r in rows[1:]] == ["20", "32"]
    half = lambda v: 100 * st.t.ppf(0.975, 1) * st.sem(v)
    # two seeds: both t-intervals pass 100 % (and one 0 %), so they are cut there, shown as [low, high] with a dagger
    cut = lambda m, v: rf"\multicolumn{{2}}{{c}}{{{m:.1f} [{max(0, m - half(v)):.1f}, {min(100, m + half(v)):.1f}]$^\dagger$}}"
    assert rows[2].startswith(f"32 & {cut(96.5, [0.96, 0.97])} & {cut(55.0, [0.5, 0.6])} & +41.5 & ")
    assert r"$^\dagger$: the 95\,\% $t$-interval passed 0 or 100\,\% and is cut there" in tex
    assert "CIFAR-style ResNets, depths 20--32 on scikit-learn digits" in tex


def test_exports_name_the_dataset(tmp_path):
    run = two_arm_run(tmp_path)
    result = analyze(run, figures=False)
    assert export(run, "latex") == result.summary_tex.read_text()
    csv = pd.read_csv(io.StringIO(export(run, "csv")))
    assert set(csv["dataset"]) == {"digits"} and {"final_test_acc_mean", "test_acc_all_mean"} <= set(csv.columns)
    md = export(run, "markdown").splitlines()
    assert md[0].startswith("| arm | seeds | test acc. (%) | final-ckpt test acc. (%) |")
    assert md[-1].startswith("Test accuracy (%) of ResNet-18 on scikit-learn digits")
    cli = CliRunner().invoke(app, ["export", str(run), "--format", "markdown"])
    assert cli.exit_code == 0 and "scikit-learn digits" in cli.output


def test_report_names_the_dataset_used_not_the_one_in_the_description(tmp_path):
    result = analyze(two_arm_run(tmp_path), figures=False)
    md = result.report.read_text()
    assert "ResNet-18 on **scikit-learn digits** (the dataset the trials actually used)" in md
    assert "Note: the spec's description names MNIST, but this run used scikit-learn digits." in md
    assert "The study ran in one go (no `study --resume`)." in md
    assert "ResNet-18 on scikit-learn digits" in result.table


def test_resumes_and_mixed_datasets_are_reported(tmp_path):
    accs = [0.95, 0.96]
    trials = [{"arm": a, "seed": s, "test_acc": acc, "dataset": "digits" if s == 0 else "mnist"}
              for a in (RES, PLAIN) for s, acc in enumerate(accs)]
    run = build_run(tmp_path / "run", trials, doc=spec_doc(seeds=[0, 1]),
                    resumes=[{"dataset": "mnist", "started_at": "2026-01-02T09:00:00+0000"}])
    md = analyze(run, figures=False).report.read_text()
    assert "The study was resumed 1 time(s) with `study --resume` (2026-01-02T09:00:00+0000)" in md
    assert "At the resume of 2026-01-02T09:00:00+0000: dataset digits → mnist." in md
    assert ("**Warning**: the trials of this run used different datasets (scikit-learn digits: 2 trial(s), MNIST: "
            "2 trial(s))") in md
    assert "on **scikit-learn digits + MNIST** (the datasets the trials actually used)" in md


def test_analyze_cli_bad_run_folder_is_one_line_exit_2(tmp_path):
    out = CliRunner().invoke(app, ["analyze", str(tmp_path)])
    assert out.exit_code == 2 and out.output.count("\n") == 1 and out.output.startswith("error: ")
    assert not (tmp_path / "analysis").exists()


@pytest.mark.parametrize("fmt", ["xlsx", "tex"])
def test_export_cli_bad_format_is_one_line_exit_2(tmp_path, fmt):
    run = two_arm_run(tmp_path)
    out = CliRunner().invoke(app, ["export", str(run), "--format", fmt])
    assert out.exit_code == 2 and out.output.strip() == f"error: unknown export format '{fmt}'; valid formats: latex, csv, markdown"
