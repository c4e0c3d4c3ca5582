"""The Python API (ablate.load_study, run, analyze, load_run): the cycle a notebook runs, through the functions the
command line runs, with the command line's errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import ablate
from ablate.cli.app import app
from ablate.errors import AblateError
from helpers.background import environ
from helpers.runs import build_run
from helpers.studies import TINY

ROOT = Path(__file__).resolve().parents[1]
# Two arms, lr searched over two points, then confirmed over two seeds: tune and confirm rows, one comparison.
DOC = {"name": "api", "description": "tiny residual vs plain from Python", "base": {"family": "cifar", "depth": 20, **TINY},
       "factors": {"residual": {"values": [True, False]}},
       "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.3}}, "trials": 2,
                  "sampler_seed": 0},
       "seeds": [0, 1]}

# What a notebook runs, in a fresh interpreter: a study started, then stopped by Ctrl-C.
START = textwrap.dedent('''
    import json, sys
    import ablate

    ablate.run(ablate.load_study(json.loads(sys.argv[1])), out=sys.argv[2], cpus=1)
''')
# Then, in another: the interrupted run finished, analysed, read as tables, and the finished folder resumed.
CYCLE = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import ablate

    run_dir = ablate.run(resume=Path(sys.argv[1]), cpus=1)
    result = ablate.analyze(run_dir, figures=False)
    tables = ablate.load_run(run_dir)
    registry = (run_dir / "trials.jsonl").read_text()
    print("RESUME", flush=True)
    again = ablate.run(resume=run_dir, cpus=1)
    print(json.dumps({"run_dir": str(run_dir), "again": str(again), "comparisons_csv": str(result.comparisons_csv),
                      "trials": len(tables.trials), "confirm": len(tables.confirm),
                      "registry_unchanged": registry == (run_dir / "trials.jsonl").read_text()}))
''')


def _interrupted_run(run_dir: Path, cwd: Path) -> str:
    """START's study, given Ctrl-C (SIGINT to its process group) once it has said it started; its stderr."""
    proc = subprocess.Popen([sys.executable, "-c", START, json.dumps(DOC), str(run_dir)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env={**environ(), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    seen, deadline = b"", time.monotonic() + 600
    try:
        while f"-> {run_dir}".encode() not in seen and time.monotonic() < deadline:
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    finally:
        os.killpg(proc.pid, signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode != 0
    return (seen + rest).decode()


@pytest.mark.slow
def test_a_study_runs_end_to_end_from_python_and_its_tables_agree_with_the_run_folder(tmp_path):
    """One real study from Python: started, stopped by Ctrl-C (run says how to finish it and raises
    StudyInterrupted), finished with run(resume=...), analysed, read as tables that agree with trials.csv and
    comparisons.csv, and resumed once finished, which runs nothing."""
    stopped = _interrupted_run(tmp_path / "run", tmp_path)
    assert (f"interrupted: what finished is kept in {tmp_path / 'run'}; finish it with: ablate study --resume "
            f"{tmp_path / 'run'}") in stopped and "StudyInterrupted" in stopped, stopped[-3000:]
    out = subprocess.run([sys.executable, "-c", CYCLE, str(tmp_path / "run")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900, env={**environ(), "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    first, resumed = out.stdout.split("RESUME\n")
    told = json.loads(resumed.strip().splitlines()[-1])
    run_dir = Path(told["run_dir"])
    assert run_dir == tmp_path / "run"
    # what the command line says, said by the API: the start line and the progress bar on stderr, the table on stdout
    assert f"study api (default) -> {run_dir}" in out.stderr and "8/8" in out.stderr, out.stderr[-3000:]
    assert "done in" in first and "residual=true" in first
    # resuming the finished folder ran nothing, said so, and wrote no result
    assert told["again"] == str(run_dir) and told["registry_unchanged"]
    assert f"nothing to run: {run_dir} is finished (no trial ran; 8 trial rows" in resumed

    tables = ablate.load_run(run_dir)
    assert (told["trials"], told["confirm"]) == (8, 4)
    csv = pd.read_csv(run_dir / "trials.csv")
    assert sorted(tables.trials["trial_id"]) == sorted(csv["trial_id"]) and len(set(csv["trial_id"])) == 8
    acc = csv.set_index("trial_id")["test_acc"]
    assert list(tables.trials["test_acc"]) == pytest.approx(list(acc[tables.trials["trial_id"]]))
    assert set(tables.trials["stage"]) == {"tune", "confirm"}
    assert set(tables.confirm["stage"]) == {"confirm"} and sorted(tables.confirm["seed"]) == [0, 0, 1, 1]
    assert sorted(tables.confirm["trial_id"]) == sorted(csv.loc[csv["stage"] == "confirm", "trial_id"])
    assert list(tables.confirm["test_acc"]) == pytest.approx(list(acc[tables.confirm["trial_id"]]))
    for column in ("trial_id", "stage", "arm", "residual", "lr", "seed", "status", "dataset", "best_dev_acc",
                   "test_acc", "test_loss", "total_steps"):
        assert column in tables.trials and column in tables.confirm, column
    assert set(tables.selected) == {"residual=true", "residual=false"} and all("lr" in p for p in tables.selected.values())

    written = Path(told["comparisons_csv"])  # analysis/comparisons.csv, as analyze wrote it
    assert tables.comparisons.to_csv(index=False) == written.read_text()
    assert len(tables.comparisons) == 1
    mine = tables.comparisons.iloc[0]
    means = tables.confirm.groupby("arm", observed=True)["test_acc"].mean()
    assert mine["mean_a"] == pytest.approx(means[mine["arm_a"]]) and mine["diff"] == pytest.approx(
        means[mine["arm_a"]] - means[mine["arm_b"]])


def test_a_bad_study_name_raises_the_line_the_command_line_prints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AblateError) as raised:
        ablate.load_study("residual_ablation")
    assert "did you mean 'residual-ablation'?" in str(raised.value) and "valid studies:" in str(raised.value)
    with pytest.raises(ablate.AblateError) as from_run:
        ablate.run("residual_ablation", out=tmp_path / "never")
    assert str(from_run.value) == str(raised.value)
    cli = CliRunner().invoke(app, ["study", "residual_ablation", "--out", str(tmp_path / "never")])
    assert cli.exit_code == 2 and cli.output.strip() == f"error: {raised.value}"
    assert not (tmp_path / "never").exists() and not (tmp_path / "runs").exists()


def test_a_spec_dict_goes_through_the_spec_parser_and_a_made_study_keeps_its_budget(tmp_path):
    study = ablate.load_study(DOC, budget="smoke", dataset="digits")
    assert (study.name, study.budget, study.base["dataset"]) == ("api", "smoke", "digits")
    assert [a.name for a in study.arms] == ["residual=true", "residual=false"]
    with pytest.raises(AblateError, match=r"study dict: unknown spec key\(s\) factor;"):
        ablate.load_study({**DOC, "factor": DOC["factors"]})
    with pytest.raises(AblateError, match="already made with budget smoke"):
        ablate.run(study, out=tmp_path / "never", budget="full")
    with pytest.raises(AblateError, match="search.sampler_seed"):
        ablate.load_study(DOC, sampler_seed=3)
    with pytest.raises(AblateError, match="not int"):
        ablate.load_study(3)
    assert ablate.load_study("residual-ablation", sampler_seed=7).sampler_seed == 7
    spec = tmp_path / "mine.yaml"
    spec.write_text(yaml.safe_dump(DOC))
    assert ablate.load_study(spec).raw == ablate.load_study(DOC).raw
    assert not (tmp_path / "never").exists()


def test_analyze_and_load_run_refuse_what_the_command_line_refuses(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    run = build_run(tmp_path / "run", [{"arm": arm, "seed": s, "test_acc": acc + 0.01 * s}
                                       for arm, acc in (("residual=true", 0.9), ("residual=false", 0.8))
                                       for s in (0, 1, 2)])
    with pytest.raises(AblateError) as raised:
        ablate.analyze(run, busy)
    cli = CliRunner().invoke(app, ["analyze", str(run), "--out", str(busy)])
    assert cli.exit_code == 2 and cli.output.strip() == f"error: {raised.value}"
    assert "holds no earlier analysis" in str(raised.value) and sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    with pytest.raises(AblateError, match="is not a study run folder"):
        ablate.load_run(busy)


def test_load_run_gives_the_comparisons_analyze_writes(tmp_path):
    """A constructed run with known scores: the comparison's numbers are the seeds' paired differences, and equal
    what analyze writes to comparisons.csv."""
    run = build_run(tmp_path / "run", [{"arm": arm, "seed": s, "test_acc": acc + 0.01 * s}
                                       for arm, acc in (("residual=true", 0.9), ("residual=false", 0.8))
                                       for s in (0, 1, 2)])
    tables = ablate.load_run(run)
    assert len(tables.trials) == len(tables.confirm) == 6
    row = tables.comparisons.iloc[0]
    assert (row["arm_a"], row["arm_b"], row["n_pairs"]) == ("residual=true", "residual=false", 3)
    assert row["diff"] == pytest.approx(0.1)
    written = ablate.analyze(run, tmp_path / "analysis", figures=False).comparisons_csv
    assert tables.comparisons.to_csv(index=False) == written.read_text()


NO_TORCH = textwrap.dedent('''
    import importlib.abc, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        """torch, torchvision, Ray and matplotlib cannot be imported, as on a machine without them."""
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "ray", "matplotlib"):
                raise ModuleNotFoundError(f"No module named {name!r} (made unavailable by the test)")

    sys.meta_path.insert(0, NoTorch())
    import ablate
    study = ablate.load_study("residual-ablation", budget="smoke", dataset="digits")
    tables = ablate.load_run(sys.argv[1])
    assert study.base["dataset"] == "digits" and len(tables.confirm) == 6 and len(tables.comparisons) == 1
    assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "ray", "matplotlib")]
    print("loaded without torch")
''')


@pytest.mark.slow
def test_import_ablate_load_study_and_load_run_need_no_torch_ray_or_matplotlib(tmp_path):
    run = build_run(tmp_path / "run", [{"arm": arm, "seed": s, "test_acc": 0.9 - 0.01 * s}
                                       for arm in ("residual=true", "residual=false") for s in (0, 1, 2)])
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(run)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "loaded without torch" in out.stdout, out.stderr[-3000:]


def test_the_public_names_are_documented_and_loaded_when_first_used():
    for name in ("load_study", "run", "analyze", "load_run", "RunTables", "AblateError"):
        assert name in ablate.__all__ and name in dir(ablate) and getattr(ablate, name).__doc__, name
    with pytest.raises(AttributeError):
        ablate.no_such_name  # noqa: B018


def test_in_a_notebook_the_progress_bar_is_a_widget_whose_total_follows_the_study(tmp_path, monkeypatch):
    """tqdm.auto picks tqdm.notebook in a Jupyter kernel with ipywidgets (skipped where ipywidgets is absent): the
    bar is a widget, and when the totals change (an adaptive seed rule asks for more seeds) its maximum follows."""
    pytest.importorskip("ipywidgets", reason="ipywidgets is not installed: the bar is a text line without it")
    import tqdm.auto
    import tqdm.notebook

    from ablate.engine import Planner, Progress

    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm.notebook.tqdm)  # what tqdm.auto is inside a Jupyter kernel
    study = ablate.load_study({"base": {"family": "cifar", "depth": 20, "dataset": "digits"},
                               "factors": {"residual": {"values": [True, False]}}, "seeds": [0, 1, 2]})
    progress = Progress(study, Planner(study, tmp_path))
    slider = progress.bar.container.children[-2]
    assert isinstance(progress.bar, tqdm.notebook.tqdm) and slider.max == 6
    slider.max = 1  # drawn with an older total
    progress.refresh()
    assert slider.max == 6 and "confirm 0/6" in progress.bar.container.children[-1].value.replace("\u2007", " ")
    progress.close()
