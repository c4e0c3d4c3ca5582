"""Datasets as small, preprocessed tensor splits: seeded train/dev/test subsets held in memory.

The readers of each file format live in `ablate.data.readers` (a user's data loader in `ablate.data.user_data`);
this module draws the subsets, resizes them and
scales them: greyscale images to [-1, 1], colour images per channel by the training subset's mean and standard
deviation (recorded in every trial's metrics.json).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ablate.data import readers as D
from ablate.data.registry import FOLDER, canonical_dataset, check_dataset, is_user_data
from ablate.errors import AblateError

DATA_DIR_ENV = "ABLATE_DATA_DIR"


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # float32 (N, C, S, S), contiguous: greyscale in [-1, 1], colour normalised per channel
    y: torch.Tensor  # int64 (N,)


@dataclass(frozen=True)
class Splits:
    train: Split
    dev: Split
    test: Split
    dataset: str  # the dataset actually used: "mnist" or "digits" for auto, folder:ABSOLUTE_PATH for a folder, a
    # data loader's reference as given
    num_classes: int
    in_channels: int
    note: str | None  # a warning for the caller to print, e.g. that auto fell back to digits
    # x = (pixel / max_value - mean) / std per channel: 0.5 and 0.5 (the [-1, 1] scaling) for greyscale images,
    # the training subset's statistics for colour ones. A black pixel maps to -mean / std.
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The explicit argument, else $ABLATE_DATA_DIR, else ~/.cache/ablate (absolute, ~ expanded)."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or Path.home() / ".cache" / "ablate"
    elif not isinstance(data_dir, (str, os.PathLike)) or str(data_dir) == "":
        raise AblateError(f"data_dir must be a non-empty path, got {data_dir!r}; pass a folder such as ./data")
    path = Path(data_dir).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise AblateError(f"data dir {path} is a file, not a folder; pass a folder via --data-dir or {DATA_DIR_ENV}")
    return path


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise AblateError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _unit(images: torch.Tensor | list[torch.Tensor], max_value: float, image_size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) images (or a list of (C, H, W) of differing sizes) as float32 in [0, 1], resized to
    image_size x image_size by antialiased bilinear interpolation where their size differs."""
    if isinstance(images, list):
        out = torch.empty(len(images), images[0].shape[0], image_size, image_size) if images else torch.empty(0)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            by_shape.setdefault(tuple(im.shape), []).append(i)
        for positions in by_shape.values():
            out[positions] = _unit(torch.stack([images[i] for i in positions]), max_value, image_size)
        return out
    x = images.to(torch.float32).div_(max_value)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0, 1)


def load_splits(
    dataset: str = "auto",
    data_dir: str | os.PathLike | None = None,
    train_size: int = 1000,
    dev_size: int = 200,
    test_size: int = 200,
    seed: int = 0,
    image_size: int = 32,
    download: bool = True,
    data_file: str = "",
    data_sha256: str = "",
) -> Splits:
    """Seeded train/dev subsets (disjoint, from the training split) and a test subset (from the test split),
    resized to image_size; greyscale scaled to [-1, 1], colour normalised per channel by the training subset's
    statistics. `download=False` never touches the network. A data loader's reference (`dataset` MODULE:FUNCTION or
    FILE.py:FUNCTION) is imported from `data_file`, which must hash to `data_sha256` (a trial config's fields)."""
    check_dataset(dataset)
    for name, value in (("train_size", train_size), ("dev_size", dev_size), ("test_size", test_size)):
        _check_int(name, value, 1)
    _check_int("image_size", image_size, 8)
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**64:
        raise AblateError(f"seed must be an integer in [-2**63, 2**64), got {seed!r}")

    note = None
    used = dataset
    if is_user_data(dataset):
        from ablate.data.user_data import read_user

        if not (data_file and data_sha256):
            raise AblateError(f"dataset {dataset} is a data loader: its source file and SHA-256 are needed to load it")
        raw = read_user(dataset, data_file, data_sha256)
    elif dataset.startswith(FOLDER):
        used = canonical_dataset(dataset)  # absolute: the name means the same images from any folder
        raw = D.read(used, Path(), bool(download))
    elif dataset == "auto":
        root = resolve_data_dir(data_dir)
        try:
            raw, used = D.read("mnist", root, bool(download)), "mnist"
        except D.Unavailable as e:
            mnist = D.SOURCES["mnist"]
            note = (f"MNIST not available under {root} ({e.reason}); using scikit-learn's 8x8 digits instead. For "
                    f"MNIST put {', '.join(mnist.files)} in {root / mnist.folder}, or point --data-dir or "
                    f"${DATA_DIR_ENV} at a folder holding {mnist.folder}/")
            raw, used = D.read_digits(), "digits"
    else:
        raw = D.read(dataset, Path() if dataset == "digits" else resolve_data_dir(data_dir), bool(download))

    n_train, n_test = len(raw.train_y), len(raw.test_y)
    if train_size + dev_size > n_train:
        raise AblateError(
            f"train_size + dev_size = {train_size} + {dev_size} = {train_size + dev_size} exceeds the {n_train} "
            f"training images of {used}; lower them"
        )
    if test_size > n_test:
        raise AblateError(f"test_size = {test_size} exceeds the {n_test} test images of {used}; lower it")

    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_train, generator=gen)
    train_idx, dev_idx = perm[:train_size], perm[train_size: train_size + dev_size]
    test_idx = torch.randperm(n_test, generator=gen)[:test_size]

    def unit(x: torch.Tensor | list[torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        picked = [x[i] for i in idx.tolist()] if isinstance(x, list) else x[idx]
        return _unit(picked, raw.max_value, image_size)

    train, dev, test = unit(raw.train_x, train_idx), unit(raw.train_x, dev_idx), unit(raw.test_x, test_idx)
    if raw.in_channels == 1:
        mean, std = (0.5,), (0.5,)
        for x in (train, dev, test):
            x.mul_(2).sub_(1)
    else:
        # Statistics of the training subset only (dev and test are scored as unseen data), in float64.
        mean_t = train.double().mean(dim=(0, 2, 3))
        std_t = train.double().std(dim=(0, 2, 3), unbiased=False)
        std_t = torch.where(std_t > 0, std_t, torch.ones_like(std_t))  # a constant channel is only centred
        mean, std = tuple(mean_t.tolist()), tuple(std_t.tolist())
        m, s = mean_t.float().view(1, -1, 1, 1), std_t.float().view(1, -1, 1, 1)
        for x in (train, dev, test):
            x.sub_(m).div_(s)

    return Splits(
        train=Split(train.contiguous(), raw.train_y[train_idx].clone()),
        dev=Split(dev.contiguous(), raw.train_y[dev_idx].clone()),
        test=Split(test.contiguous(), raw.test_y[test_idx].clone()),
        dataset=used,
        num_classes=raw.num_classes,
        in_channels=raw.in_channels,
        note=note,
        mean=mean,
        std=std,
    )
