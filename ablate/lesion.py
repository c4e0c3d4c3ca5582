"""Lesion study (Veit et al. 2016): drop one residual block at test time and measure what accuracy it costs.

Dropping a block removes its residual branch F(x) and keeps only the path around it:

- `identity`: shapes match, so the block's input passes unchanged. Every block input here is the
  output of a ReLU (or a max-pool of one), so the ReLU that ends the block would change nothing.
- `projection`: shapes change and the block has a 1x1 projection shortcut; the block becomes
  ReLU(BN(conv1x1(x))), its own shortcut followed by the ReLU that ends every block.
- `zero-pad`: shapes change and the block has an option-A shortcut (an identity-shortcut net): that
  shortcut, subsample + zero-pad channels. Its output is a subsample of non-negative values and
  zeros, so no ReLU is needed.
- `zero-pad-added`: shapes change in a plain net, which has no shortcut at all: a parameter-free
  `IdentityShortcut` is built for the lesion. It is not part of the trained network, so this
  lesion is not like for like with a residual net's (which keeps its own trained shortcut).

Each row also says which kind of block it is (`same-shape` or `downsampling`) and what share of the
test predictions the lesion changed (`changed`), so a lesion that drops accuracy to chance and one
that changes nothing can be told apart from the accuracies alone.

The swap is a temporary instance-level `forward` on the block (`dropped`), undone on exit, so
the model's code and weights stay untouched. Accuracy is measured by the same evaluation the
trial runner used for its test score, so with nothing dropped it equals the recorded test_acc.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from .errors import AblateError
from .models import BasicBlock, IdentityShortcut, build_model
from .runs import read_metrics
from .outputs import load_weights
from .trial import TrialConfig, _evaluate, recorded_device

REPLACEMENTS = ("identity", "projection", "zero-pad", "zero-pad-added")
ROW_COLUMNS = ("block", "block_index", "block_type", "replacement", "test_acc", "lesioned_acc", "drop", "changed")
RUN_COLUMNS = ("trial_id", "arm", "seed", "residual", *ROW_COLUMNS)


def replacement_for(block: BasicBlock) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """What a dropped block computes instead: (kind, function of the block's input)."""
    in_ch, out_ch, stride = block.conv1.in_channels, block.conv2.out_channels, block.conv1.stride[0]
    if stride == 1 and in_ch == out_ch:
        return "identity", lambda x: x
    shortcut = block.shortcut
    if shortcut is None:
        added = IdentityShortcut(in_ch, out_ch, stride)
        return "zero-pad-added", lambda x: added(x)
    if isinstance(shortcut, IdentityShortcut):
        return "zero-pad", lambda x: shortcut(x)
    # Out of place: the shortcut's input is a live activation the next layers never see modified.
    return "projection", lambda x: F.relu(shortcut(x))


@contextlib.contextmanager
def dropped(block: BasicBlock) -> Iterator[str]:
    """Within the block, the residual branch is gone; yields the replacement kind."""
    kind, forward = replacement_for(block)
    # An instance attribute shadows the class's forward for this block only; nn.Module.__call__ finds it.
    block.forward = forward
    try:
        yield kind
    finally:
        del block.forward


def lesion_trial(folder: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
                 device: str | torch.device | None = None) -> list[dict[str, Any]]:
    """Lesion every residual block of one trial's best-dev weights, one block at a time.

    Rows (ROW_COLUMNS): the first, block "none" (block_index -1, replacement "none"), drops nothing
    and is the check that the reloaded model scores the recorded test accuracy; then one row per
    block in forward order. test_acc is the intact model's accuracy measured now, drop =
    test_acc - lesioned_acc, changed = share of test images whose predicted class differs from
    the intact model's.
    """
    from .data import load_splits

    folder = Path(folder)
    config_path, weights_path = folder / "config.yaml", folder / "weights.pt"
    if not config_path.is_file():
        raise AblateError(f"no config.yaml in {folder}; pass a trial folder (run_dir/trials/<trial_id>)")
    if not weights_path.is_file():
        raise AblateError(f"no weights.pt in {folder}; retrain the trial with its weights saved (train --save-weights)")
    cfg = TrialConfig.from_yaml_file(config_path)
    state = load_weights(weights_path)
    metrics = read_metrics(folder) or {}
    # 'auto' may resolve differently on this machine; the recorded dataset is the one the weights saw.
    dataset = metrics.get("dataset") if cfg.dataset == "auto" and metrics.get("dataset") else cfg.dataset

    device = torch.device(recorded_device(metrics, device))
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        splits = load_splits(dataset, data_dir, cfg.train_size, cfg.dev_size, cfg.test_size,
                             seed=cfg.data_seed, image_size=cfg.image_size)
        model = build_model(cfg.family, cfg.depth, residual=cfg.residual, shortcut=cfg.shortcut,
                            in_channels=splits.in_channels, num_classes=splits.num_classes)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise AblateError(f"{weights_path} does not fit the model in {config_path} "
                              f"({str(exc).splitlines()[0]}); pass the folder the weights were trained in") from None
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model = model.to(device, memory_format=memory_format).eval()

        test_x, test_y = splits.test.x.to(device), splits.test.y.to(device)

        def score() -> tuple[float, torch.Tensor]:
            acc, _, pred = _evaluate(model, test_x, test_y, memory_format, predictions=True)
            return acc, torch.tensor(pred)

        intact, intact_pred = score()
        rows = [{"block": "none", "block_index": -1, "block_type": "none", "replacement": "none", "test_acc": intact,
                 "lesioned_acc": intact, "drop": 0.0, "changed": 0.0}]
        for index, (name, block) in enumerate(model.blocks()):
            with dropped(block) as kind:
                acc, pred = score()
            rows.append({"block": name, "block_index": index,
                         "block_type": "same-shape" if kind == "identity" else "downsampling", "replacement": kind,
                         "test_acc": intact, "lesioned_acc": acc, "drop": intact - acc,
                         "changed": float((pred != intact_pred).float().mean())})
    finally:
        torch.set_num_threads(threads_before)
    return rows


def lesion_run(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
               device: str | torch.device | None = None):
    """Lesion every trial of a study run's final stage (confirm, else grid) that saved weights.pt.

    Returns a pandas DataFrame with RUN_COLUMNS, trials ordered by arm, seed and trial id.
    """
    import pandas as pd

    from .runs import REGISTRY, read_registry

    run_dir = Path(run_dir)
    if not (run_dir / REGISTRY).is_file():
        raise AblateError(f"no {REGISTRY} in {run_dir}; pass a study run folder (made by 'study')")
    rows = read_registry(run_dir)
    stages = {r["stage"] for r in rows}
    final = next((s for s in ("confirm", "grid") if s in stages), None)
    if final is None:
        raise AblateError(f"{run_dir} has no confirm or grid trials yet; finish the study (study --resume {run_dir})")
    trials = sorted((r for r in rows if r["stage"] == final),
                    key=lambda r: (str(r.get("arm")), r.get("seed") or 0, r["trial_id"]))
    out = []
    for row in trials:
        folder = run_dir / "trials" / row["trial_id"]
        if not (folder / "weights.pt").is_file():
            continue
        cfg = TrialConfig.from_yaml_file(folder / "config.yaml")
        for lesion in lesion_trial(folder, data_dir, device=device):
            out.append({"trial_id": row["trial_id"], "arm": row.get("arm"), "seed": row.get("seed"),
                        "residual": cfg.residual, **lesion})
    if not out:
        raise AblateError(f"no {final} trial in {run_dir} has weights.pt; rerun that stage with weights saved")
    return pd.DataFrame(out, columns=list(RUN_COLUMNS))
