"""Factorial answers on constructed run folders whose answers are known: each factor's effect at each level
of the others (paired by seed, Holm within the factor), the interaction, nested factors, grid parameters
as factors, the report's first lines, and the all-pairs table leaving the report above four arms."""
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from ablate.analysis import analyze
from ablate.analysis.statistics.factorial import design, effects, interactions
from ablate.analysis.figures.arms import run_styles
from ablate.analysis.load import load_run
from ablate.analysis.statistics.stats import holm
from helpers.runs import spec_doc, build_run

SEEDS = list(range(7))  # 7 seeds: the exact sign-flip test can reach 2/2^7 = 0.0156, Holm over 3 still < 0.05
CIFAR = {**spec_doc()["base"], "family": "cifar", "shortcut": "identity"}


def t_interval(x):
    x = np.asarray(x, dtype=float)
    return st.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=st.sem(x))


def depth_run(tmp_path):
    """Residual nets at 0.90 (+ seed noise); plain nets lose b(depth, s) = 0.02 + slope_s * (depth - 20) / 12,
    slope_s = 0.03 + 0.002 (s - 3): the benefit grows by 3 pp per 12 layers on average."""
    doc = spec_doc(base=CIFAR, seeds=SEEDS, factors={"depth": {"values": [20, 32, 44]},
                                                    "residual": {"values": [True, False]}})
    trials = []
    for s in SEEDS:
        slope = 0.03 + 0.002 * (s - 3)
        for depth in (20, 32, 44):
            res = 0.9 + 0.001 * s
            trials.append({"arm": f"depth={depth},residual=true", "seed": s, "test_acc": res})
            trials.append({"arm": f"depth={depth},residual=false", "seed": s,
                           "test_acc": res - (0.02 + slope * (depth - 20) / 12)})
    return build_run(tmp_path / "depth", trials, doc=doc)


def test_residual_effect_at_each_depth_and_its_growth_per_12_layers(tmp_path):
    run = load_run(depth_run(tmp_path))
    d = design(run)
    assert d.factors == ["depth", "residual"] and d.focus == "residual" and d.reference("residual") is False
    eff = effects(d)
    res = eff[eff["factor"] == "residual"].reset_index(drop=True)
    assert [r["depth"] for r in res["context"]] == [20, 32, 44]
    for r in res.itertuples():
        diffs = [0.02 + (0.03 + 0.002 * (s - 3)) * (r.context["depth"] - 20) / 12 for s in SEEDS]
        assert r.diff == pytest.approx(np.mean(diffs)) and r.n_pairs == 7
        if r.context["depth"] > 20:
            assert (r.ci_low, r.ci_high) == pytest.approx(t_interval(diffs))
        assert r.p_sign_flip == pytest.approx(2 / 2 ** 7)  # every seed favours residual
    assert res["p_holm"].tolist() == pytest.approx(holm(res["p_sign_flip"].tolist()))
    assert res["p_holm"].tolist() == pytest.approx([3 * 2 / 2 ** 7] * 3)
    assert set(res["verdict"]) == {"supported"}
    # depth's own effects: each depth minus depth 20, at residual and at plain (6 effects, one Holm family)
    dep = eff[eff["factor"] == "depth"]
    assert len(dep) == 4 and dep["p_holm"].tolist() == pytest.approx(holm(dep["p_sign_flip"].tolist()))
    plain44 = dep[(dep["level"] == 44) & (dep["context"].map(lambda c: c["residual"]) == False)].iloc[0]  # noqa: E712
    assert plain44["diff"] == pytest.approx(-(0.03 * 2))
    inter = interactions(d, eff)
    trend = inter[inter["kind"] == "linear trend"].iloc[0]
    slopes = [0.03 + 0.002 * (s - 3) for s in SEEDS]
    assert trend["unit"] == "per 12 added layers" and trend["estimate"] == pytest.approx(0.03)
    assert (trend["ci_low"], trend["ci_high"]) == pytest.approx(t_interval(slopes))
    dod = inter[inter["kind"] == "difference of differences"].iloc[0]
    assert dod["contrast"] == "depth 44 minus depth 20" and dod["estimate"] == pytest.approx(0.06)


