"""ablate.analysis on real tiny study runs (scikit-learn's digits, the real study engine through the CLI).

The tuned residual-vs-plain study (tune + confirm stages, `tuned_study`) and a depth study and a grid study
(confirm or grid stage only, `depth_and_grid_runs`) are background studies of helpers.background_studies.
Every other case works on copies.
"""
import json
import math
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats as st

from ablate.analysis import analyze, export, export_configs, latest_run
from ablate.analysis.figures.grad import grad_ratios
from ablate.analysis.load import load_grad_norms, load_run
from ablate.analysis.markdown_text import text
from ablate.analysis.statistics.summary import summarize
from ablate.analysis.text.tables import latex_escape, to_latex
from ablate.errors import AblateError
from ablate.spec.trial_config import TrialConfig


@pytest.fixture(scope="module")
def runs(depth_and_grid_runs, tuned_study, tuned_analysis):
    made = depth_and_grid_runs
    return {**made, "tuned": tuned_study, "tuned_result": tuned_analysis,
            "depth_result": analyze(made["depth"], made["tmp"] / "depth-analysis")}


def copy_run(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("ray", "ray_tmp", "analysis", "optuna.db"))
    return dest


def drop_registry_rows(run_dir: Path, keep) -> None:
    path = run_dir / "trials.jsonl"
    lines = [l for l in path.read_text().splitlines() if keep(json.loads(l))]
    path.write_text("".join(l + "\n" for l in lines))


def assert_figures(result, names):
    assert set(result.figures) == set(names), result.skipped
    for name in names:
        png, pdf = result.figures[name]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000


# --- the tuned study ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_analyze_writes_every_output(runs):
    result = runs["tuned_result"]
    assert result.out_dir == runs["tuned"] / "analysis"
    assert_figures(result, ["test_accuracy", "paired_differences", "curves", "grad_profile", "grad_heatmap", "tuning", "lr_curves",
                            "expected_max"])
    assert result.skipped == {} and result.missing == []
    for path in (result.summary_csv, result.summary_tex, result.report, result.comparisons_csv, result.html,
                 result.methods, result.references):
        assert path.parent == result.out_dir and path.stat().st_size > 100


@pytest.mark.slow
def test_summary_equals_pandas_recomputation_from_trials_csv(runs):
    trials = pd.read_csv(runs["tuned"] / "trials.csv")
    summary = pd.read_csv(runs["tuned_result"].summary_csv)
    confirm = trials[(trials["stage"] == "confirm") & (trials["status"] == "ok")]
    assert list(summary["arm"]) == ["residual=true", "residual=false"]
    for arm, group in confirm.groupby("arm"):
        row = summary.set_index("arm").loc[arm]
        assert row["n"] == len(group) == 3 and row["planned"] == 3
        assert row["lr"] == pytest.approx(group["lr"].iloc[0]) and group["lr"].nunique() == 1
        for metric in ("test_acc", "final_train_loss"):
            x = group[metric]
            low, high = st.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=st.sem(x))
            # cut at what is possible: a loss is >= 0, an accuracy in [0, 1]
            low, high = max(low, 0.0), (min(high, 1.0) if metric == "test_acc" else high)
            assert row[f"{metric}_mean"] == pytest.approx(x.mean())
            assert row[f"{metric}_std"] == pytest.approx(x.std(ddof=1))
            assert (row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]) == pytest.approx((low, high))
    # the tuned lr is that of a tuning trial with the arm's best dev accuracy (tiny runs often tie)
    tune = trials[trials["stage"] == "tune"]
    for arm, group in tune.groupby("arm"):
        best = group[group["best_dev_acc"] == group["best_dev_acc"].max()]["lr"]
        assert any(summary.set_index("arm").loc[arm, "lr"] == pytest.approx(lr) for lr in best)


@pytest.mark.slow
def test_latex_table_is_balanced_booktabs_without_unsupported_bold(runs):
    tex = runs["tuned_result"].summary_tex.read_text()
    begins, ends = re.findall(r"\\begin\{(\w+)\}", tex), re.findall(r"\\end\{(\w+)\}", tex)
    assert sorted(begins) == sorted(ends) and "tabular" in begins
    assert tex.index(r"\begin{tabular}") < tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule") < tex.index(r"\end{tabular}")
    body = tex[tex.index(r"\midrule"): tex.index(r"\bottomrule")]
    rows = [l for l in body.splitlines() if l.endswith(r"\\")]
    assert [r.split(" & ")[0] for r in rows] == ["residual", "plain"]
    # 3 seed pairs: the exact sign-flip test cannot reach p < 0.05, so no row may be bold
    assert runs["tuned_result"].winner is None and r"\textbf" not in tex and "No arm is bold" in tex
    summary = runs["tuned_result"].summary.set_index("arm")
    r = summary.loc["residual=true"]
    half = 100 * (r["test_acc_ci_high"] - r["test_acc_ci_low"]) / 2
    assert rows[0].startswith(f"residual & {r['lr']:.3g} & 3/3 & {100 * r['test_acc_mean']:.1f} & {half:.1f} & ")
    assert "scikit-learn digits" in tex and "64 test images" in tex and str(runs["tuned"]) not in tex


