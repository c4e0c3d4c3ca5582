"""`analyze --diagnostics` on a real tiny study (scikit-learn's digits, 8x8 images, through the study engine):
the tables, their ties to what the trials recorded, the figures, the report section and the command line."""
import math

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from ablate.analysis import analyze
from ablate.cli.app import app
from ablate.probes.diagnostics import LANDSCAPE_DIRECTIONS, LANDSCAPE_POINTS, MAX_LAG, diagnose_run
from ablate.probes.lesion import load_trial
from ablate.train.loop import model_for
from ablate.run_folder.registry import read_registry


@pytest.fixture(scope="module")
def run(diagnostics_study):
    """The tiny study of helpers.studies.DIAGNOSTICS (a background study); this module alone analyses it."""
    return diagnostics_study


@pytest.fixture(scope="module")
def analysed(run):
    return analyze(run, diagnostics=True, landscape_2d=True)


@pytest.mark.slow
def test_tables_cover_every_reported_trial(run, analysed):
    d = analysed.diagnostics
    rows = [r for r in read_registry(run) if r["stage"] == "confirm"]
    assert len(rows) == 4 and set(d.sharpness["trial_id"]) == {r["trial_id"] for r in rows}
    assert len(d.landscape) == 4 * LANDSCAPE_DIRECTIONS * LANDSCAPE_POINTS
    assert len(d.shattered) == 4 * (MAX_LAG + 1) and (d.shattered[d.shattered["lag"] == 0]["autocorrelation"] == 1).all()
    assert len(d.signal) == 4 * 9 and set(d.signal["block_index"]) == set(range(9))
    assert set(d.landscape_2d["arm"]) == {"residual=true", "residual=false"}  # one plane per arm: its first seed
    assert d.landscape_2d.groupby("arm")["trial_id"].nunique().eq(1).all() and len(d.landscape_2d) == 2 * 21 * 21
    assert set(d.cost["diagnostic"]) == {"load", "landscape", "landscape_2d", "shattered", "signal", "lesions_k"}
    assert (d.cost["seconds"] > 0).all()


@pytest.mark.slow
def test_landscape_centre_and_intact_lesion_row_are_the_trained_model(run, analysed):
    d = analysed.diagnostics
    recorded = {r["trial_id"]: r["test_acc"] for r in read_registry(run) if r["stage"] == "confirm"}
    intact = d.lesions_k[d.lesions_k["k"] == 0].set_index("trial_id")["accuracy"]
    for trial_id, acc in recorded.items():
        assert intact[trial_id] == pytest.approx(acc)  # the reloaded weights score what the trial recorded
    centre = d.landscape[d.landscape["alpha"].abs() < 1e-12]
    assert centre.groupby("trial_id")["loss"].nunique().eq(1).all()  # alpha = 0 is the same point in every direction
    trial = load_trial(run / "trials" / next(iter(recorded)))
    x = trial.splits.train.x[:128].contiguous(memory_format=trial.memory_format)
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(trial.model(x), trial.splits.train.y[:128]).item()
    assert centre[centre["trial_id"] == next(iter(recorded))]["loss"].iloc[0] == pytest.approx(loss, rel=1e-5)


@pytest.mark.slow
def test_the_initialisation_is_the_trials_own(run):
    """The weight norms of model_for equal the ones the trial logged at step 0 (grad_norms.csv), before any update."""
    for row in (r for r in read_registry(run) if r["stage"] == "confirm"):
        folder = run / "trials" / row["trial_id"]
        trial = load_trial(folder, weights=False)
        logged = pd.read_csv(folder / "grad_norms.csv")
        logged = logged[(logged["step"] == 0) & (logged["kind"] == "layer")].set_index("layer")["weight_norm"]
        params = dict(model_for(trial.cfg, trial.splits).named_parameters())
        for layer, norm in logged.items():
            assert params[f"{layer}.weight"].norm().item() == pytest.approx(norm, rel=1e-5), layer
        trained = load_trial(folder).model.state_dict()
        assert not torch.equal(trained["stem.0.weight"], params["stem.0.weight"])  # the comparison can fail


@pytest.mark.slow
def test_figures_and_report(analysed):
    for name in ("landscape", "landscape_2d", "shattered", "signal", "lesions_k"):
        png, pdf = analysed.figures[name]
        assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:5] == b"%PDF-"
    md = analysed.report.read_text()
    section = md[md.index("## Diagnostics"): md.index("## Figures")]
    for heading in ("### Loss landscape", "### Shattered gradients", "### Signal propagation", "### Lesions of k blocks"):
        assert heading in section
    assert "they are measurements, not verdicts" in section and "Measured cost here:" in section
    assert "- `residual=true`: curvature " in section and "lag-1 autocorrelation" in section
    for name in ("landscape", "sharpness", "landscape_2d", "shattered", "signal", "lesions_k", "cost"):
        assert (analysed.out_dir / "diagnostics" / f"{name}.csv").is_file()


@pytest.mark.slow
def test_without_weights_the_trained_diagnostics_are_left_out_with_the_reason(run, tmp_path):
    rows = [r for r in read_registry(run) if r["stage"] == "confirm"][:1]
    (run / "trials" / rows[0]["trial_id"] / "weights.pt").rename(tmp_path / "weights.pt")
    try:
        d = diagnose_run(run, [{"trial_id": rows[0]["trial_id"], "arm": rows[0]["arm"], "seed": rows[0]["seed"]}])
    finally:
        (tmp_path / "weights.pt").rename(run / "trials" / rows[0]["trial_id"] / "weights.pt")
    assert d.landscape.empty and d.lesions_k.empty and len(d.signal) == 9 and len(d.shattered) == MAX_LAG + 1
    assert "no weights.pt" in next(iter(d.skipped.values()))


@pytest.mark.slow
def test_command_line(run, analysed):
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", str(run), "--landscape-2d"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and lines == ["error: --landscape-2d adds to --diagnostics; pass both"]
    # Analysing again without --diagnostics removes what an earlier analysis measured: no orphan files.
    result = runner.invoke(app, ["analyze", str(run)])
    assert result.exit_code == 0, result.output
    assert not (analysed.out_dir / "diagnostics").exists()
    assert not (analysed.out_dir / "figures" / "landscape.png").exists()
    assert "## Diagnostics" not in analysed.report.read_text()
    assert not math.isnan(analysed.diagnostics.sharpness["curvature"].mean())
