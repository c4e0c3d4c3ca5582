"""Readers of the datasets ablate trains on, one per file format, each checking its files before trusting them.

- IDX (MNIST, Fashion-MNIST, Kuzushiji-MNIST): `ROOT/<torchvision folder>/raw/*-ubyte`, as torchvision lays them out.
- CIFAR's pickled batches: `ROOT/cifar-10-batches-py/data_batch_1..5, test_batch` and
  `ROOT/cifar-100-python/train, test`; read with an unpickler that builds nothing but numpy arrays.
- Image folders (`folder:PATH`): `PATH/train/<class>/*.png|jpg|jpeg` and `PATH/test/<class>/...`.
- scikit-learn's 8x8 digits (bundled, offline).

Missing files are downloaded into the data root through torchvision when the network allows; a file that is
there but truncated or corrupt is refused with one line naming it, never silently replaced. What a file declares
(its images' size, how many it holds) is checked against what the dataset is (ablate.data.registry) before the
payload is read, so a crafted or foreign file cannot make a reader allocate more than the real dataset needs.
"""
from __future__ import annotations

import functools
import math
import os
import pickle
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from ablate.errors import AblateError
from ablate.data.registry import FOLDER, REGISTRY, folder_path, info, is_user_data


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
OFFLINE_ENV = "ABLATE_OFFLINE"
_PROBE_TIMEOUT_S = 3.0
# Constant, so the digits test part is the same for every seed and never leaks into train/dev.
_DIGITS_PARTITION_SEED = 20240601
_DIGITS_TEST_SIZE = 360


@dataclass(frozen=True)
class Raw:
    """A dataset's full train and test parts as read from disk, before subsets are drawn."""

    # uint8 (N, C, H, W), or a list of (C, H, W) of differing sizes, or IdxImages (read when indexed)
    train_x: "torch.Tensor | list[torch.Tensor] | IdxImages"
    train_y: torch.Tensor  # int64 (N,)
    test_x: "torch.Tensor | list[torch.Tensor] | IdxImages"
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
    most: tuple[int, ...]  # the most images each of `files` may hold: what the real file holds

    def urls(self) -> list[str]:
        import torchvision

        cls = getattr(torchvision.datasets, self.torchvision)
        return list(getattr(cls, "mirrors", None) or [cls.url])


