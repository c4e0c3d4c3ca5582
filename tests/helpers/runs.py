"""Constructed study run folders with known right answers, for the analysis tests (no training, no data).

`build_run` writes what the study engine writes, through the run folder's own writers (ablate.run_folder): spec.yaml
(resolved), manifest.json (with the spec it started with and the format's version), trials.jsonl (append_registry:
each row with its trial files' hashes) and trials/<id>/ with config.yaml, metrics.json and, on request, curves.csv,
grad_norms.csv and predictions.csv (their contents as the test gives them). Trial ids are the configs' own hashes,
as the engine's.
tests/test_analysis_builder.py checks that the engine's readers accept what it writes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ablate.engine.manifest import spec_record
from ablate.run_folder.layout import GRAD_NORMS, MANIFEST, PREDICTIONS, CURVES, SPEC, resume_manifest_name, trial_dir
from ablate.run_folder.registry import append_registry
from ablate.run_folder.run_files import manifest_text
from ablate.run_folder.trial_records import PREDICTION_COLUMNS, write_config, write_metrics
from ablate.spec.study_spec import parse_study

BASE = {"family": "imagenet", "depth": 18, "shortcut": "projection", "dataset": "digits", "train_size": 1000,
        "dev_size": 200, "test_size": 200, "batch_size": 64, "epochs": 5, "eval_every": 15, "seed": 100}
RESIDUAL = {"residual": {"values": [True, False]}}
REGISTRY_ONLY = ("round", "index", "repeat", "repeat_of", "best_dev_loss")


def spec_doc(**overrides: Any) -> dict:
    doc = {"name": "constructed", "description": "ResNet18 on MNIST with and without residual connections",
           "base": dict(BASE), "factors": RESIDUAL, "seeds": [0, 1, 2], "budget": "default"}
    doc.update(overrides)
    return doc


def predictions_for(labels: np.ndarray, correct: np.ndarray, correct_final: np.ndarray | None = None) -> str:
    """predictions.csv text: a wrong prediction is (label + 1) mod 10."""
    correct_final = correct if correct_final is None else correct_final
    pred = np.where(correct, labels, (labels + 1) % 10)
    final = np.where(correct_final, labels, (labels + 1) % 10)
    lines = [",".join(PREDICTION_COLUMNS)] + [f"{i},{y},{p},{q}" for i, (y, p, q) in enumerate(zip(labels, pred, final))]
    return "\n".join(lines) + "\n"


def build_run(root: Path, trials: list[dict], doc: dict | None = None, manifest: dict | None = None,
              resumes: list[dict] | None = None) -> Path:
    """A run folder. Each trial: arm, seed, stage (default: the final stage), status (default ok) and
    any registry metrics (test_acc, final_test_acc, ...); optional `params`, `curves` (rows of
    step/train_loss/dev_loss/dev_acc), `grad_norms` (rows of the grad_norms.csv columns), `correct`
    (0/1 per test image, best-dev checkpoint; test_acc is then its mean), `correct_final`, `labels`."""
    doc = doc or spec_doc()
    study = parse_study(doc, source="constructed")
    root.mkdir(parents=True, exist_ok=True)
    (root / SPEC).write_text(study.resolved_yaml())
    man = {"study": study.name, "budget": study.budget, "dataset": study.base.get("dataset"),
           "git_commit": "0123456789abcdef0123456789abcdef01234567", "started_at": "2026-01-01T10:00:00+0000",
           **spec_record(study.resolved_yaml())}
    (root / MANIFEST).write_text(manifest_text({**man, **(manifest or {})}))
    for i, r in enumerate(resumes or []):
        (root / resume_manifest_name(f"20260102-00000{i}")).write_text(manifest_text({**man, **r}))
    arms = {a.name: a for a in study.arms}
    final = study.stages[-1]
    for t in trials:
        t = dict(t)
        arm, seed, stage = t.pop("arm"), t.pop("seed", 0), t.pop("stage", final)
        params = t.pop("params", {})
        cfg = study.trial_config(arms[arm], params, seed)
        folder = trial_dir(root, cfg.trial_id())
        folder.mkdir(parents=True, exist_ok=True)
        write_config(folder, cfg)
        curves, grads = t.pop("curves", None), t.pop("grad_norms", None)
        correct, correct_final, labels = t.pop("correct", None), t.pop("correct_final", None), t.pop("labels", None)
        if correct is not None:
            correct = np.asarray(correct, dtype=bool)
            labels = np.arange(correct.size) % 10 if labels is None else np.asarray(labels)
            (folder / PREDICTIONS).write_text(
                predictions_for(labels, correct, None if correct_final is None else np.asarray(correct_final, bool)))
            t.setdefault("test_acc", float(correct.mean()))
            if correct_final is not None:
                t.setdefault("final_test_acc", float(np.mean(correct_final)))
        if curves is not None:
            (folder / CURVES).write_text("step,train_loss,dev_loss,dev_acc\n" + "".join(
                f"{c['step']},{c.get('train_loss', '')},{c.get('dev_loss', '')},{c.get('dev_acc', '')}\n" for c in curves))
        if grads is not None:
            cols = ["step", "layer", "layer_index", "block", "kind", "grad_norm", "weight_norm", "output_std"]
            (folder / GRAD_NORMS).write_text(",".join(cols) + "\n" + "".join(
                ",".join(str(g.get(c, "")) for c in cols) + "\n" for g in grads))
        metrics = {"status": "ok", "dataset": study.base.get("dataset"), "steps": cfg.total_steps(), **t}
        # what a trial records (the registry adds where the engine proposed it: round, index, repeat)
        recorded = {k: v for k, v in metrics.items() if k not in REGISTRY_ONLY}
        write_metrics(folder, {"trial_id": cfg.trial_id(), **recorded})
        append_registry(root, {"trial_id": cfg.trial_id(), "stage": stage, "arm": arm, "params": params, "seed": seed,
                               **metrics})
    return root


def tune_rows(arm: str, points: dict[float, list[tuple[int, float, float]]], repeat: int | None = None,
              first_round: int = 0) -> list[dict]:
    """Tuning rows as the robust search writes them: per learning rate (a search point) one row per tuning seed,
    (seed, best dev accuracy, test accuracy); a dev accuracy of None marks a diverged run. Each row gets its own
    (round, index), as the engine's proposals do, and `repeat` when given."""
    rows = []
    for index, (lr, runs) in enumerate(points.items()):
        for seed, dev, test in runs:
            row = {"arm": arm, "seed": seed, "stage": "tune", "params": {"lr": lr}, "round": first_round + index,
                   "index": seed}
            if dev is None:
                row.update(status="diverged")
            else:
                row.update(best_dev_acc=dev, test_acc=test)
            if repeat is not None:
                row["repeat"] = repeat
            rows.append(row)
    return rows