@pytest.mark.slow
def test_latex_escapes_special_characters_in_arm_names(runs):
    run = load_run(runs["tuned"])
    weird = ["net_a & b 50% #1", r"x{y}~z^\w"]
    tex = to_latex(summarize(run).assign(arm=weird), run)  # names unknown to the spec are shown as given
    assert r"net\_a \& b 50\% \#1" in tex and r"x\{y\}\textasciitilde{}z\textasciicircum{}\textbackslash{}w" in tex
    for line in tex.splitlines():
        if line.startswith(("net", r"\textbf{net", "x", r"\textbf{x")):
            assert re.search(r"(?<!\\)[&%#_]", line.replace(" & ", " ")) is None
    assert latex_escape("residual=true,shortcut=projection") == "residual=true,shortcut=projection"


@pytest.mark.slow
def test_report_gives_the_paired_statistics_and_embeds_existing_figures(runs):
    result = runs["tuned_result"]
    md = result.report.read_text()
    assert "Winner" not in md and "**Best arm" not in md
    comp = pd.read_csv(result.comparisons_csv)
    assert len(comp) == 1 and comp.loc[0, "n_pairs"] == 3 and comp.loc[0, "verdict"] == "inconclusive"
    trials = pd.read_csv(runs["tuned"] / "trials.csv")
    confirm = trials[trials["stage"] == "confirm"].pivot(index="seed", columns="arm", values="test_acc")
    d = confirm["residual=true"] - confirm["residual=false"]
    assert comp.loc[0, "diff"] == pytest.approx(d.mean())
    if d.std() > 0:
        low, high = st.t.interval(0.95, 2, loc=d.mean(), scale=st.sem(d))
        assert (comp.loc[0, "diff_ci_low"], comp.loc[0, "diff_ci_high"]) == pytest.approx((low, high))
    nonzero = int((d != 0).sum())  # a pair tied at 0 carries no sign: the smallest p the rest allow is 2 / 2^nonzero
    tied = f", {3 - nonzero} tied at 0" if nonzero < 3 else ""
    assert "exact sign-flip test over all 2^3 = 8 sign patterns" in md
    assert f"the smallest p {nonzero} pairs that differ allow is {2 / 2 ** nonzero:.3g}{tied})" in md
    assert "**Verdict: inconclusive**" in md and "more seeds are needed" in md
    assert "Per test image (3 seed pair(s) with predictions.csv, the same test images" in md
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) == len(result.figures) == 8  # paired_differences among them
    for rel in images:
        assert not Path(rel).is_absolute() and (result.out_dir / rel).is_file()
    assert "Every planned trial has a result" in md and "on **scikit-learn digits**" in md


@pytest.mark.slow
def test_terminal_table_lists_every_arm(runs):
    table = runs["tuned_result"].table
    lines = table.splitlines()
    for arm in ("residual=true", "residual=false"):
        row = next(l for l in lines if arm + " " in l)
        assert "3/3" in row and "±" in row
    # nothing is starred without support
    assert not any(l.startswith("* ") for l in lines) and "no arm is starred" in table


@pytest.mark.slow
def test_partial_run_is_analysed_and_says_what_is_missing(runs, tmp_path):
    run_dir = copy_run(runs["tuned"], tmp_path / "partial")
    dropped = []

    def keep(row):
        if row["stage"] == "confirm" and row["arm"] == "residual=false" and row["seed"] != 0:
            dropped.append(row["trial_id"])
            return False
        return True

    drop_registry_rows(run_dir, keep)
    assert len(dropped) == 2
    result = analyze(run_dir, figures=False)
    assert result.missing == ["confirm stage, arm residual=false: 1 of 3 planned trials finished"]
    md = result.report.read_text()
    assert "**incomplete**" in md and "confirm stage, arm residual=false: 1 of 3 planned trials finished" in md
    summary = result.summary.set_index("arm")
    assert summary.loc["residual=false", "n"] == 1 and math.isnan(summary.loc["residual=false", "test_acc_ci_low"])
    assert summary.loc["residual=true", "n"] == 3
    assert "1/3" in result.table


