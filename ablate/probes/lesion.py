"""Lesion study (Veit et al. 2016): drop one residual block at test time and measure what accuracy it costs.

Dropping a block removes its residual branch F(x) and keeps only the path around it:

- `identity`: shapes match and the skip is the identity, so the block's input passes unchanged (in a
  basic block followed by its closing ReLU, which changes nothing: every basic block's input is the
  output of a ReLU or a max-pool of one; with `activation: gelu` the closing GELU does change it).
- `projection`: the block has a 1x1 projection shortcut (where it reshapes, or on every block with
  `projection-all`); a basic block becomes ReLU(BN(conv1x1(x))), its own shortcut followed by the
  ReLU that ends it, a pre-activation block conv1x1(ReLU(BN1(x))), as its shortcut reads it.
- `zero-pad`: shapes change and the block has an option-A shortcut (an identity-shortcut net): that
  shortcut, subsample + zero-pad channels. Its output is a subsample of non-negative values and
  zeros, so no ReLU is needed.
- `zero-pad-added`: shapes change in a plain net, which has no shortcut at all: a parameter-free
  `IdentityShortcut` is built for the lesion. It is not part of the trained network, so this
  lesion is not like for like with a residual net's (which keeps its own trained shortcut).

A user's network marks its residual blocks as ablate.Residual (ablate.models.residual): a dropped one computes
its `bypass`, `shortcut` (its own shortcut module, then its `after`) or `identity` (no shortcut: its input, through
its `after`); a plain one that changes its input's shape without a shortcut cannot be dropped and is left out.

The replacement is the block's own `bypass` (ablate.models): its skip path, what the block computes
with the residual branch removed. Each row also says which kind of block it is (`same-shape` or
`downsampling`, from its shapes) and what share of the test predictions the lesion changed
(`changed`), so a lesion that drops accuracy to chance and one that changes nothing can be told
apart from the accuracies alone.

The swap is a temporary instance-level `forward` on the block (`dropped`), undone on exit, so
the model's code and weights stay untouched. Accuracy is measured by the same evaluation the
trial runner used for its test score, so with nothing dropped it equals the recorded test_acc.

By default the BatchNorm statistics stay those of training, as Veit et al. 2016 did: a lesion also shifts the
statistics every later BatchNorm sees, and that shift is part of the measured drop. With `recalibrate` (`analyze
--lesion --lesion-recalibrate`), after each lesion the running statistics are re-estimated on the trial's training
images (ablate.probes.batchnorm, in batches of 256) before scoring and restored afterwards, as later work on
lesions and pruning does, so the drop measures the lost computation without the statistics' mismatch.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ablate.errors import AblateError
from ablate.models import NO_MARKED_BLOCKS, Block, IdentityShortcut, Residual, residual_blocks
from ablate.probes.batchnorm import estimate_statistics, kept_statistics
from ablate.run_folder import CONFIG, REGISTRY, WEIGHTS, has_weights, load_weights, read_config, read_metrics, trial_dir
from ablate.spec import TrialConfig
from ablate.train import evaluate, model_for, recorded_device, torch_threads

ROW_COLUMNS = ("block", "block_index", "block_type", "replacement", "recalibrated", "test_acc", "lesioned_acc", "drop",
               "changed")
RUN_COLUMNS = ("trial_id", "arm", "seed", "residual", *ROW_COLUMNS)


def reshapes(block: Block) -> bool:
    """Whether a shipped ResNet block changes its input's shape (from its convolutions)."""
    return block.conv1.stride[0] != 1 or block.conv1.in_channels != block.conv2.out_channels


def marked_blocks(model: torch.nn.Module, x: torch.Tensor | None = None) -> list[tuple[str, torch.nn.Module, bool]]:
    """(name, block, reshapes) for every residual block the model marks (ablate.models.residual_blocks), in order.
    A shipped ResNet block's shape change is read from its convolutions; an ablate.Residual's from one forward pass
    of x[:2] in eval mode (no statistics updated, no random numbers drawn from the generators' streams), so `x` is
    needed when the model has any."""
    blocks = residual_blocks(model)
    probe = [b for _, b in blocks if not isinstance(b, Block)]
    changed: dict[int, bool] = {}
    if probe:
        if x is None:
            raise AblateError("telling which marked residual blocks change their input's shape needs an input batch")

        def hook(module, inputs, output):
            changed[id(module)] = tuple(inputs[0].shape) != tuple(output.shape)

        handles = [b.register_forward_hook(hook) for b in probe]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
                model(x[:2])
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
    return [(name, b, reshapes(b) if isinstance(b, Block) else changed.get(id(b), False)) for name, b in blocks]