_IDX = {"train-images-idx3-ubyte": 3, "train-labels-idx1-ubyte": 1, "t10k-images-idx3-ubyte": 3,
        "t10k-labels-idx1-ubyte": 1}  # file name -> number of IDX dimensions
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def _source(name: str, cls: str, folder: str, train: tuple[str, ...], test: tuple[str, ...],
            archives: tuple[str, ...]) -> Source:
    """The files of a dataset, train files first; the registry's split sizes bound what each may hold (the
    training split spread evenly over its files)."""
    d = REGISTRY[name]
    most = tuple(d.train_images // len(train) for _ in train) + tuple(d.test_images for _ in test)
    return Source(name, d.title, cls, folder, (*train, *test), archives, most)


def _idx_source(name: str, cls: str) -> Source:
    d = REGISTRY[name]  # each split is an image file and a label file of as many items
    most = tuple(d.test_images if f.startswith("t10k") else d.train_images for f in _IDX)
    return Source(name, d.title, cls, f"{cls}/raw", tuple(_IDX), tuple(f"{cls}/raw/{f}.gz" for f in _IDX), most)


SOURCES = {
    "mnist": _idx_source("mnist", "MNIST"),
    "fashion-mnist": _idx_source("fashion-mnist", "FashionMNIST"),
    "kmnist": _idx_source("kmnist", "KMNIST"),
    "cifar10": _source("cifar10", "CIFAR10", "cifar-10-batches-py", _CIFAR10_TRAIN, ("test_batch",),
                       ("cifar-10-python.tar.gz",)),
    "cifar100": _source("cifar100", "CIFAR100", "cifar-100-python", ("train",), ("test",), ("cifar-100-python.tar.gz",)),
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
    the files needed and where they go. torchvision is imported only to download: a trial that reads files
    already there never loads it (about 170 MB of a worker's memory with torch's CUDA build)."""
    where = root / source.folder
    missing = [name for name in source.files if not (where / name).is_file()]
    if not missing:
        return
    reason = f"{missing[0]} missing"
    if download:
        local = all((root / a).is_file() for a in source.archives)
        if local or network_reachable(_hosts(source.urls())):
            import torchvision

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
def check_idx(path: Path, ndim: int, title: str = "MNIST", folder: str = "MNIST/raw", *,
              image_size: int | None = None, most: int | None = None) -> int:
    """Validate an IDX file's magic, dimensions and length from its header, without reading the payload;
    torchvision's own checks are asserts and reshape errors that name no file. An image file's images must be
    image_size x image_size (where given) and a file may hold at most `most` items (where given): a header
    that says 14x56 with the right byte count is another dataset's file, not one to train on. Returns the item
    count."""
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
    if image_size is not None and ndim == 3 and dims[1:] != [image_size, image_size]:
        raise AblateError(f"{title} file {path} holds {dims[1]}×{dims[2]} images, but {title} images are "
                          f"{image_size}×{image_size}; it is corrupt or another dataset's file, {fix}")
    if most is not None and dims[0] > most:
        raise AblateError(f"{title} file {path} declares {dims[0]:,} items, more than the {most:,} the real file "
                          f"holds; it is corrupt, {fix}")
    expected = len(head) + math.prod(dims)
    if size != expected:
        raise AblateError(f"{title} file {path} is truncated or corrupt ({size} bytes, header says {expected}); {fix}")
    return dims[0]


class IdxImages:
    """The images of an IDX image file whose header check_idx checked, read from the file when indexed: drawing a
    subset reads the images it draws and no others. What read_idx's cache keeps between the trials of a reused
    worker is then the labels and this, not the dataset (MNIST's 47 MB of training images in every trial
    process). Indexed by a tensor or list of image numbers, it gives their uint8 (n, 1, size, size) images in
    that order."""

    dtype = torch.uint8

    def __init__(self, path: Path, count: int, size: int, title: str, folder: str) -> None:
        self.path, self.count, self.size, self.title, self.folder = path, count, size, title, folder

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.count, 1, self.size, self.size)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index) -> torch.Tensor:
        rows = torch.as_tensor(index, dtype=torch.int64).reshape(-1).tolist()
        if any(not 0 <= r < self.count for r in rows):
            raise IndexError(f"image numbers must lie in 0..{self.count - 1}")
        n, header = self.size * self.size, 4 + 4 * 3  # the magic number and three dimensions
        out = np.empty((len(rows), n), dtype=np.uint8)
        try:
            with open(self.path, "rb") as f:
                for i, r in sorted(enumerate(rows), key=lambda pair: pair[1]):  # in file order
                    chunk = os.pread(f.fileno(), n, header + r * n)
                    if len(chunk) != n:
                        raise ValueError(f"image {r} ends past the file's end")
                    out[i] = np.frombuffer(chunk, dtype=np.uint8)
        except (OSError, ValueError) as e:
            raise AblateError(f"{self.title} file {self.path} could not be read ({first_line(e)}); it changed since it "
                              f"was checked: delete it (or its {self.folder} folder) and re-download") from None
        return torch.from_numpy(out).view(len(rows), 1, self.size, self.size)


@functools.lru_cache(maxsize=4)
def read_idx(source: Source, root: Path) -> Raw:
    """The four IDX files of an MNIST-like dataset (checked by check_idx first): the labels read straight into
    arrays, the images as IdxImages, read when a subset is drawn."""
    raw = root / source.folder
    size, classes = REGISTRY[source.name].image_size, REGISTRY[source.name].classes
    counts = {name: check_idx(raw / name, ndim, source.title, source.folder, image_size=size, most=most)
              for (name, ndim), most in zip(_IDX.items(), source.most)}
    for part in ("train", "t10k"):
        n_img, n_lab = counts[f"{part}-images-idx3-ubyte"], counts[f"{part}-labels-idx1-ubyte"]
        if n_img != n_lab:
            raise AblateError(f"{source.title} {part} files in {raw} disagree ({n_img} images, {n_lab} labels); "
                              "re-download them")
    try:
        labels = {part: _idx_payload(raw / f"{part}-labels-idx1-ubyte", 1).long() for part in ("train", "t10k")}
    except (OSError, ValueError) as e:
        raise AblateError(f"{source.title} files in {raw} could not be read ({first_line(e)}); re-download them") from None
    y_train, y_test = labels["train"], labels["t10k"]
    for name, y in (("train", y_train), ("test", y_test)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > classes - 1):
            raise AblateError(f"{source.title} {name} labels in {raw} fall outside 0..{classes - 1}; the label file is "
                              "corrupt, re-download it")
    images = {part: IdxImages(raw / f"{part}-images-idx3-ubyte", counts[f"{part}-images-idx3-ubyte"], size,
                              source.title, source.folder) for part in ("train", "t10k")}
    return Raw(images["train"], y_train, images["t10k"], y_test, 255.0, classes, 1)


def _idx_payload(path: Path, ndim: int) -> torch.Tensor:
    """An IDX file of unsigned bytes (its header already checked) as a uint8 tensor of the header's shape."""
    with open(path, "rb") as f:
        head = f.read(4 + 4 * ndim)
        dims = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        data = np.fromfile(f, dtype=np.uint8)  # from the header's end, into a writable array
    return torch.from_numpy(data.reshape(dims))


# --- CIFAR's pickled batches -------------------------------------------------------------------
def _numpy_reconstruct():
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core; the CIFAR files name the old one
    return core.multiarray._reconstruct


class _Oversized(Exception):
    """What a batch file asks to be built exceeds what it could hold."""


class _NdarrayName:
    """Stands for numpy.ndarray in a batch file: the argument of _reconstruct, never called itself (calling
    numpy.ndarray(shape) would allocate any shape a file names)."""

    def __init__(self, *args, **kwargs):
        raise pickle.UnpicklingError("it calls numpy.ndarray, which a CIFAR batch never does")


class _ArrayUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numpy arrays only: a crafted batch file cannot run code. Nor can it make the
    reader allocate more than the file could hold: every array and byte string it asks for is counted against
    `budget` (the file's size) before it is made, so a 200 KB file declaring 200,000 images is refused unread."""

    def __init__(self, file, budget: int) -> None:
        super().__init__(file, encoding="latin1")
        self.left = budget

    def _spend(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            raise _Oversized(what)
        self.left -= nbytes

    def _reconstruct(self, subtype, shape, dtype):
        # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') and then sets its state from the file's bytes
        # (whose length numpy checks against the shape); a shape here is allocated at once, so it is counted first.
        if subtype is not _NdarrayName:
            raise pickle.UnpicklingError("it reconstructs something other than a numpy array")
        try:
            dims = tuple(int(d) for d in (shape if isinstance(shape, tuple) else (shape,)))
            itemsize = np.dtype(dtype).itemsize
        except (TypeError, ValueError, OverflowError):
            raise pickle.UnpicklingError(f"it declares an array of shape {shape!r} and type {dtype!r}") from None
        if any(d < 0 for d in dims):
            raise pickle.UnpicklingError(f"it declares an array of shape {dims}")
        self._spend(math.prod(dims) * itemsize, f"an array of shape {dims} ({math.prod(dims) * itemsize:,} bytes)")
        return _numpy_reconstruct()(np.ndarray, dims, dtype)

    def _encode(self, text, encoding="utf-8"):
        # Python 3 pickles bytes at protocol 2 as _codecs.encode(str, 'latin1'): one byte per character.
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise pickle.UnpicklingError(f"it encodes {type(text).__name__} as {encoding!r}, which a CIFAR batch never does")
        self._spend(len(text), f"{len(text):,} bytes of text")
        return text.encode("latin1")

    def find_class(self, module: str, name: str):
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
            return self._reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return _NdarrayName
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if (module, name) == ("_codecs", "encode"):
            return self._encode
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds")


def _read_batch(path: Path, label_key: str, num_classes: int, title: str, most: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch: checked against what a CIFAR batch is (uint8 rows of 3072 bytes, at most `most` images,
    one label in 0..num_classes-1 per image) before its images are copied."""
    fix = f"delete it and re-download {title}"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, budget=size).load()
    except OSError as e:
        raise AblateError(f"cannot read {title} file {path} ({e.strerror or e}); check its permissions") from None
    except _Oversized as e:
        raise AblateError(f"{title} file {path} declares {e} in {size:,} bytes of file; it is corrupt or crafted, "
                          f"{fix}") from None
    except Exception as e:  # noqa: BLE001  truncated or garbled pickles raise a zoo of types
        raise AblateError(f"{title} file {path} is truncated or corrupt ({first_line(e)}); {fix}") from None
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get(label_key) if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise AblateError(f"{title} file {path} holds no (N, 3072) uint8 'data' array; it is corrupt or not a "
                          f"{title} batch, {fix}")
    if len(data) > most:
        raise AblateError(f"{title} file {path} declares {len(data):,} images, more than the {most:,} the real file "
                          f"holds; it is corrupt or not a {title} batch, {fix}")
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
    d = REGISTRY[source.name]
    key = "labels" if source.name == "cifar10" else "fine_labels"  # CIFAR-100's batches also hold coarse_labels
    parts = [_read_batch(folder / name, key, d.classes, source.title, most)
             for name, most in zip(source.files, source.most)]
    *train, test = parts
    return Raw(torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), test[0], test[1], 255.0,
               d.classes, d.channels)


def expected_shape(name: str) -> tuple[int, int]:
    """(input channels, classes) a dataset gives the model, known without reading it: a named one's from the
    registry (auto's are MNIST's and digits' alike); for a folder, its class folders counted and 3 channels assumed
    (the larger, RGB case) when it cannot be seen without decoding; for a data loader of the user's, which only its
    call can tell, 3 channels and 10 classes."""
    if is_user_data(name):
        return 3, 10
    if name.startswith(FOLDER):
        train = folder_path(name) / "train"
        classes = sum(1 for c in train.iterdir() if c.is_dir() and not c.name.startswith(".")) if train.is_dir() else 0
        return 3, max(classes, 2)
    d = info(name)
    return (d.channels, d.classes) if d else (1, 10)


def _images_in(part: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in part.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {c.name: sorted(f for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
            for c in classes}


def _decode(path: Path) -> tuple[bool, torch.Tensor]:
    """(whether the image is greyscale, its pixels as uint8 (3, H, W) RGB). An image whose header declares more
    pixels than PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS, 89,478,485: PIL warns above it and refuses
    above twice it) is refused unread, named for what it is."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                grey = img.mode in ("1", "L", "LA")
                array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        declared = f"declares {int(pixels.group(1)):,} pixels" if pixels else "declares too many pixels"
        raise AblateError(f"image {path} {declared}, more than the {Image.MAX_IMAGE_PIXELS:,} ablate decodes (PIL's "
                          "decompression-bomb limit): it is a decompression bomb or far larger than a training image "
                          "needs; shrink or delete it") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise AblateError(f"image {path} could not be read ({first_line(e)}); it is truncated or corrupt: replace or "
                          "delete it") from None
    return grey, torch.from_numpy(array.copy()).permute(2, 0, 1)


def folder_pixels(name: str) -> tuple[int, int]:
    """(pixels of all a folder dataset's train and test images, pixels of its largest image), from each image's
    header (nothing is decoded); (0, 0) where the folder cannot be listed (reading it will say why)."""
    import warnings

    from PIL import Image

    path = folder_path(name)
    total = largest = 0
    for part in ("train", "test"):
        if not (path / part).is_dir():
            return 0, 0
        for files in _images_in(path / part).values():
            for f in files:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                        with Image.open(f) as img:
                            pixels = img.width * img.height
                except Exception:  # noqa: BLE001  a damaged file (or a bomb) is named when the folder is read
                    continue
                total, largest = total + pixels, max(largest, pixels)
    return total, largest


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
def _digits_arrays():
    """scikit-learn's digits as (images (1797, 8, 8), labels): read straight from the CSV file scikit-learn ships,
    the file its load_digits reads, without importing scikit-learn (1-2 CPU-seconds in every trial worker and
    study process); load_digits where that file is not found."""
    import gzip
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    if spec is None:
        raise AblateError("the digits dataset comes with scikit-learn, which is not installed; "
                          "install it with: pip install scikit-learn")
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if csv.is_file():
        with gzip.open(csv, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",")  # 64 pixel columns, then the label
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


@functools.lru_cache(maxsize=1)
def read_digits() -> Raw:
    images, labels = _digits_arrays()
    x = torch.from_numpy(images).to(torch.uint8).unsqueeze(1)  # integer values 0..16
    y = torch.from_numpy(labels).long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_DIGITS_PARTITION_SEED))
    test, train = perm[:_DIGITS_TEST_SIZE], perm[_DIGITS_TEST_SIZE:]
    return Raw(x[train], y[train], x[test], y[test], 16.0, 10, 1)


# The readers the registry names (its `reader` field), each given the dataset's files and the data root.
READERS = {"idx": read_idx, "cifar": read_cifar}


def read(name: str, root: Path, download: bool) -> Raw:
    """A named dataset from the data root (downloaded when missing and possible), or a folder of images."""
    if name.startswith(FOLDER):
        path = folder_path(name)
        if not path.is_dir():
            raise AblateError(f"image folder {path} not found; pass folder:PATH with PATH holding train/<class>/ and "
                              "test/<class>/ folders of .png/.jpg images")
        return read_folder(path)
    reader = REGISTRY[name].reader
    if reader == "digits":  # bundled with scikit-learn: no files, nothing to download
        return read_digits()
    source = SOURCES[name]
    ensure(source, root, download)
    return READERS[reader](source, root)