@pytest.mark.slow
def test_the_depth_report_answers_in_its_first_lines(tmp_path):
    result = analyze(depth_run(tmp_path))
    md = result.report.read_text()
    # the lead report.html shares, then the answer
    assert re.findall(r"^## (.+)$", md, re.M)[:2] == ["At a glance", "Answer"]
    answer = md[md.index("## Answer"): md.index("## Completeness")]
    assert "- **residual minus plain**: +2.0 pp at depth 20 ([+2.0, +2.0] pp, p = 0.047, **supported**); " \
           "+5.0 pp at depth 32 " in answer
    assert "changes by **+3.0 pp per 12 added layers**: mean over 7 seeds of each seed's least-squares slope against " \
           "depth, 95 % t-interval [+2.6, +3.4] pp, sign-flip p = 0.016, Holm over the 2 interaction rows p = 0.031" in answer
    assert "Supported by the data (CI excludes 0 and Holm-corrected p < 0.05): residual minus plain at depth 20; " in answer
    assert "the linear trend of the effect against depth; the difference of the effect between depth 44 and depth 20." \
        in answer
    assert "Holm-corrected within the factor's family" in answer
    assert "effects" in result.figures and result.figures["effects"][0].read_bytes()[:4] == b"\x89PNG"
    written = pd.read_csv(result.out_dir / "effects.csv")
    assert len(written) == len(result.effects) == 3 + 4 and "diffs" not in written
    assert len(pd.read_csv(result.out_dir / "interactions.csv")) == 2
    # 6 arms: the all-pairs table (15 pairs) leaves the report and stays in comparisons.csv
    results = md[md.index("## Results"):md.index("## Seeds")]
    assert "| arm A | arm B |" not in results and "there are 15 pairs of arms" in results
    # the seeds-for-power table keeps to the 9 pairs that differ in one factor (3 residual, 3 x 2 depth)
    seeds = md[md.index("## Seeds"):]
    seeds = seeds[:seeds.index("\n## ", 5)] if "\n## " in seeds[5:] else seeds
    assert "Shown: the 9 pairs of arms that differ in one factor" in seeds
    assert sum(1 for line in seeds.splitlines() if line.startswith("| `")) == 9
    assert len(pd.read_csv(result.comparisons_csv)) == 15
    assert "residual minus plain" in result.table  # the terminal summary leads with the answer too


def test_styles_encode_depth_by_colour_and_residual_by_marker_and_line(tmp_path):
    run = load_run(depth_run(tmp_path))
    styles = run_styles(run)
    for depth in (20, 32, 44):
        on, off = styles[f"depth={depth},residual=true"], styles[f"depth={depth},residual=false"]
        assert on["color"] == off["color"] and (on["marker"], on["ls"]) == ("o", "-") and (off["marker"], off["ls"]) == ("s", "--")
    assert len({styles[f"depth={d},residual=true"]["color"] for d in (20, 32, 44)}) == 3


def where_run(tmp_path, seeds=(0, 1, 2)):
    """Plain 0.80; residual in all stages 0.90, in stage 1 only 0.82, in stage 2 only 0.86 (+ 0.01 per seed)."""
    doc = spec_doc(seeds=list(seeds), factors={"residual": {"values": [True, False]},
                                               "residual_stages": {"values": [None, [1], [2]],
                                                                   "requires": {"residual": True}}})
    acc = {"residual=true,residual_stages=None": 0.90, "residual=true,residual_stages=[1]": 0.82,
           "residual=true,residual_stages=[2]": 0.86, "residual=false": 0.80}
    trials = [{"arm": arm, "seed": s, "test_acc": a + 0.01 * s + (0.002 * s if arm != "residual=false" else 0)}
              for arm, a in acc.items() for s in seeds]
    return build_run(tmp_path / "where", trials, doc=doc)


def test_nested_factor_each_residual_arm_against_the_one_plain_arm(tmp_path):
    run = load_run(where_run(tmp_path))
    d = design(run)
    eff = effects(d)
    res = eff[eff["factor"] == "residual"]
    assert res["reference_arm"].tolist() == ["residual=false"] * 3
    assert [c["residual_stages"] for c in res["context"]] == [None, [1], [2]]
    assert res["diff"].tolist() == pytest.approx([0.10 + 0.002, 0.02 + 0.002, 0.06 + 0.002])
    stages = eff[eff["factor"] == "residual_stages"]
    assert stages["reference_arm"].tolist() == ["residual=true,residual_stages=None"] * 2
    assert stages["diff"].tolist() == pytest.approx([-0.08, -0.04])
    assert interactions(d, eff).empty  # nested: no interaction beyond residual_stages' own effects
    md = analyze(where_run(tmp_path / "again"), figures=False).report.read_text()
    answer = md[md.index("## Answer"): md.index("## Completeness")]
    assert "- **residual minus plain**: +10.2 pp in all stages ([+9.7, +10.7] pp, p = 0.750); +2.2 pp in stage 1 " \
           "only ([+1.7, +2.7] pp, p = 0.750)" in answer
    assert "- **stage 1 only minus all stages**: -8.0 pp in the residual net" in answer
    assert "with 3 seed pairs the exact sign-flip test cannot go below p = 2/2^3 = 0.25" in answer
    assert "No interaction is computed" in md