def replacement_for(block: torch.nn.Module, reshaping: bool | None = None
                    ) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None:
    """What a dropped block computes instead: (kind, function of the block's input); None when it cannot be dropped
    (an ablate.Residual that changes its input's shape and has no shortcut: nothing of its output's shape is left).
    `reshaping`: whether the block changes its input's shape (marked_blocks; read from a ResNet block itself)."""
    if isinstance(block, Residual):
        if block.shortcut is not None:
            return "shortcut", block.bypass
        return None if reshaping else ("identity", block.bypass)
    shortcut = block.shortcut
    if shortcut is None:
        if not reshapes(block):
            return "identity", block.bypass
        added = IdentityShortcut(block.conv1.in_channels, block.conv2.out_channels, block.conv1.stride[0])
        return "zero-pad-added", lambda x: block.bypass(x, added)
    return ("zero-pad" if isinstance(shortcut, IdentityShortcut) else "projection"), block.bypass


@contextlib.contextmanager
def dropped(block: torch.nn.Module, reshaping: bool | None = None) -> Iterator[str]:
    """Within the block, the residual branch is gone; yields the replacement kind."""
    replacement = replacement_for(block, reshaping)
    if replacement is None:
        raise AblateError("this block changes its input's shape and has no shortcut, so it cannot be dropped")
    kind, forward = replacement
    # An instance attribute shadows the class's forward for this block only; nn.Module.__call__ finds it.
    block.forward = forward
    try:
        yield kind
    finally:
        del block.forward


@dataclass
class TrialModel:
    """A trial's model rebuilt from its folder, with the data subsets it was trained and scored on."""

    cfg: TrialConfig
    splits: Any
    model: torch.nn.Module
    device: torch.device
    memory_format: torch.memory_format


def load_trial(folder: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
               device: str | torch.device | None = None, weights: bool = True) -> TrialModel:
    """The trial's model in eval mode on the device asked for, else the one it was trained on: its best-dev weights
    (weights.pt), or with weights=False its own seeded initialisation (ablate.train.loop.model_for, as the trial began)."""
    from ablate.data import load_splits

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG, folder / WEIGHTS
    if not config_path.is_file():
        raise AblateError(f"no {CONFIG} in {folder}; pass a trial folder (run_dir/trials/<trial_id>)")
    if weights and not has_weights(folder):
        raise AblateError(f"no {WEIGHTS} in {folder}; retrain the trial with its weights saved (train --save-weights)")
    cfg = read_config(folder)
    state = load_weights(folder) if weights else None
    metrics = read_metrics(folder) or {}
    # 'auto' may resolve differently on this machine; the recorded dataset is the one the weights saw.
    dataset = metrics.get("dataset") if cfg.dataset == "auto" and metrics.get("dataset") else cfg.dataset
    if cfg.data_sha256:  # a data loader of the user's: imported after one line says so, from its recorded source
        from ablate.data import check_loader

        check_loader(cfg.dataset, cfg.data_file, cfg.data_sha256)
    splits = load_splits(dataset, data_dir, cfg.train_size, cfg.dev_size, cfg.test_size,
                         seed=cfg.data_seed, image_size=cfg.image_size, data_file=cfg.data_file,
                         data_sha256=cfg.data_sha256)
    model = model_for(cfg, splits)
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise AblateError(f"{weights_path} does not fit the model in {config_path} "
                              f"({str(exc).splitlines()[0]}); pass the folder the weights were trained in") from None
    device = torch.device(recorded_device(metrics, device))
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).eval()
    return TrialModel(cfg, splits, model, device, memory_format)


