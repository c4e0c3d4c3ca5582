"""The constructed run folders of tests/helpers/runs.py read back through the engine's own readers."""
from __future__ import annotations

import yaml

from ablate.run_folder.registry import read_registry
from ablate.spec.study_spec import parse_study
from helpers.runs import build_run


def test_built_folder_reads_back_through_the_engine(tmp_path):
    run = build_run(tmp_path / "run", [{"arm": "residual=true", "seed": s, "test_acc": 0.9} for s in (0, 1)])
    rows = read_registry(run)
    assert len(rows) == 2 and {r["stage"] for r in rows} == {"confirm"}
    spec = parse_study(yaml.safe_load((run / "spec.yaml").read_text()), source="spec.yaml")
    assert spec.stages == ["confirm"] and [a.name for a in spec.arms] == ["residual=true", "residual=false"]
    for r in rows:
        assert (run / "trials" / r["trial_id"] / "config.yaml").is_file()


def test_predictions_give_the_test_accuracy(tmp_path):
    correct = [1] * 150 + [0] * 50
    run = build_run(tmp_path / "run", [{"arm": "residual=true", "seed": 0, "correct": correct}])
    row = read_registry(run)[0]
    assert row["test_acc"] == 0.75
    text = (run / "trials" / row["trial_id"] / "predictions.csv").read_text().splitlines()
    assert text[0] == "index,label,pred,pred_final" and len(text) == 201
    assert sum(int(l.split(",")[1]) == int(l.split(",")[2]) for l in text[1:]) == 150
