"""Diagnostics of a study's trained and freshly initialised models (`analyze --diagnostics`), per trial of the
final stage, with what each costs. The measurements themselves are in ablate.probes.measurements.

From the best-dev weights (trials/<id>/weights.pt):
- landscape: training loss (cross-entropy, eval-mode BatchNorm) on the first LANDSCAPE_IMAGES images of the
  trial's training subset along LANDSCAPE_DIRECTIONS filter-normalised random directions, at
  LANDSCAPE_POINTS points over [-1, 1]; its curvature at 0 (the sharpness number) and the top eigenvalue of
  the loss's Hessian on the same images (power iteration, at most HESSIAN_ITERATIONS Hessian-vector products);
  with landscape_2d a LANDSCAPE_2D_POINTS x LANDSCAPE_2D_POINTS plane spanned by the first two directions
  (first seed only), on the first LANDSCAPE_2D_IMAGES images.
- lesions_k: test accuracy with k blocks of one type (same-shape, downsampling) dropped at once (LESION_SAMPLES
  random sets per k).
From the trial's own seeded initialisation (ablate.train.loop.model_for, as the trial began):
- shattered: BatchNorm statistics fixed on the first BATCH_IMAGES training images, then the gradient of a fixed
  random projection of the logits with respect to the input at LINE_POINTS points on the line between two
  training images of different classes; its autocorrelation up to MAX_LAG.
- signal: one forward pass of the first BATCH_IMAGES training images in train mode (batch statistics, as at the
  first training step); per block the statistics of ablate.probes.measurements.signal_propagation.

Directions, projections and lesion draws come from fixed generator seeds, so every arm and seed gets the same
draws (of its own shapes) and a rerun gives the same numbers on the same machine.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from ablate.probes import measurements as probes
from ablate.errors import AblateError
from ablate.models import NO_MARKED_BLOCKS
from ablate.probes.lesion import load_trial
from ablate.run_folder import has_weights, trial_dir
from ablate.train import evaluate, model_for, torch_threads

LANDSCAPE_IMAGES = 128
LANDSCAPE_POINTS = 41
LANDSCAPE_DIRECTIONS = 2
LANDSCAPE_2D_POINTS = 21
LANDSCAPE_2D_IMAGES = 64  # the plane's 441 points on half the images: within a minute per arm for ResNet-56
SHARPNESS_WINDOW = 0.25
LINE_POINTS = 256
MAX_LAG = 64
BATCH_IMAGES = 256
LESION_SAMPLES = 5
LESION_KS = 12
DIRECTION_SEED = 0
PROJECTION_SEED = 0
LESION_SEED = 0
HESSIAN_ITERATIONS = 20
HESSIAN_SEED = 0
SETTINGS = dict(LANDSCAPE_IMAGES=LANDSCAPE_IMAGES, LANDSCAPE_POINTS=LANDSCAPE_POINTS,
                LANDSCAPE_DIRECTIONS=LANDSCAPE_DIRECTIONS, LANDSCAPE_2D_POINTS=LANDSCAPE_2D_POINTS,
                LANDSCAPE_2D_IMAGES=LANDSCAPE_2D_IMAGES,
                SHARPNESS_WINDOW=SHARPNESS_WINDOW, LINE_POINTS=LINE_POINTS, MAX_LAG=MAX_LAG, BATCH_IMAGES=BATCH_IMAGES,
                LESION_SAMPLES=LESION_SAMPLES, LESION_KS=LESION_KS, HESSIAN_ITERATIONS=HESSIAN_ITERATIONS)


@dataclass
class Diagnostics:
    """Tidy tables, one row per measurement, each with trial_id, arm and seed; `cost` has the seconds each
    diagnostic took per arm (all its seeds together); `skipped` says which trial or diagnostic was left out, why."""

    landscape: pd.DataFrame
    sharpness: pd.DataFrame
    landscape_2d: pd.DataFrame
    shattered: pd.DataFrame
    signal: pd.DataFrame
    lesions_k: pd.DataFrame
    cost: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=lambda: dict(SETTINGS))

    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in ("landscape", "sharpness", "landscape_2d", "shattered", "signal",
                                                        "lesions_k", "cost")}


def _landscape(model, x, y) -> tuple[list[dict], list[dict], list[dict[str, torch.Tensor]]]:
    """The 1-D slices, the sharpness row and the directions (for the plane)."""
    alphas = np.linspace(-1, 1, LANDSCAPE_POINTS)
    dirs = [probes.filter_normalised_direction(model, torch.Generator().manual_seed(DIRECTION_SEED + i))
            for i in range(LANDSCAPE_DIRECTIONS)]
    rows, curv = [], {}
    for i, d in enumerate(dirs):
        losses = probes.loss_surface(model, x, y, [d], [(a,) for a in alphas])
        rows += [{"direction": i, "alpha": float(a), "loss": l} for a, l in zip(alphas, losses)]
        curv[f"curvature_d{i}"] = probes.curvature(alphas, losses, SHARPNESS_WINDOW)
    top, iterations = probes.hessian_top(model, x, y, HESSIAN_ITERATIONS, HESSIAN_SEED)
    sharp = [{"curvature": float(np.nanmean(list(curv.values()))), **curv,
              "loss_at_0": next(r["loss"] for r in rows if abs(r["alpha"]) < 1e-12),
              "hessian_top": top, "hessian_iterations": iterations}]
    return rows, sharp, dirs


def _plane(model, x, y, dirs) -> list[dict]:
    grid = np.linspace(-1, 1, LANDSCAPE_2D_POINTS)
    coords = [(a, b) for a in grid for b in grid]
    return [{"alpha": float(a), "beta": float(b), "loss": l}
            for (a, b), l in zip(coords, probes.loss_surface(model, x, y, dirs[:2], coords))]


def _shattered(model, train_x, train_y, num_classes: int) -> list[dict]:
    probes.calibrate_batchnorm(model, train_x[:BATCH_IMAGES])
    labels = train_y.tolist()
    other = next((i for i, lab in enumerate(labels) if lab != labels[0]), 1)
    line = probes.line_between(train_x[0], train_x[other], LINE_POINTS)
    u = torch.randn(num_classes, generator=torch.Generator().manual_seed(PROJECTION_SEED))
    u = (u / u.norm()).to(train_x.device)
    acf = probes.autocorrelation(probes.input_gradients(model, line, u), MAX_LAG)
    return [{"lag": k, "autocorrelation": float(r)} for k, r in enumerate(acf)]


def diagnose_trial(folder: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
                   device: str | torch.device | None = None, landscape_2d: bool = False,
                   ) -> tuple[dict[str, list[dict]], dict[str, float], list[str]]:
    """Every diagnostic of one trial folder: (rows per table, seconds per diagnostic, notes on what was left out)."""
    folder = Path(folder)
    with_weights = has_weights(folder)
    t0 = time.perf_counter()
    trial = load_trial(folder, data_dir, device=device, weights=with_weights)
    # The trial's own thread count (1 in a study): two threads on two busy cores can be many times slower.
    with torch_threads(trial.cfg.threads):
        return _diagnose_trial(folder, trial, with_weights, t0, landscape_2d)


def _diagnose_trial(folder: Path, trial, has_weights: bool, t0: float, landscape_2d: bool):
    cfg, splits, dev, fmt = trial.cfg, trial.splits, trial.device, trial.memory_format
    train_x = splits.train.x.to(dev, memory_format=fmt)
    train_y = splits.train.y.to(dev)
    seconds = {"load": time.perf_counter() - t0}
    out: dict[str, list[dict]] = {name: [] for name in ("landscape", "sharpness", "landscape_2d", "shattered", "signal",
                                                        "lesions_k")}
    notes = []

    def timed(name: str, fn):
        t = time.perf_counter()
        result = fn()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t
        return result

    def fresh():
        return model_for(cfg, splits).to(dev, memory_format=fmt)

    out["shattered"] = timed("shattered", lambda: _shattered(fresh(), train_x, train_y, splits.num_classes))
    out["signal"] = timed("signal", lambda: probes.signal_propagation(fresh().train(), train_x[:BATCH_IMAGES]))
    marked = bool(out["signal"])  # a network that marks no residual block has no signal rows and no lesions
    if not marked:
        notes.append(f"{folder.name}: no signal propagation and no k-block lesions: {NO_MARKED_BLOCKS}")
    if not has_weights:
        notes.append(f"{folder.name}: no weights.pt (a spec keeps them with `keep_weights: final`), so no loss "
                     "landscape and no k-block lesions")
        return out, seconds, notes
    model = trial.model
    x, y = train_x[:LANDSCAPE_IMAGES], train_y[:LANDSCAPE_IMAGES]
    out["landscape"], out["sharpness"], dirs = timed("landscape", lambda: _landscape(model, x, y))
    if landscape_2d:
        out["landscape_2d"] = timed("landscape_2d", lambda: _plane(model, x[:LANDSCAPE_2D_IMAGES],
                                                                   y[:LANDSCAPE_2D_IMAGES], dirs))
    test_x, test_y = splits.test.x.to(dev), splits.test.y.to(dev)

    def score() -> float:
        return evaluate(model, test_x, test_y, fmt)[0]

    if marked:
        rows = timed("lesions_k", lambda: probes.k_lesions(model, score, LESION_SAMPLES,
                                                           np.random.default_rng(LESION_SEED), LESION_KS, test_x))
        # a user model's `residual` is its factory's setting (absent where the factory has none)
        out["lesions_k"] = [{"residual": cfg.settings().get("residual"), **r} for r in rows]
    model.eval()
    return out, seconds, notes


def diagnose_run(run_dir: str | os.PathLike, trials: list[dict[str, Any]], data_dir: str | os.PathLike | None = None,
                 *, device: str | torch.device | None = None, landscape_2d: bool = False,
                 progress: Callable[[int, int, dict[str, Any]], None] | None = None) -> Diagnostics:
    """diagnose_trial for each of `trials` (dicts with trial_id, arm, seed: the reported final-stage trials);
    with landscape_2d, the plane is computed for the first seed of each arm only. `progress(i, n, trial)` is
    called before each trial."""
    run_dir = Path(run_dir)
    if not trials:
        raise AblateError(f"{run_dir} has no finished final-stage trial to diagnose")
    tables: dict[str, list[dict]] = {name: [] for name in ("landscape", "sharpness", "landscape_2d", "shattered",
                                                           "signal", "lesions_k")}
    cost: dict[tuple[str, str], list[float]] = {}
    skipped: dict[str, str] = {}
    planes_done: set[str] = set()
    for i, t in enumerate(trials):
        if progress is not None:
            progress(i, len(trials), t)
        folder = trial_dir(run_dir, t["trial_id"])
        want_2d = landscape_2d and t["arm"] not in planes_done
        rows, seconds, notes = diagnose_trial(folder, data_dir, device=device, landscape_2d=want_2d)
        if rows["landscape_2d"]:
            planes_done.add(t["arm"])
        ident = {"trial_id": t["trial_id"], "arm": t["arm"], "seed": t["seed"]}
        for name, part in rows.items():
            tables[name] += [{**ident, **r} for r in part]
        for name, s in seconds.items():
            cost.setdefault((t["arm"], name), []).append(s)
        if notes:
            skipped[f"{t['arm']} seed {t['seed']}"] = "; ".join(notes)
    frames = {name: pd.DataFrame(rows) for name, rows in tables.items()}
    cost_frame = pd.DataFrame([{"arm": arm, "diagnostic": name, "trials": len(s), "seconds": float(sum(s))}
                               for (arm, name), s in cost.items()], columns=["arm", "diagnostic", "trials", "seconds"])
    return Diagnostics(**frames, cost=cost_frame, skipped=skipped)
