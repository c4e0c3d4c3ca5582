"""Digit datasets as small, preprocessed tensor splits: real MNIST, or scikit-learn's 8x8 digits offline."""

from __future__ import annotations

import functools
import math
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F

from ablate.errors import AblateError

DATASETS = ("auto", "mnist", "digits")
DATA_DIR_ENV = "ABLATE_DATA_DIR"
OFFLINE_ENV = "ABLATE_OFFLINE"

_MNIST_FILES = {  # file name -> number of IDX dimensions
    "train-images-idx3-ubyte": 3,
    "train-labels-idx1-ubyte": 1,
    "t10k-images-idx3-ubyte": 3,
    "t10k-labels-idx1-ubyte": 1,
}
# Constant, so the digits test part is the same for every seed and never leaks into train/dev.
_DIGITS_PARTITION_SEED = 20240601
_DIGITS_TEST_SIZE = 360
_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # float32 (N, 1, S, S) in [-1, 1], contiguous
    y: torch.Tensor  # int64 (N,)


@dataclass(frozen=True)
class Splits:
    train: Split
    dev: Split
    test: Split
    dataset: str  # the dataset actually used: "mnist" or "digits"
    num_classes: int
    in_channels: int
    note: str | None  # a warning for the caller to print, e.g. that auto fell back to digits


@dataclass(frozen=True)
class _Raw:
    train_x: torch.Tensor  # uint8 (N, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    max_value: float  # pixel value that maps to 1.0


class _MnistUnavailable(AblateError):
    """MNIST is absent and cannot be fetched; `auto` falls back on this, but not on corrupt files."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


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


def _check_idx(path: Path, ndim: int) -> int:
    """Validate an IDX file's magic and length without reading it; torchvision's own checks are asserts
    and reshape errors that name no file. Returns the item count."""
    fix = "delete it (or its MNIST/raw folder) and re-download, or use --dataset digits"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4 + 4 * ndim)
    except OSError as e:
        raise AblateError(f"cannot read MNIST file {path} ({e.strerror or e}); check its permissions") from None
    if len(head) < 4 + 4 * ndim:
        raise AblateError(f"MNIST file {path} is truncated ({size} bytes, shorter than its header); {fix}")
    magic = int.from_bytes(head[:4], "big")
    if magic != 0x800 + ndim:
        raise AblateError(f"MNIST file {path} has bad magic 0x{magic:08x} (expected 0x{0x800 + ndim:08x}); {fix}")
    dims = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = len(head) + math.prod(dims)
    if size != expected:
        raise AblateError(f"MNIST file {path} is truncated or corrupt ({size} bytes, header says {expected}); {fix}")
    return dims[0]


def _first_line(e: BaseException) -> str:
    """Messages are shown on one line; torchvision's download errors span several."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _mirror_hosts() -> tuple[tuple[str, int], ...]:
    import torchvision

    urls = map(urlparse, torchvision.datasets.MNIST.mirrors)
    return tuple((u.hostname, u.port or (443 if u.scheme == "https" else 80)) for u in urls)


@functools.lru_cache(maxsize=1)
def _network_reachable(hosts: tuple[tuple[str, int], ...]) -> bool:
    """Whether any download mirror accepts a connection. Offline, torchvision's own attempt can hang on DNS
    for a long time, so the probe runs in a daemon thread whose wait is bounded whatever the resolver does.
    $ABLATE_OFFLINE=1 says no without asking (the tests set it: they never download)."""
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        return False
    found: list[bool] = []

    def probe() -> None:
        for host, port in hosts:
            try:
                socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
                found.append(True)
                return
            except OSError:
                continue

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(_PROBE_TIMEOUT_S * len(hosts) + 1)
    return bool(found)


