"""Figures on constructed run folders: what they draw and what their captions say (gradient ratios over
comparable layers, ‖g‖/‖w‖, real step positions, cut intervals, seeds as lines, tuning), and the
lesion report per block type."""
import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection, QuadMesh
from scipy import stats as st

from ablate.analysis import analyze
from ablate.analysis.figures import arms as F
from ablate.analysis.figures import grad as G
from ablate.analysis.figures.tuning import tuning_landscape
from ablate.analysis.load import load_curves, load_grad_norms, load_run
from helpers.runs import build_run, spec_doc

RES, PLAIN = "residual=true", "residual=false"
STEPS = [0, 15, 30, 45, 60, 75, 80]


def grad_rows(block_grads, weights=(2.0, 2.0, 2.0, 4.0), with_weights=True):
    """A stem conv, four block convs (two blocks) and a classifier, logged at STEPS; norms shrink 10× by the end."""
    layers = [("stem.0", "stem", 50.0, 1.0)] + [
        (f"stages.0.{i // 2}.conv{i % 2 + 1}", f"stages.0.{i // 2}", g, w)
        for i, (g, w) in enumerate(zip(block_grads, weights))] + [("fc", "head", 0.5, 3.0)]
    rows = []
    for step in STEPS:
        scale = 1.0 if step == 0 else 0.1
        for index, (name, block, g, w) in enumerate(layers):
            rows.append({"step": step, "layer": name, "layer_index": index, "block": block, "kind": "layer",
                         "grad_norm": g * scale, "weight_norm": w if with_weights else ""})
    return rows


def grad_run(tmp_path, with_weights=True):
    trials = []
    for seed in (0, 1):
        trials.append({"arm": RES, "seed": seed, "test_acc": 0.95,
                       "grad_norms": grad_rows([1.0, 2.0, 3.0, 4.0], with_weights=with_weights)})
        trials.append({"arm": PLAIN, "seed": seed, "test_acc": 0.90,
                       "grad_norms": grad_rows([8.0, 6.0, 4.0, 2.0], with_weights=with_weights)})
    return build_run(tmp_path / "run", trials, doc=spec_doc(seeds=[0, 1]))


@pytest.mark.slow
def test_gradient_ratio_is_over_comparable_layers_and_the_caption_says_what_the_data_show(tmp_path):
    run = load_run(grad_run(tmp_path))
    grads = load_grad_norms(run)
    ratios = G.grad_ratios(grads).merge(run.ok[["trial_id", "arm"]]).groupby("arm", observed=True).first()
    # first block conv over last block conv: the stem (50) and the classifier (0.5) are left out
    assert ratios.loc[PLAIN, ["first_layer", "last_layer"]].tolist() == ["stages.0.0.conv1", "stages.0.1.conv2"]
    assert ratios.loc[PLAIN, "ratio"] == pytest.approx(8 / 2) and ratios.loc[PLAIN, "rel_ratio"] == pytest.approx((8 / 2) / (2 / 4))
    assert ratios.loc[RES, "ratio"] == pytest.approx(1 / 4) and ratios.loc[RES, "rel_ratio"] == pytest.approx((1 / 2) / (4 / 4))
    # stem conv over classifier, the other definition: 50 / 0.5 raw, (50 / 1) / (0.5 / 3) relative
    assert ratios.loc[PLAIN, "stem_ratio"] == pytest.approx(100) and ratios.loc[PLAIN, "stem_rel_ratio"] == pytest.approx(300)
    result = analyze(run.run_dir)
    caption = result.captions["grad_profile"]
    assert "residual=true 0.25× (‖g‖/‖w‖: 0.5×), smaller near the input" in caption
    assert "residual=false 4× (‖g‖/‖w‖: 8×), larger near the input" in caption
    assert ("gradient norm of the stem conv over the classifier (the first and the last weighted layer, of different "
            "shapes and widths), geometric mean over seeds: residual=true 100× (‖g‖/‖w‖: 300×)") in caption
    assert caption in result.report.read_text()