def test_a_two_by_two_interaction_is_the_difference_of_differences(tmp_path):
    doc = spec_doc(base={**CIFAR, "depth": 20}, seeds=[0, 1, 2, 3], factors={"block": {"values": ["basic", "preact"]},
                                                          "residual": {"values": [True, False]}})
    rng = np.random.default_rng(0)
    acc = {(b, r): 0.8 + 0.05 * r + 0.02 * (b == "preact") * r for b in ("basic", "preact") for r in (True, False)}
    noise = {(b, r, s): float(rng.integers(0, 5)) / 200 for b in ("basic", "preact") for r in (True, False) for s in range(4)}
    trials = [{"arm": f"block={b},residual={str(r).lower()}", "seed": s, "test_acc": acc[b, r] + noise[b, r, s]}
              for b in ("basic", "preact") for r in (True, False) for s in range(4)]
    run = load_run(build_run(tmp_path / "preact", trials, doc=doc))
    d = design(run)
    inter = interactions(d, effects(d))
    assert len(inter) == 1 and inter.iloc[0]["contrast"] == "block preact minus block basic"
    dd = [(acc["preact", True] + noise["preact", True, s] - acc["preact", False] - noise["preact", False, s])
          - (acc["basic", True] + noise["basic", True, s] - acc["basic", False] - noise["basic", False, s]) for s in range(4)]
    assert inter.iloc[0]["estimate"] == pytest.approx(np.mean(dd))
    assert (inter.iloc[0]["ci_low"], inter.iloc[0]["ci_high"]) == pytest.approx(t_interval(dd))


def test_a_grid_parameter_is_a_factor_with_every_grid_point_and_a_trend_per_decade(tmp_path):
    lrs = [0.001, 0.01, 0.1]
    doc = spec_doc(seeds=[0, 1, 2], grid={"lr": lrs})
    trials = []
    for s in range(3):
        for lr in lrs:
            benefit = 0.01 + (0.02 + 0.01 * (s - 1)) * math.log10(lr / 0.001)
            trials.append({"arm": "residual=true", "seed": s, "params": {"lr": lr}, "test_acc": 0.7 + benefit,
                           "best_dev_acc": 0.5})
            trials.append({"arm": "residual=false", "seed": s, "params": {"lr": lr}, "test_acc": 0.7, "best_dev_acc": 0.6})
    run = load_run(build_run(tmp_path / "grid", trials, doc=doc))
    d = design(run)
    assert d.factors == ["residual", "lr"] and d.grid == ["lr"]
    eff = effects(d)
    res = eff[eff["factor"] == "residual"]
    assert [c["lr"] for c in res["context"]] == lrs  # every grid point, not only the one dev accuracy chose
    assert res["diff"].tolist() == pytest.approx([0.01, 0.03, 0.05])
    trend = interactions(d, eff).iloc[0]
    assert trend["unit"] == "per tenfold increase of lr" and trend["estimate"] == pytest.approx(0.02)
    assert (trend["ci_low"], trend["ci_high"]) == pytest.approx(t_interval([0.01, 0.02, 0.03]))


def test_single_factor_studies_read_as_before(tmp_path):
    shortcuts = ["projection", "identity", "projection-all"]
    doc = spec_doc(base={**spec_doc()["base"], "residual": True}, factors={"shortcut": {"values": shortcuts}})
    trials = [{"arm": f"shortcut={a}", "seed": s, "test_acc": 0.9 - 0.01 * i - 0.005 * s}
              for i, a in enumerate(shortcuts) for s in (0, 1, 2)]
    result = analyze(build_run(tmp_path / "one", trials, doc=doc))
    md = result.report.read_text()
    assert "## Answer" not in md and "## Factor effects" not in md and result.effects is None
    assert not (result.out_dir / "effects.csv").exists() and "effects" not in result.figures
    assert "| arm A | arm B |" in md and len(result.comparisons) == 3  # three arms: the pairs table stays
