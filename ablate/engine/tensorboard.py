"""TensorBoard event files for a study's trials (`study --tensorboard`), written from each trial's own
records when it is registered: its curves (train loss per step, dev loss and accuracy per evaluation)
and its hyper-parameters with its results, so TensorBoard's HPARAMS tab can compare trials.

Open them with `tensorboard --logdir RUN/tensorboard`. Needs the `tensorboard` package
(`pip install 'tensorboard>=2.14'`, or `pip install -e '.[tensorboard]'` in ablate's checkout).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.run_folder import TENSORBOARD, read_curves, trial_dir
from ablate.slug import child, slug

HPARAM_METRICS = ("best_dev_acc", "test_acc", "final_test_acc", "steps")


def check_available() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise AblateError("--tensorboard needs the tensorboard package: pip install 'tensorboard>=2.14' (or, in "
                          "ablate's checkout, pip install -e '.[tensorboard]')")


def run_name(row: dict[str, Any]) -> str:
    """stage/arm/which: tune/residual=true/r0-i1, confirm/residual=true/seed0, grid/.../lr=0.01-seed0."""
    return "/".join(slug(part) for part in _parts(row))


def _parts(row: dict[str, Any]) -> tuple[str, str, str]:
    """The folders of a trial's run, as text: arm names and grid values come from the spec (ablate.slug makes
    each one folder inside the run's tensorboard/, whatever it holds: `folder:../../..` included)."""
    if row.get("round") is not None:
        which = f"r{row['round']}-i{row['index']}"
    else:
        point = "-".join(f"{k}={v}" for k, v in (row.get("params") or {}).items() if row["stage"] == "grid")
        which = f"{point + '-' if point else ''}seed{row.get('seed')}"
    return str(row["stage"]), str(row["arm"]), which


def write_trial(run_dir: Path, row: dict[str, Any], settings: dict[str, Any]) -> Path:
    """Event files for one registered trial (a registry row), from its folder's curves.csv."""
    from torch.utils.tensorboard import SummaryWriter

    dest = child(Path(run_dir) / TENSORBOARD, *_parts(row))
    if dest.exists():
        for old in dest.glob("events.out.tfevents.*"):
            old.unlink()  # a trial registered again (a retried error) replaces its events
    writer = SummaryWriter(log_dir=str(dest))
    try:
        curves = read_curves(trial_dir(run_dir, row["trial_id"]))  # None: a trial that failed before its first step
        if curves is not None:
            for step, train_loss in zip(curves.step, curves.train_loss):
                if train_loss is not None:
                    writer.add_scalar("train/loss", train_loss, step)
            for step, dev_loss, dev_acc in curves.evaluations():
                writer.add_scalar("dev/accuracy", dev_acc, step)
                if dev_loss is not None:
                    writer.add_scalar("dev/loss", dev_loss, step)
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in settings.items()}
        hparams.update({"stage": row["stage"], "arm": str(row["arm"]), "status": str(row.get("status"))})
        metrics = {f"result/{k}": float(row[k]) for k in HPARAM_METRICS if isinstance(row.get(k), (int, float))}
        writer.add_hparams(hparams, metrics, run_name=".")
    finally:
        writer.close()
    return dest