def test_profile_draws_relative_gradients_beside_raw_ones(tmp_path):
    run = load_run(grad_run(tmp_path))
    with F.theme():
        fig = G.grad_profile(run, load_grad_norms(run))
    axes = [ax for ax in fig.axes if ax.get_ylabel()]
    assert [ax.get_ylabel().split("\n")[0] for ax in axes] == ["gradient norm ‖g‖", "relative gradient ‖g‖/‖w‖"]
    rel_axis = axes[1]
    plain_line = rel_axis.get_lines()[1]  # arms in spec order: residual, plain
    assert plain_line.get_ydata()[1] == pytest.approx(8 / 2)  # layer 1 at step 0: ‖g‖/‖w‖ = 8 / 2
    run2 = load_run(grad_run(tmp_path / "b", with_weights=False))
    with F.theme():
        fig2 = G.grad_profile(run2, load_grad_norms(run2))
    assert len([ax for ax in fig2.axes if ax.get_ylabel()]) == 1
    assert "Weight norms were not logged by this run" in " ".join(F.notes(fig2))


def test_heatmap_columns_sit_at_their_real_steps(tmp_path):
    run = load_run(grad_run(tmp_path))
    with F.theme():
        fig = G.grad_heatmap(run, load_grad_norms(run))
    mesh = next(c for c in fig.axes[0].collections if isinstance(c, QuadMesh))
    x_edges = mesh.get_coordinates()[0, :, 0]
    assert x_edges.tolist() == pytest.approx([-7.5, 7.5, 22.5, 37.5, 52.5, 67.5, 77.5, 82.5])
    widths = np.diff(x_edges)
    assert widths[-1] == pytest.approx(5.0) and widths[1] == pytest.approx(15.0)  # 75 -> 80 is a third of a gap


@pytest.mark.slow  # a second or more of 2 cores
def test_cut_intervals_are_said_and_uncut_ones_are_not(tmp_path):
    near_top = [{"arm": a, "seed": s, "test_acc": acc} for a, accs in ((RES, (0.995, 1.0)), (PLAIN, (0.9, 0.92)))
                for s, acc in enumerate(accs)]
    result = analyze(build_run(tmp_path / "a", near_top, doc=spec_doc(seeds=[0, 1])))
    assert F.CLIP_NOTE in result.captions["test_accuracy"]
    # the table cuts it at 100 % too, and says so
    row = result.summary.set_index("arm").loc[RES]
    assert row["test_acc_ci_high"] == 1.0 and row["test_acc_ci_cut"]
    middle = [{"arm": a, "seed": s, "test_acc": acc} for a, accs in ((RES, (0.90, 0.91, 0.92)), (PLAIN, (0.8, 0.81, 0.82)))
              for s, acc in enumerate(accs)]
    result = analyze(build_run(tmp_path / "b", middle))
    assert F.CLIP_NOTE not in result.captions["test_accuracy"]


def curves_run(tmp_path, seeds):
    trials = [{"arm": a, "seed": s, "test_acc": 0.9,
               "curves": [{"step": t, "train_loss": 2.0 / t, "dev_acc": min(0.99, 0.2 * t / 15 + 0.01 * s)}
                          for t in (15, 30, 45, 60)]}
              for a in (RES, PLAIN) for s in seeds]
    return load_run(build_run(tmp_path / "run", trials, doc=spec_doc(seeds=list(seeds))))


@pytest.mark.parametrize("seeds, thin", [((0, 1, 2), True), ((0, 1, 2, 3), False)])
def test_curves_show_each_seed_when_there_are_few(tmp_path, seeds, thin):
    run = curves_run(tmp_path, seeds)
    with F.theme():
        fig = F.curves(run, load_curves(run))
    ax_acc = fig.axes[1]
    bands = [c for c in ax_acc.collections if isinstance(c, PolyCollection)]
    lines = [l for l in ax_acc.get_lines() if l.get_linestyle() != ":"]
    chance = [l for l in ax_acc.get_lines() if l.get_linestyle() == ":"]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == [10.0, 10.0]
    if thin:
        assert len(lines) == 2 * (len(seeds) + 1) and not bands  # each seed + the mean, per arm
        assert "every seed is drawn as a thin line" in " ".join(F.notes(fig))
    else:
        assert len(lines) == 2 and len(bands) == 2
    assert "scikit-learn digits" in fig.get_suptitle()