@pytest.mark.slow
def test_run_without_gradient_logs_skips_those_figures_and_says_so(runs, tmp_path):
    run_dir = copy_run(runs["depth"], tmp_path / "nograd")
    for path in run_dir.glob("trials/*/grad_norms.csv"):
        path.unlink()
    # as a run with telemetry off registers its trials: no grad_norms.csv among the hashed records
    path = run_dir / "trials.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row.get("sha256", {}).pop("grad_norms.csv", None)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = analyze(run_dir)
    assert set(result.skipped) == {"grad_profile", "grad_heatmap", "depth_grad_ratio"}
    assert_figures(result, ["test_accuracy", "paired_differences", "curves", "depth", "effects"])
    assert not list((result.out_dir / "figures").glob("grad_*"))
    md = result.report.read_text()
    assert "Not drawn" in md and all(f"- {name}: " in md for name in result.skipped) and "grad_norms.csv" in md


# --- the depth study ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_depth_study_figures_and_degradation_statement(runs):
    result = runs["depth_result"]
    assert result.out_dir == runs["tmp"] / "depth-analysis" and result.report.is_file()
    assert_figures(result, ["test_accuracy", "paired_differences", "curves", "grad_profile", "grad_heatmap", "depth", "depth_grad_ratio",
                            "effects"])
    md = result.report.read_text()
    assert "## Depth" in md and "Definition: the plain network *degrades*" in md
    # Recompute the rule from trials.csv: plain accuracy per depth vs smallest depth minus CI half-width.
    trials = pd.read_csv(runs["depth"] / "trials.csv")
    plain = trials[(trials["residual"] == False) & (trials["status"] == "ok")]  # noqa: E712
    by_depth = plain.groupby("depth")["test_acc"]
    base = plain[plain["depth"] == 20]["test_acc"]
    half = st.t.ppf(0.975, len(base) - 1) * st.sem(base)
    worse = [d for d, mean in by_depth.mean().items() if d > 20 and mean < base.mean() - half]
    if base.mean() - half <= 0.1:  # the threshold at or below chance: the rule cannot fire
        assert "**cannot be assessed** by this rule" in md
    elif worse:
        assert f"starts to degrade at depth **{worse[0]}**" in md
    else:
        assert "no deeper net's mean fell below the threshold at any depth tested (20, 32" in md
    assert "What the data show: mean test accuracy" in md
    # 4 arms: every pair compared, the sign-flip p-values Holm-corrected; in words the residual-vs-plain pairs
    comp = pd.read_csv(result.comparisons_csv)
    assert len(comp) == 6 and (comp["p_holm"] >= comp["p_sign_flip"]).all()
    assert "All pairs (p-values Holm-corrected over all pairs" in md
    results = md[md.index("## Results"): md.index("## Seeds")]  # the lead names every compared pair, this does not
    assert results.count("- `depth=20,residual=true` minus `depth=20,residual=false`") == 1
    assert "- `depth=20,residual=true` minus `depth=32,residual=true`" not in results


@pytest.mark.slow
def test_gradient_ratio_is_first_block_conv_over_last_block_conv_at_init(runs):
    run = load_run(runs["depth"])
    grads = load_grad_norms(run)
    ratios = grad_ratios(grads).set_index("trial_id")
    assert set(ratios.index) == set(run.ok["trial_id"])
    trial = run.ok["trial_id"].iloc[0]
    raw = pd.read_csv(runs["depth"] / "trials" / trial / "grad_norms.csv")
    init = raw[(raw["kind"] == "layer") & (raw["step"] == 0) & ~raw["block"].isin(["stem", "head"])
               & ~raw["layer"].str.contains("shortcut")].sort_values("layer_index")
    first, last = init.iloc[0], init.iloc[-1]
    assert first["layer"] == "stages.0.0.conv1" and last["layer"].endswith(".conv2")
    assert ratios.loc[trial, "ratio"] == pytest.approx(first["grad_norm"] / last["grad_norm"])
    assert ratios.loc[trial, "rel_ratio"] == pytest.approx(
        (first["grad_norm"] / first["weight_norm"]) / (last["grad_norm"] / last["weight_norm"]))


