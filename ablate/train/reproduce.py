"""Rerun a finished trial from its config.yaml and compare everything it recorded, value for value.

On CPU with the same machine and thread count a trial is deterministic, so "identical" means
bit for bit: floats are compared with ==, never with a tolerance (NaN matches NaN, and a null in
metrics.json, JSON's spelling of NaN, matches NaN). Any difference is listed with both values.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ablate.data import SOURCES, Unavailable
from ablate.errors import AblateError
from ablate.run_folder import (CONFIG, Curves, METRICS, REGISTRY, TRIALS, has_metrics, read_config_file, read_curves,
    read_grad_norms, read_metrics)
from ablate.train.result import TrialResult
from ablate.train.device import recorded_device
from ablate.train.loop import run_trial

SCALARS = ("status", "dataset", "steps", "best_dev_acc", "best_step", "test_acc", "test_loss", "final_train_loss")
REPRODUCIBLE = ("ok", "diverged")


@dataclass(frozen=True)
class Difference:
    name: str
    recorded: Any
    now: Any
    abs_diff: float | None  # None where the values are not two finite numbers
    note: str = ""

    def format(self) -> str:
        diff = "" if self.abs_diff is None else f"  abs diff {self.abs_diff:.6g}"
        note = f"  ({self.note})" if self.note else ""
        return f"{self.name}: recorded {self.recorded!r}, now {self.now!r}{diff}{note}"


@dataclass
class Report:
    config_path: Path
    trial_id: str
    compared: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # context that is not a result: threads, device, edits
    result: TrialResult | None = field(default=None, repr=False)

    @property
    def identical(self) -> bool:
        return not self.differences

    def format(self) -> str:
        head = (f"{self.config_path}: {'identical' if self.identical else f'{len(self.differences)} difference(s)'}"
                f" (trial {self.trial_id}; compared {', '.join(self.compared)})")
        return "\n".join([head, *("  " + d.format() for d in self.differences), *("  note: " + n for n in self.notes)])

    __str__ = format


def _same(recorded: Any, now: Any) -> bool:
    return (_is_nan(recorded) and _is_nan(now)) or recorded == now


def _is_nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _abs_diff(recorded: Any, now: Any) -> float | None:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (recorded, now))
    if numeric and math.isfinite(recorded) and math.isfinite(now):
        return abs(float(recorded) - float(now))
    return None


def _series_difference(name: str, recorded: dict, now: dict, label: str) -> list[Difference]:
    """One Difference per series: its first differing point, with how many differ and the largest gap."""
    if recorded.keys() != now.keys():
        return [Difference(f"{name} {label}s", len(recorded), len(now), None,
                           note=f"{len(recorded.keys() - now.keys())} recorded only, {len(now.keys() - recorded.keys())} now only")]
    bad = [k for k in recorded if not _same(recorded[k], now[k])]
    if not bad:
        return []
    gaps = [d for d in (_abs_diff(recorded[k], now[k]) for k in bad) if d is not None]
    first = bad[0]
    note = f"first of {len(bad)} differing {label}s" + (f"; largest abs diff {max(gaps):.6g}" if gaps else "")
    return [Difference(f"{name} [{label} {first}]", recorded[first], now[first], _abs_diff(recorded[first], now[first]), note)]


def _curves(curves: Curves) -> dict[str, dict[int, float | None]]:
    return {"train_loss": dict(zip(curves.step, curves.train_loss)),
            "dev_loss": {step: loss for step, loss, _ in curves.evaluations()},
            "dev_acc": {step: acc for step, _, acc in curves.evaluations()}}


GRAD_NORM_VALUES = ("grad_norm", "weight_norm", "output_std")


def _grad_norms(folder: Path) -> dict[str, dict[tuple, float | None]] | None:
    """grad_norms.csv's values by (step, layer, kind); None when the trial recorded none."""
    table = read_grad_norms(folder)
    if table is None:
        return None
    out: dict[str, dict[tuple, float | None]] = {c: {} for c in GRAD_NORM_VALUES}
    for row in table.to_dict("records"):
        key = (int(row["step"]), row["layer"], row["kind"])
        for c in GRAD_NORM_VALUES:
            value = row[c]
            out[c][key] = None if isinstance(value, float) and math.isnan(value) else float(value)
    return out


