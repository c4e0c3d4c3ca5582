"""Readers of the datasets ablate trains on, one per file format, each checking its files before trusting them.

- IDX (MNIST, Fashion-MNIST, Kuzushiji-MNIST): `ROOT/<torchvision folder>/raw/*-ubyte`, as torchvision lays them out.
- CIFAR's pickled batches: `ROOT/cifar-10-batches-py/data_batch_1..5, test_batch` and
  `ROOT/cifar-100-python/train, test`; read with an unpickler that builds nothing but numpy arrays.
- Image folders (`folder:PATH`): `PATH/train/<class>/*.png|jpg|jpeg` and `PATH/test/<class>/...`.
- scikit-learn's 8x8 digits (bundled, offline).

Missing files are downloaded into the data root through torchvision when the network allows; a file that is
there but truncated or corrupt is refused with one line naming it, never silently replaced.
"""
from __future__ import annotations

import functools
import math
import os
import pickle
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from ablate.errors import AblateError
from ablate.data.registry import FOLDER, folder_path


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
OFFLINE_ENV = "ABLATE_OFFLINE"
_PROBE_TIMEOUT_S = 3.0
# Constant, so the digits test part is the same for every seed and never leaks into train/dev.
_DIGITS_PARTITION_SEED = 20240601
_DIGITS_TEST_SIZE = 360


@dataclass(frozen=True)
class Raw:
    """A dataset's full train and test parts as read from disk, before subsets are drawn."""

    train_x: torch.Tensor | list[torch.Tensor]  # uint8 (N, C, H, W), or a list of (C, H, W) of differing sizes
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor | list[torch.Tensor]
    test_y: torch.Tensor
    max_value: float  # pixel value that maps to 1.0
    num_classes: int
    in_channels: int


class Unavailable(AblateError):
    """A dataset's files are absent and cannot be fetched; `auto` falls back on this, but not on corrupt files."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def first_line(e: BaseException) -> str:
    """Messages are shown on one line; torchvision's download errors span several."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


# --- what each downloadable dataset needs on disk ------------------------------------------------
@dataclass(frozen=True)
class Source:
    name: str  # ablate's name
    title: str  # in messages
    torchvision: str  # torchvision.datasets class that downloads it
    folder: str  # under the data root, where the files live
    files: tuple[str, ...]  # needed in `folder`
    archives: tuple[str, ...]  # under the data root: torchvision unpacks these without the network

    def urls(self) -> list[str]:
        import torchvision

        cls = getattr(torchvision.datasets, self.torchvision)
        return list(getattr(cls, "mirrors", None) or [cls.url])


_IDX = {"train-images-idx3-ubyte": 3, "train-labels-idx1-ubyte": 1, "t10k-images-idx3-ubyte": 3,
        "t10k-labels-idx1-ubyte": 1}  # file name -> number of IDX dimensions
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def _idx_source(name: str, title: str, cls: str) -> Source:
    return Source(name, title, cls, f"{cls}/raw", tuple(_IDX), tuple(f"{cls}/raw/{f}.gz" for f in _IDX))


SOURCES = {
    "mnist": _idx_source("mnist", "MNIST", "MNIST"),
    "fashion-mnist": _idx_source("fashion-mnist", "Fashion-MNIST", "FashionMNIST"),
    "kmnist": _idx_source("kmnist", "Kuzushiji-MNIST", "KMNIST"),
    "cifar10": Source("cifar10", "CIFAR-10", "CIFAR10", "cifar-10-batches-py", (*_CIFAR10_TRAIN, "test_batch"),
                      ("cifar-10-python.tar.gz",)),
    "cifar100": Source("cifar100", "CIFAR-100", "CIFAR100", "cifar-100-python", ("train", "test"),
                       ("cifar-100-python.tar.gz",)),
}


def _hosts(urls: list[str]) -> tuple[tuple[str, int], ...]:
    parsed = map(urlparse, urls)
    return tuple((u.hostname, u.port or (443 if u.scheme == "https" else 80)) for u in parsed)