@pytest.mark.slow
def test_gradient_profiles_follow_the_main_path(runs):
    # The tuned run's residual arm has 1x1 projection shortcuts, logged at their block's layer index.
    run = load_run(runs["tuned"])
    grads = load_grad_norms(run)
    layers = grads[grads["kind"] == "layer"]
    assert not layers.duplicated(["trial_id", "step", "layer_index"]).any()
    assert not layers["layer"].str.contains("shortcut").any()
    trial = run.ok[run.ok["arm"] == "residual=true"]["trial_id"].iloc[0]
    raw = pd.read_csv(runs["tuned"] / "trials" / trial / "grad_norms.csv")
    raw = raw[(raw["kind"] == "layer") & (raw["step"] == 0)]
    assert raw["layer"].str.contains("shortcut").sum() == 2  # cifar-20: stages 1 and 2 change shape
    kept = layers[(layers["trial_id"] == trial) & (layers["step"] == 0)]
    main = raw[~raw["layer"].str.contains("shortcut")]
    assert kept["grad_norm"].tolist() == pytest.approx(main["grad_norm"].tolist())
    assert kept["layer_index"].tolist() == list(range(len(main)))


@pytest.mark.slow
def test_lesion_study_is_drawn_and_reported(runs, tmp_path):
    run_dir = copy_run(runs["depth"], tmp_path / "lesion")
    # the study engine keeps the best-dev weights of every confirm run
    confirm = [json.loads(l) for l in (run_dir / "trials.jsonl").read_text().splitlines()]
    assert all((run_dir / "trials" / r["trial_id"] / "weights.pt").exists() for r in confirm if r["stage"] == "confirm")
    result = analyze(run_dir, lesion=True)
    assert "lesion" not in result.skipped
    assert_figures(result, ["test_accuracy", "paired_differences", "curves", "grad_profile", "grad_heatmap", "depth", "depth_grad_ratio",
                            "effects", "lesion"])
    table = pd.read_csv(result.lesion_csv)
    # one intact row per lesioned trial, then one row per block: cifar-20 has 9 blocks, cifar-32 has 15
    assert set(table["arm"]) == set(runs["depth_result"].summary["arm"]) and sorted(table["seed"].unique().tolist()) == [0, 1]
    for trial_id, rows in table.groupby("trial_id"):
        depth = int(rows["arm"].iloc[0].split(",")[0].split("=")[1])
        assert len(rows) == 1 + 3 * (depth - 2) // 6 and (rows["block"] == "none").sum() == 1
    md = result.report.read_text()
    assert "## Lesion study" in md and "![lesion](figures/lesion.png)" in md
    # the methods paragraph names the lesion study and cites it (and the bib has the entry)
    assert "[@veit2016residual]" in result.methods.read_text() and "@inproceedings{veit2016residual," in result.references.read_text()
    lesions = table[table["block"] != "none"]
    for (arm, kind), rows in lesions.groupby(["arm", "block_type"]):
        per_seed = rows.groupby("trial_id")["drop"].mean()
        intact = table[(table["arm"] == arm) & (table["block"] == "none")]["test_acc"].mean()
        blocks = rows["block"].nunique()
        assert (f"`{arm}`, {blocks} {kind} block(s) (2 seed(s)): intact {100 * intact:.1f} %;" in md
                and f"drop {100 * per_seed.mean():+.1f} pp" in md), (arm, kind)
    # the intact row reproduces the recorded test accuracy of each trial from its saved weights
    recorded = pd.read_csv(run_dir / "trials.csv").set_index("trial_id")["test_acc"]
    for row in table[table["block"] == "none"].itertuples():
        assert row.test_acc == pytest.approx(recorded[row.trial_id])


@pytest.mark.slow
def test_lesion_without_saved_weights_is_skipped_with_the_reason(runs, tmp_path):
    run_dir = copy_run(runs["tuned"], tmp_path / "noweights")
    for path in run_dir.glob("trials/*/weights.pt"):
        path.unlink()
    result = analyze(run_dir, lesion=True)
    assert "weights.pt" in result.skipped["lesion"] and result.lesion_csv is None and "lesion" not in result.figures
    # report.md shows the reason as Markdown text: its backticks and the run folder's path escaped
    assert f"- lesion: {text(result.skipped['lesion'])}" in result.report.read_text()


# --- the lr grid study -------------------------------------------------------------------------------
@pytest.mark.slow
def test_grid_study_reports_each_arm_at_its_best_dev_grid_point(runs):
    result = analyze(runs["grid"])
    assert_figures(result, ["test_accuracy", "paired_differences", "curves", "grad_profile", "grad_heatmap", "lr_grid", "effects",
                            "lr_curves"])
    assert result.skipped == {}
    trials = pd.read_csv(runs["grid"] / "trials.csv")
    ok = trials[(trials["stage"] == "grid") & (trials["status"] == "ok")]
    summary = pd.read_csv(result.summary_csv).set_index("arm")
    for arm, group in ok.groupby("arm"):
        dev = group.groupby("lr")["best_dev_acc"].mean()
        chosen = summary.loc[arm, "lr"]
        assert dev[chosen] == dev.max()  # selected by dev accuracy, never by test accuracy
        at = group[group["lr"] == chosen]
        assert summary.loc[arm, "n"] == len(at) == 2 and summary.loc[arm, "planned"] == 2
        assert summary.loc[arm, "test_acc_mean"] == pytest.approx(at["test_acc"].mean())
    md = result.report.read_text()
    assert "grid point with the best mean **dev** accuracy" in md and "Every planned trial has a result" in md
    assert len(export_configs(runs["grid"], result.out_dir / "configs")) == len(ok) == 8