def test_tuning_figure_draws_completed_trials_as_the_lr_sensitivity_line(tmp_path):
    doc = spec_doc(seeds=[0], search={"space": {"lr": {"distribution": "loguniform", "low": 0.001, "high": 0.5}},
                                      "trials": 3, "sampler_seed": 0})
    tune = [(RES, 0.3, "ok", 0.93, 80), (RES, 0.01, "ok", 0.95, 80), (RES, 0.03, "stopped", 0.97, 80),
            (PLAIN, 0.01, "ok", 0.90, 80), (PLAIN, 0.03, "ok", 0.96, 80), (PLAIN, 0.1, "stopped", 0.5, 30)]
    trials = [{"arm": a, "seed": 100, "stage": "tune", "params": {"lr": lr}, "status": s, "best_dev_acc": dev,
               "steps": n} for a, lr, s, dev, n in tune]
    trials += [{"arm": a, "seed": 0, "params": {"lr": 0.03}, "test_acc": 0.9} for a in (RES, PLAIN)]
    run = load_run(build_run(tmp_path / "run", trials, doc=doc))
    with F.theme():
        fig = tuning_landscape(run)
    ax = fig.axes[0]
    lines = [l for l in ax.get_lines() if len(l.get_xdata()) > 1 and l.get_linestyle() != ":"]
    # the trial marked stopped at its last step (lr 0.03) is on the residual line; the early stop is not on the plain one
    assert [list(l.get_xdata()) for l in lines] == [[0.01, 0.03, 0.3], [0.01, 0.03]]
    assert list(lines[0].get_ydata()) == pytest.approx([95.0, 97.0, 93.0])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "stopped before its last step" in legend and "scikit-learn digits" in ax.get_title()


@pytest.mark.slow
def test_depth_ratio_figure_uses_relative_norms_and_labels_only_major_ticks(tmp_path):
    doc = spec_doc(seeds=[0, 1], base={**spec_doc()["base"], "family": "cifar", "shortcut": "identity"},
                   factors={"depth": {"values": [20, 32]}, "residual": {"values": [True, False]}})
    trials = [{"arm": f"depth={d},residual={str(r).lower()}", "seed": s, "test_acc": 0.9,
               "grad_norms": grad_rows([1.0, 2.0, 3.0, 4.0] if r else [8.0 * d / 20, 6.0, 4.0, 2.0])}
              for d in (20, 32) for r in (True, False) for s in (0, 1)]
    result = analyze(build_run(tmp_path / "run", trials, doc=doc))
    assert "depth_grad_ratio" in result.figures
    assert "Ratio of ‖g‖/‖w‖ of the first conv of the first residual block over the last conv" in result.captions["depth_grad_ratio"]
    run = load_run(result.run_dir)
    with F.theme():
        fig = G.depth_grad_ratio(run, load_grad_norms(run))
    ax = fig.axes[0]
    assert ax.yaxis.get_minor_formatter()(2.0, 0) == ""  # minor labels were what overlapped
    assert "first block's first conv" in ax.get_ylabel()


# --- lesion report ---------------------------------------------------------------------------------
def lesion_table():
    """2 arms x 2 seeds x 3 blocks (2 same-shape, 1 downsampling); plain lesions fall to about chance."""
    rows = []
    spec = {RES: ("projection", {0: [0.95, 0.93, 0.90], 1: [0.96, 0.94, 0.88]}, 0.97),
            PLAIN: ("zero-pad-added", {0: [0.10, 0.11, 0.09], 1: [0.12, 0.10, 0.10]}, 0.90)}
    for arm, (down, accs, intact) in spec.items():
        for seed, lesioned in accs.items():
            tid = f"{arm[9:]}{seed}"
            rows.append({"trial_id": tid, "arm": arm, "seed": seed, "residual": arm == RES, "block": "none",
                         "block_index": -1, "block_type": "none", "replacement": "none", "test_acc": intact,
                         "lesioned_acc": intact, "drop": 0.0, "changed": 0.0})
            for i, (name, kind, acc) in enumerate(zip(["stages.0.0", "stages.1.0", "stages.1.1"],
                                                      ["identity", down, "identity"], lesioned)):
                changed = 0.0 if (arm == RES and name == "stages.1.1") else abs(intact - acc) + 0.01
                rows.append({"trial_id": tid, "arm": arm, "seed": seed, "residual": arm == RES, "block": name,
                             "block_index": i, "block_type": "same-shape" if kind == "identity" else "downsampling",
                             "replacement": kind, "test_acc": intact, "lesioned_acc": acc, "drop": intact - acc,
                             "changed": changed})
    return pd.DataFrame(rows)