@functools.lru_cache(maxsize=8)
def network_reachable(hosts: tuple[tuple[str, int], ...]) -> bool:
    """Whether any download host accepts a connection. Offline, torchvision's own attempt can hang on DNS for a
    long time, so the probe runs in a daemon thread whose wait is bounded whatever the resolver does.
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


def ensure(source: Source, root: Path, download: bool) -> None:
    """Make `source`'s files exist under root, downloading only when that can succeed; else one line naming
    the files needed and where they go."""
    import torchvision

    where = root / source.folder
    missing = [name for name in source.files if not (where / name).is_file()]
    if not missing:
        return
    reason = f"{missing[0]} missing"
    if download:
        local = all((root / a).is_file() for a in source.archives)
        if local or network_reachable(_hosts(source.urls())):
            try:
                getattr(torchvision.datasets, source.torchvision)(root=str(root), train=True, download=True)
                return
            # Any failure here (URLError, md5 RuntimeError, bad archive, full disk...) just means "not downloadable".
            except Exception as e:  # noqa: BLE001
                reason += f"; download failed: {first_line(e)}"
        else:
            reason += "; no network to download it"
    files = ", ".join(source.files)
    archive = f" (unpacked from {source.archives[0]}, which may also be put in {root})" if len(source.archives) == 1 else ""
    fallback = ", or use --dataset digits" if source.name == "mnist" else ""
    raise Unavailable(
        f"{source.title} was not found under {root} and could not be downloaded ({reason}); put {files}{archive} in "
        f"{where}, or point --data-dir or $ABLATE_DATA_DIR at a folder holding {source.folder}{fallback}",
        reason,
    )


# --- IDX (the MNIST family) ----------------------------------------------------------------------
def check_idx(path: Path, ndim: int, title: str = "MNIST", folder: str = "MNIST/raw") -> int:
    """Validate an IDX file's magic and length without reading it; torchvision's own checks are asserts and
    reshape errors that name no file. Returns the item count."""
    fix = f"delete it (or its {folder} folder) and re-download" + (", or use --dataset digits" if title == "MNIST" else "")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4 + 4 * ndim)
    except OSError as e:
        raise AblateError(f"cannot read {title} file {path} ({e.strerror or e}); check its permissions") from None
    if len(head) < 4 + 4 * ndim:
        raise AblateError(f"{title} file {path} is truncated ({size} bytes, shorter than its header); {fix}")
    magic = int.from_bytes(head[:4], "big")
    if magic != 0x800 + ndim:
        raise AblateError(f"{title} file {path} has bad magic 0x{magic:08x} (expected 0x{0x800 + ndim:08x}); {fix}")
    dims = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = len(head) + math.prod(dims)
    if size != expected:
        raise AblateError(f"{title} file {path} is truncated or corrupt ({size} bytes, header says {expected}); {fix}")
    return dims[0]


@functools.lru_cache(maxsize=4)
def read_idx(source: Source, root: Path) -> Raw:
    import torchvision

    raw = root / source.folder
    counts = {name: check_idx(raw / name, ndim, source.title, source.folder) for name, ndim in _IDX.items()}
    for part in ("train", "t10k"):
        n_img, n_lab = counts[f"{part}-images-idx3-ubyte"], counts[f"{part}-labels-idx1-ubyte"]
        if n_img != n_lab:
            raise AblateError(f"{source.title} {part} files in {raw} disagree ({n_img} images, {n_lab} labels); "
                              "re-download them")
    cls = getattr(torchvision.datasets, source.torchvision)
    try:
        train = cls(root=str(root), train=True, download=False)
        test = cls(root=str(root), train=False, download=False)
    except (RuntimeError, AssertionError, ValueError, TypeError, OSError, IndexError) as e:
        raise AblateError(f"{source.title} files in {raw} could not be read ({first_line(e)}); re-download them") from None
    for name, y in (("train", train.targets), ("test", test.targets)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > 9):
            raise AblateError(f"{source.title} {name} labels in {raw} fall outside 0..9; the label file is corrupt, "
                              "re-download it")
    return Raw(train.data.unsqueeze(1), train.targets.long(), test.data.unsqueeze(1), test.targets.long(), 255.0, 10, 1)


# --- CIFAR's pickled batches -------------------------------------------------------------------
def _numpy_reconstruct():
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core; the CIFAR files name the old one
    return core.multiarray._reconstruct


_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: __import__("codecs").encode,  # bytes as pickled by Python 3 at protocol 2
}


class _ArrayUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numpy arrays only: a crafted batch file cannot run code."""

    def find_class(self, module: str, name: str):
        make = _PICKLE_GLOBALS.get((module, name))
        if make is None:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds")
        return make()


def _read_batch(path: Path, label_key: str, num_classes: int, title: str) -> tuple[torch.Tensor, torch.Tensor]:
    fix = f"delete it and re-download {title}"
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="latin1").load()
    except OSError as e:
        raise AblateError(f"cannot read {title} file {path} ({e.strerror or e}); check its permissions") from None
    except Exception as e:  # noqa: BLE001  truncated or garbled pickles raise a zoo of types
        raise AblateError(f"{title} file {path} is truncated or corrupt ({first_line(e)}); {fix}") from None
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get(label_key) if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise AblateError(f"{title} file {path} holds no (N, 3072) uint8 'data' array; it is corrupt or not a "
                          f"{title} batch, {fix}")
    try:
        y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    except (TypeError, ValueError, OverflowError):
        y = None
    if y is None or y.shape != (len(data),):
        raise AblateError(f"{title} file {path} lacks one '{label_key}' entry per image; it is corrupt, {fix}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise AblateError(f"{title} labels in {path} fall outside 0..{num_classes - 1}; the file is corrupt, {fix}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), y