# --- export, latest_run, bad input -------------------------------------------------------------------
@pytest.mark.slow
def test_export_formats(runs):
    result = runs["tuned_result"]
    assert export(runs["tuned"], "latex") == result.summary_tex.read_text()
    assert export(runs["tuned"], "LaTeX") == result.summary_tex.read_text()
    from io import StringIO

    pd.testing.assert_frame_equal(pd.read_csv(StringIO(export(runs["tuned"], "csv"))), pd.read_csv(result.summary_csv))
    md = export(runs["tuned"], "markdown").splitlines()
    assert md[0].startswith("| arm | lr | seeds |") and set(md[1]) <= set("|-:") and len(md) == 6
    assert not any("**" in l for l in md) and "scikit-learn digits" in md[-1]
    with pytest.raises(AblateError, match="unknown export format 'xlsx'; valid formats: latex, csv, markdown"):
        export(runs["tuned"], "xlsx")


@pytest.mark.slow
def test_export_configs_copies_every_final_stage_config(runs, tmp_path):
    paths = export_configs(runs["depth"], tmp_path / "configs")
    rows = [json.loads(l) for l in (runs["depth"] / "trials.jsonl").read_text().splitlines()]
    assert len(paths) == len([r for r in rows if r["stage"] == "confirm"]) == 8
    for path in paths:
        m = re.fullmatch(r"depth-(\d+)_residual-(true|false)_seed(\d+)_([0-9a-f]{12})", path.parent.name)
        assert m and path.name == "config.yaml", path
        # what the trial recorded travels with it, so `reproduce` can check it anywhere
        assert {"metrics.json", "curves.csv"} <= {p.name for p in path.parent.iterdir()}
        cfg = TrialConfig.from_yaml_file(path)
        assert cfg.trial_id() == m.group(4) and cfg.depth == int(m.group(1))
        assert cfg.residual == (m.group(2) == "true") and cfg.seed == int(m.group(3))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(AblateError, match="is not a folder"):
        export_configs(runs["depth"], tmp_path / "afile")


@pytest.mark.slow
def test_bad_inputs_raise_one_line_ablate_errors(runs, tmp_path):
    with pytest.raises(AblateError, match="is not a study run folder") as exc:
        analyze(tmp_path)
    assert "\n" not in str(exc.value)
    with pytest.raises(AblateError, match="is not a study run folder"):
        export(tmp_path / "nowhere", "csv")
    unfinished = copy_run(runs["tuned"], tmp_path / "unfinished")
    drop_registry_rows(unfinished, lambda row: row["stage"] != "confirm")
    with pytest.raises(AblateError, match="has no finished confirm-stage trials"):
        analyze(unfinished)
    # tune rows alone still exist, but no confirm trial has finished with a test score
    drop_registry_rows(unfinished, lambda row: False)
    with pytest.raises(AblateError, match="has no finished confirm-stage trials"):
        analyze(unfinished)


@pytest.mark.slow
def test_latest_run_picks_the_newest_study_folder(runs, tmp_path):
    root = tmp_path / "runs"
    with pytest.raises(AblateError, match="no study run folders under"):
        latest_run(root)
    spec = (runs["tuned"] / "spec.yaml").read_text()
    for rel in ("tuned/20260101-120000", "tuned/20260301-080000", "depth/20260201-000000"):
        (root / rel).mkdir(parents=True)
        (root / rel / "spec.yaml").write_text(spec)
    (root / "train" / "20270101-000000-abc").mkdir(parents=True)  # a train run: no spec.yaml
    assert latest_run(root) == root / "tuned" / "20260301-080000"
    # a hand-named folder has no timestamp: its modification time decides
    (root / "mine").mkdir()
    (root / "mine" / "spec.yaml").write_text(spec)
    assert latest_run(root) == root / "mine"
    old = time.time() - 10 * 365 * 86400
    import os

    os.utime(root / "mine", (old, old))
    assert latest_run(root) == root / "tuned" / "20260301-080000"