def _check_registered(folder: Path) -> None:
    """A trial folder inside a study run (RUN/trials/<id>) is compared only if its files are those its registry row
    bound it to (their hashes; a row of an older ablate has none): an edited config.yaml or metrics.json is
    named and refused, not rerun and compared. A folder elsewhere (an export, a `train` run) has no registry."""
    from ablate.run_folder import check_trial_records, read_registry_lines

    folder = folder.absolute()  # not resolved: a trial folder that is a symbolic link is refused, not followed
    run_dir = folder.parent.parent
    if folder.parent.name != TRIALS or not (run_dir / REGISTRY).is_file():
        return
    for line, row in read_registry_lines(run_dir):
        if row["trial_id"] == folder.name:
            check_trial_records(run_dir, line, row)


def _check_factory(cfg, allow_changed: bool, report: Report) -> None:
    """The user model's source as the trial recorded it, imported (saying so) before anything is trained."""
    from ablate.models import load_factory

    _check_source("model factory", "model", cfg.factory, cfg.factory_file, cfg.factory_sha256, allow_changed, report)
    load_factory(cfg.factory, cfg.factory_file, cfg.factory_sha256, announce=True, allow_changed=allow_changed)


def _check_loader(cfg, allow_changed: bool, report: Report) -> None:
    """The user's data loader's source as the trial recorded it, imported (saying so) before any data is read."""
    from ablate.data import check_loader

    _check_source("data loader", "data loader", cfg.dataset, cfg.data_file, cfg.data_sha256, allow_changed, report)
    check_loader(cfg.dataset, cfg.data_file, cfg.data_sha256, allow_changed=allow_changed)


def _check_source(what: str, short: str, reference: str, file: str, sha256: str, allow_changed: bool,
                  report: Report) -> None:
    """A user's source file still there and still hashing to what the trial recorded: else refused in one line naming
    the file and both hashes, or with `allow_changed` rerun and said so in the report."""
    from ablate.spec import file_sha256

    path = Path(file)
    if not path.is_file():
        raise AblateError(f"{what} {reference}: its source file {path} is missing (recorded SHA-256 "
                          f"{sha256}); put that file back there to reproduce the trial")
    now = file_sha256(path)
    if now != sha256:
        if not allow_changed:
            raise AblateError(f"{what} {reference}: {path} has changed since the trial ran (recorded SHA-256 "
                              f"{sha256}, now {now}); restore it, or pass --allow-changed to rerun the "
                              "changed source anyway")
        report.notes.append(f"--allow-changed: reran a changed {short} source, {path} (recorded SHA-256 "
                            f"{sha256}, now {now}); differences may come from that change")


def _missing_data(dataset: str, data_dir: str | os.PathLike | None, exc: Unavailable) -> str:
    """What reproduce says when the data the trial trained on is not here: where its files go (a rerun on other data
    would compare nothing)."""
    from ablate.data import DATA_DIR_ENV, resolve_data_dir

    source, root = SOURCES[dataset], resolve_data_dir(data_dir)
    return (f"the trial trained on {source.title}, which was not found under {root} ({exc.reason}); reproduce reruns "
            f"it on the same data: put {', '.join(source.files)} in {root / source.folder}, or pass --data-dir (or set "
            f"${DATA_DIR_ENV}) to a folder holding {source.folder}/")