@functools.lru_cache(maxsize=2)
def read_cifar(source: Source, root: Path) -> Raw:
    folder = root / source.folder
    classes, key = (10, "labels") if source.name == "cifar10" else (100, "fine_labels")
    parts = [_read_batch(folder / name, key, classes, source.title) for name in source.files]
    *train, test = parts
    return Raw(torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), test[0], test[1], 255.0,
               classes, 3)


def expected_shape(name: str) -> tuple[int, int]:
    """(input channels, classes) a dataset gives the model, known without reading it: for a folder, its class
    folders counted and 3 channels assumed (the larger, RGB case) when it cannot be seen without decoding."""
    if name in ("cifar10", "cifar100"):
        return 3, 10 if name == "cifar10" else 100
    if name.startswith(FOLDER):
        train = folder_path(name) / "train"
        classes = sum(1 for c in train.iterdir() if c.is_dir() and not c.name.startswith(".")) if train.is_dir() else 0
        return 3, max(classes, 2)
    return 1, 10


def _images_in(part: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in part.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {c.name: sorted(f for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
            for c in classes}


def _decode(path: Path) -> tuple[bool, torch.Tensor]:
    """(whether the image is greyscale, its pixels as uint8 (3, H, W) RGB)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            grey = img.mode in ("1", "L", "LA")
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise AblateError(f"image {path} could not be read ({first_line(e)}); it is truncated or corrupt: replace or "
                          "delete it") from None
    return grey, torch.from_numpy(array.copy()).permute(2, 0, 1)


@functools.lru_cache(maxsize=2)
def read_folder(path: Path) -> Raw:
    """Classes are train's subfolders in sorted order; greyscale when every image is, else RGB."""
    layout = f"expected {path}/train/<class>/*.png|jpg and {path}/test/<class>/*.png|jpg"
    for part in ("train", "test"):
        if not (path / part).is_dir():
            raise AblateError(f"image folder {path} has no {part}/ folder; {layout}")
    train, test = _images_in(path / "train"), _images_in(path / "test")
    if len(train) < 2:
        raise AblateError(f"{path}/train holds {len(train)} class folder(s); a classifier needs at least 2 ({layout})")
    empty = [c for c, files in train.items() if not files]
    if empty:
        raise AblateError(f"{path}/train/{empty[0]} holds no .png/.jpg/.jpeg images; add some or remove the folder")
    unknown = sorted(set(test) - set(train))
    if unknown:
        raise AblateError(f"{path}/test/{unknown[0]} is a class with no training images (train has "
                          f"{', '.join(train)}); rename or remove it")
    index = {c: i for i, c in enumerate(train)}
    items = {part: [(f, index[c]) for c, files in found.items() for f in files] for part, found in
             (("train", train), ("test", test))}
    if not items["test"]:
        raise AblateError(f"{path}/test holds no .png/.jpg/.jpeg images; {layout}")
    decoded = {part: [_decode(f) for f, _ in pairs] for part, pairs in items.items()}
    colour = not all(grey for part in decoded.values() for grey, _ in part)
    # A greyscale image converted to RGB holds its grey value in every channel: keep one.
    pixels = {part: [(im if colour else im[:1]).contiguous() for _, im in images] for part, images in decoded.items()}
    labels = {part: torch.tensor([c for _, c in pairs], dtype=torch.int64) for part, pairs in items.items()}

    def stack(images: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        return torch.stack(images) if len({im.shape for im in images}) == 1 else images

    return Raw(stack(pixels["train"]), labels["train"], stack(pixels["test"]), labels["test"], 255.0, len(train),
               3 if colour else 1)


# --- scikit-learn's digits ---------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def read_digits() -> Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).to(torch.uint8).unsqueeze(1)  # integer values 0..16
    y = torch.from_numpy(bunch.target).long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_DIGITS_PARTITION_SEED))
    test, train = perm[:_DIGITS_TEST_SIZE], perm[_DIGITS_TEST_SIZE:]
    return Raw(x[train], y[train], x[test], y[test], 16.0, 10, 1)


def read(name: str, root: Path, download: bool) -> Raw:
    """A named dataset from the data root (downloaded when missing and possible), or a folder of images."""
    if name == "digits":
        return read_digits()
    if name.startswith(FOLDER):
        path = folder_path(name)
        if not path.is_dir():
            raise AblateError(f"image folder {path} not found; pass folder:PATH with PATH holding train/<class>/ and "
                              "test/<class>/ folders of .png/.jpg images")
        return read_folder(path)
    source = SOURCES[name]
    ensure(source, root, download)
    return read_cifar(source, root) if name.startswith("cifar") else read_idx(source, root)