def lesion_trial(folder: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
                 device: str | torch.device | None = None, recalibrate: bool = False) -> list[dict[str, Any]]:
    """Lesion every residual block of one trial's best-dev weights, one block at a time.

    Rows (ROW_COLUMNS): the first, block "none" (block_index -1, replacement "none"), drops nothing
    and is the check that the reloaded model scores the recorded test accuracy (with its trained BatchNorm
    statistics); then one row per block in forward order. test_acc is the intact model's accuracy measured
    now, drop = test_acc - lesioned_acc, changed = share of test images whose predicted class differs from
    the intact model's. With `recalibrate`, each lesioned model's BatchNorm statistics are re-estimated on the
    training images before it is scored (see the module docstring).
    """
    trial = load_trial(folder, data_dir, device=device)
    with torch_threads(trial.cfg.threads):
        model = trial.model
        test_x, test_y = trial.splits.test.x.to(trial.device), trial.splits.test.y.to(trial.device)

        def score() -> tuple[float, torch.Tensor]:
            acc, _, pred = evaluate(model, test_x, test_y, trial.memory_format, predictions=True)
            return acc, torch.tensor(pred)

        train_x = trial.splits.train.x.to(trial.device, memory_format=trial.memory_format) if recalibrate else None
        intact, intact_pred = score()
        rows = [{"block": "none", "block_index": -1, "block_type": "none", "replacement": "none", "recalibrated": False,
                 "test_acc": intact, "lesioned_acc": intact, "drop": 0.0, "changed": 0.0}]
        for index, (name, block, reshaping) in enumerate(marked_blocks(model, test_x)):
            if replacement_for(block, reshaping) is None:
                continue  # a plain block that changes its input's shape without a shortcut: nothing can replace it
            with dropped(block, reshaping) as kind, kept_statistics(model):
                if recalibrate:
                    estimate_statistics(model, train_x)
                acc, pred = score()
            rows.append({"block": name, "block_index": index,
                         "block_type": "downsampling" if reshaping else "same-shape", "replacement": kind,
                         "recalibrated": recalibrate, "test_acc": intact, "lesioned_acc": acc, "drop": intact - acc,
                         "changed": float((pred != intact_pred).float().mean())})
    return rows


def lesion_run(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
               device: str | torch.device | None = None, recalibrate: bool = False):
    """Lesion every trial of a study run's final stage (confirm, else grid) that saved weights.pt (`recalibrate`:
    see lesion_trial).

    Returns a pandas DataFrame with RUN_COLUMNS, trials ordered by arm, seed and trial id.
    """
    import pandas as pd

    from ablate.run_folder import check_trial_records, read_registry_lines

    run_dir = Path(run_dir)
    if not (run_dir / REGISTRY).is_file():
        raise AblateError(f"no {REGISTRY} in {run_dir}; pass a study run folder (made by 'study')")
    lines = read_registry_lines(run_dir)
    line_of = {id(row): number for number, row in lines}
    rows = [row for _, row in lines]
    stages = {r["stage"] for r in rows}
    final = next((s for s in ("confirm", "grid") if s in stages), None)
    if final is None:
        raise AblateError(f"{run_dir} has no confirm or grid trials yet; finish the study (study --resume {run_dir})")
    trials = sorted((r for r in rows if r["stage"] == final),
                    key=lambda r: (str(r.get("arm")), r.get("seed") or 0, r["trial_id"]))
    out, marked = [], False
    for row in trials:
        folder = trial_dir(run_dir, row["trial_id"])
        if not has_weights(folder):
            continue
        # the weights and config read here are those the trial left (their hashes in its registry row)
        check_trial_records(run_dir, line_of[id(row)], row, (CONFIG, WEIGHTS))
        cfg = read_config(folder)
        lesions = lesion_trial(folder, data_dir, device=device, recalibrate=recalibrate)
        marked |= len(lesions) > 1
        for lesion in lesions:
            # a user model's `residual` is its factory's setting (absent where the factory has none)
            out.append({"trial_id": row["trial_id"], "arm": row.get("arm"), "seed": row.get("seed"),
                        "residual": cfg.settings().get("residual"), **lesion})
    if not out:
        raise AblateError(f"no {final} trial in {run_dir} has weights.pt (the spec keeps none unless it says "
                          "`keep_weights: final`); add that line to the spec and run the study again")
    if not marked:
        raise AblateError(f"no lesions in {run_dir}: {NO_MARKED_BLOCKS}")
    return pd.DataFrame(out, columns=list(RUN_COLUMNS))