def reproduce_trial(config_path: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
                    device: str | torch.device | None = None, allow_changed: bool = False) -> Report:
    """Rerun the trial in config_path (a trial folder's config.yaml, or the folder) and compare.

    Compared: the scalars in SCALARS against metrics.json, the train-loss curve and the dev curve
    against curves.csv, and every value of grad_norms.csv when the folder has one.

    A trial of a user model reruns its factory from the source file its config records, and a trial of a user's data
    loader that loader: a missing file, or one whose SHA-256 is not the recorded one, is refused in one line naming
    the file and the hashes; `allow_changed` reruns a changed one anyway, and the report says so.
    """
    path = Path(config_path)
    if path.is_dir():
        path = path / CONFIG
    if not path.is_file():
        raise AblateError(f"no config at {path}; pass a trial folder's {CONFIG} (trials/<id>/{CONFIG})")
    folder = path.parent
    _check_registered(folder)
    cfg = read_config_file(path)
    metrics_path = folder / METRICS
    if not has_metrics(folder):
        raise AblateError(f"no recorded metrics next to {path} ({METRICS} missing); "
                          "reproduce compares against a finished trial folder")
    recorded = read_metrics(folder)
    if recorded is None:
        raise AblateError(f"cannot read {metrics_path} (cut short, damaged or not a metrics mapping); the trial folder "
                          "is damaged, rerun the trial")
    if recorded.get("status") not in REPRODUCIBLE:
        raise AblateError(f"{metrics_path} records status {recorded.get('status')!r}, not a finished trial "
                          f"({' or '.join(REPRODUCIBLE)}); there is nothing complete to compare against")

    report = Report(config_path=path, trial_id=cfg.trial_id())
    if recorded.get("trial_id") not in (None, report.trial_id):
        report.notes.append(f"metrics.json names trial {recorded['trial_id']} but config.yaml hashes to "
                            f"{report.trial_id}: the config was edited or written by another ablate version")
    device = recorded_device(recorded, device)
    if cfg.factory:
        _check_factory(cfg, allow_changed, report)
    if cfg.data_sha256:
        _check_loader(cfg, allow_changed, report)
    run_cfg = cfg
    if cfg.dataset == "auto" and recorded.get("dataset") in ("mnist", "digits"):
        # `auto` may resolve otherwise on this machine; the recorded numbers came from this dataset.
        run_cfg = cfg.replace(dataset=recorded["dataset"])
    try:
        result = run_trial(run_cfg, data_dir=data_dir, device=device)
    except Unavailable as exc:  # its advice (e.g. another --dataset) is train's and study's, not reproduce's
        raise AblateError(_missing_data(run_cfg.dataset, data_dir, exc)) from None
    report.result = result
    for key, value in (("threads", result.threads), ("device", result.device)):
        if key in recorded and recorded[key] != value:
            report.notes.append(f"recorded with {key}={recorded[key]}, rerun with {key}={value}: "
                                "float results may differ for that reason alone")

    now_metrics = result.metrics()
    for key in SCALARS:
        report.compared.append(key)
        if key not in recorded:
            report.differences.append(Difference(key, None, now_metrics[key], None, note="absent from metrics.json"))
        elif not _same(recorded[key], now_metrics[key]):
            report.differences.append(Difference(key, recorded[key], now_metrics[key],
                                                 _abs_diff(recorded[key], now_metrics[key])))

    curves = read_curves(folder)
    if curves is not None:
        then = _curves(curves)
        now = {"train_loss": dict(enumerate(result.train_loss, start=1)),
               "dev_loss": dict(zip(result.eval_steps, result.dev_loss)),
               "dev_acc": dict(zip(result.eval_steps, result.dev_acc))}
        for name in ("train_loss", "dev_loss", "dev_acc"):
            report.compared.append(f"{name} curve ({len(then[name])} steps)")
            report.differences += _series_difference(name, then[name], now[name], "step")
    else:
        report.notes.append("no curves.csv next to the config: curves not compared")

    then = _grad_norms(folder)
    if then is not None:
        now = {c: {} for c in then}
        for row in result.grad_norms:
            for c in now:
                now[c][(row["step"], row["layer"], row["kind"])] = row[c]
        report.compared.append(f"grad_norms.csv ({len(then['grad_norm'])} rows)")
        for name in then:
            report.differences += _series_difference(name, then[name], now[name], "row")
    return report