def _ensure_mnist(root: Path, download: bool) -> None:
    """Make the four raw IDX files exist under root/MNIST/raw, downloading only when that can succeed."""
    import torchvision

    raw = root / "MNIST" / "raw"
    missing = [name for name in _MNIST_FILES if not (raw / name).is_file()]
    if not missing:
        return
    reason = f"{missing[0]} missing"
    if download:
        local_archives = all((raw / f"{name}.gz").is_file() for name in _MNIST_FILES)
        if local_archives or _network_reachable(_mirror_hosts()):
            try:
                torchvision.datasets.MNIST(root=str(root), train=True, download=True)
                return
            # Any failure here (URLError, md5 RuntimeError, bad gzip, full disk...) just means "not downloadable".
            except Exception as e:  # noqa: BLE001
                reason += f"; download failed: {_first_line(e)}"
        else:
            reason += "; no network to download it"
    raise _MnistUnavailable(
        f"MNIST was not found under {root} and could not be downloaded ({reason}); put the four IDX files in "
        f"{raw}, point --data-dir or {DATA_DIR_ENV} at a folder holding MNIST/raw, or use --dataset digits",
        reason,
    )


@functools.lru_cache(maxsize=4)
def _read_mnist(root: Path) -> _Raw:
    import torchvision

    raw = root / "MNIST" / "raw"
    counts = {name: _check_idx(raw / name, ndim) for name, ndim in _MNIST_FILES.items()}
    for part in ("train", "t10k"):
        n_img, n_lab = counts[f"{part}-images-idx3-ubyte"], counts[f"{part}-labels-idx1-ubyte"]
        if n_img != n_lab:
            raise AblateError(f"MNIST {part} files in {raw} disagree ({n_img} images, {n_lab} labels); re-download")
    try:
        train = torchvision.datasets.MNIST(root=str(root), train=True, download=False)
        test = torchvision.datasets.MNIST(root=str(root), train=False, download=False)
    except (RuntimeError, AssertionError, ValueError, TypeError, OSError, IndexError) as e:
        raise AblateError(f"MNIST files in {raw} could not be read ({_first_line(e)}); re-download them") from None
    for name, y in (("train", train.targets), ("test", test.targets)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > 9):
            raise AblateError(f"MNIST {name} labels in {raw} fall outside 0..9; the label file is corrupt, re-download")
    return _Raw(train.data, train.targets.long(), test.data, test.targets.long(), 255.0)


@functools.lru_cache(maxsize=1)
def _load_digits() -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).to(torch.uint8)  # integer values 0..16
    y = torch.from_numpy(bunch.target).long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_DIGITS_PARTITION_SEED))
    test, train = perm[:_DIGITS_TEST_SIZE], perm[_DIGITS_TEST_SIZE:]
    return _Raw(x[train], y[train], x[test], y[test], 16.0)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise AblateError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _preprocess(images: torch.Tensor, max_value: float, image_size: int) -> torch.Tensor:
    x = images.to(torch.float32).div_(max_value).unsqueeze(1)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return x.mul_(2).sub_(1).clamp_(-1, 1).contiguous()


def load_splits(
    dataset: str = "auto",
    data_dir: str | os.PathLike | None = None,
    train_size: int = 1000,
    dev_size: int = 200,
    test_size: int = 200,
    seed: int = 0,
    image_size: int = 32,
    download: bool = True,
) -> Splits:
    """Seeded train/dev subsets (disjoint, from the training split) and a test subset (from the test split),
    resized to image_size and scaled to [-1, 1]. `download=False` never touches the network."""
    if not isinstance(dataset, str) or dataset not in DATASETS:
        raise AblateError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    for name, value in (("train_size", train_size), ("dev_size", dev_size), ("test_size", test_size)):
        _check_int(name, value, 1)
    _check_int("image_size", image_size, 8)
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**64:
        raise AblateError(f"seed must be an integer in [-2**63, 2**64), got {seed!r}")

    note = None
    if dataset == "digits":
        raw, used = _load_digits(), "digits"
    else:
        root = resolve_data_dir(data_dir)
        try:
            _ensure_mnist(root, bool(download))
            raw, used = _read_mnist(root), "mnist"
        except _MnistUnavailable as e:
            if dataset == "mnist":
                raise
            note = f"MNIST not available under {root} ({e.reason}); using scikit-learn's 8x8 digits instead"
            raw, used = _load_digits(), "digits"

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

    def take(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> Split:
        return Split(_preprocess(x[idx], raw.max_value, image_size), y[idx].clone())

    return Splits(
        train=take(raw.train_x, raw.train_y, train_idx),
        dev=take(raw.train_x, raw.train_y, dev_idx),
        test=take(raw.test_x, raw.test_y, test_idx),
        dataset=used,
        num_classes=10,
        in_channels=1,
        note=note,
    )