def test_lesion_report_is_per_block_type_with_cis_chance_and_replacements(tmp_path):
    trials = [{"arm": a, "seed": s, "test_acc": 0.9} for a in (RES, PLAIN) for s in (0, 1)]
    table = lesion_table()
    result = analyze(build_run(tmp_path / "run", trials, doc=spec_doc(seeds=[0, 1])), lesion=table)
    md = result.report.read_text()
    section = md[md.index("## Lesion study"): md.index("## Figures")]
    assert "the block's own trained 1×1 projection shortcut (conv + BN), then ReLU [projection: `residual=true`]" in section
    assert "added for the lesion: the plain net has no shortcut of its own" in section and "[zero-pad-added: `residual=false`]" in section
    # same-shape blocks of the residual arm: per seed the mean drop over its 2 blocks, then a t-interval over seeds
    per_seed = np.array([0.97 - (0.95 + 0.90) / 2, 0.97 - (0.96 + 0.88) / 2])
    low, high = st.t.interval(0.95, 1, loc=per_seed.mean(), scale=st.sem(per_seed))
    assert (f"`residual=true`, 2 same-shape block(s) (2 seed(s)): intact 97.0 %; lesioned "
            f"{100 * (0.97 - per_seed.mean()):.1f} %") in section
    assert f"drop {100 * per_seed.mean():+.1f} pp (95 % CI [{100 * low:+.1f}, {100 * high:+.1f}] pp)" in section
    plain_same = next(l for l in section.splitlines() if l.startswith("- `residual=false`, 2 same-shape"))
    assert "At chance: this drop is the intact accuracy minus chance" in plain_same
    res_down = next(l for l in section.splitlines() if l.startswith("- `residual=true`, 1 downsampling"))
    assert "At chance" not in res_down
    assert "Blocks whose removal changed no test prediction in any seed: `residual=true`: stages.1.1 (same-shape)." in section
    assert "zero-pad-added (residual=false): replaced by a parameter-free" in result.captions["lesion"]
    assert "dotted = chance" in result.captions["lesion"]


def test_train_curves_png_names_the_model_and_the_dataset_actually_used():
    from PIL import Image

    from ablate.train.trial_files import plot_curves
    from ablate.train.result import TrialResult

    result = TrialResult(status="ok", dataset="digits", device="cpu", threads=1, best_dev_acc=0.9, best_step=30,
                         test_acc=0.915, test_loss=0.3, final_train_loss=0.2, train_seconds=1.0, total_seconds=1.0,
                         steps=45, train_loss=[2.0 / (i + 1) for i in range(45)], eval_steps=[15, 30, 45],
                         dev_loss=[1.0, 0.5, 0.6], dev_acc=[0.5, 0.9, 0.85])
    png = Image.open(io.BytesIO(plot_curves(result, "imagenet-18 residual lr=0.01")))
    assert png.format == "PNG"
    assert png.text["Title"] == ("imagenet-18 residual lr=0.01 on scikit-learn digits (8×8); test accuracy 91.5 % "
                                 "(best-dev checkpoint)")


@pytest.mark.slow  # a second or more of 2 cores
def test_a_lesion_study_without_figures_keeps_its_table_and_removes_an_earlier_lesion_figure(tmp_path):
    trials = [{"arm": a, "seed": s, "test_acc": 0.9} for a in (RES, PLAIN) for s in (0, 1)]
    run = build_run(tmp_path / "run", trials, doc=spec_doc(seeds=[0, 1]))
    drawn = analyze(run, lesion=lesion_table())
    assert drawn.figures["lesion"][0].exists()
    plain = analyze(run, lesion=lesion_table(), figures=False)
    assert plain.lesion_csv.read_text() == drawn.lesion_csv.read_text() and "## Lesion study" in plain.report.read_text()
    assert plain.skipped["lesion"].startswith("not drawn") and not drawn.figures["lesion"][0].exists()
