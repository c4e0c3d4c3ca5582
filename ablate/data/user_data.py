"""A user's own data: a data loader named as the dataset (`my_package.data:load` or `./data.py:load`, in a spec's
base.dataset or with --dataset), imported from the source file the trial config records (ablate.user_code: announced,
refused when the file no longer hashes to what was recorded) and called once per process.

The loader contract: `load()`, called with no arguments, returns a dict

    {"train": (images, labels), "test": (images, labels)}           # and optionally "classes": int

- images: a torch tensor (N, C, H, W), uint8 (0..255) or floating point (0..1); train and test of one dtype and one
  channel count C; any H and W (resized to the trial's image_size like every dataset's images).
- labels: a torch tensor (N,) of an integer dtype (read as int64), one per image, each from 0 to classes - 1.
- classes: how many classes there are (at least 2); left out, the largest label + 1 over both parts.
- In place of a pair, a part may be a map-style torch Dataset (`len(d)` and `d[i]`): each item a pair (image, label),
  the image a tensor (C, H, W) under the same rules, the label an int or an integer tensor of one value. Its items
  are read once, in order, and stacked (at most MAX_IMAGES of them).

ablate.data.splits then treats the result as it treats a shipped dataset's files: the seeded train and dev subsets
drawn from "train" (resample_data: each seed its own), the test subset from "test", resizing, and the scaling (one
channel to [-1, 1], several per channel by the training subset's statistics).
"""
from __future__ import annotations

from typing import Any

import torch

from ablate.data.readers import Raw
from ablate.errors import AblateError
from ablate.spec import MAX_IMAGES
from ablate.user_code import load_callable

CONTRACT = ('{"train": (images, labels), "test": (images, labels)} (optionally "classes": int) with images a torch '
            'tensor (N, C, H, W), uint8 or float in [0, 1], and labels an integer tensor (N,); or, for a part, a torch '
            'Dataset of (image (C, H, W), label) items')
_READ: dict[tuple[str, str, str], Raw] = {}  # (reference, file, sha256) -> what the loader returned, checked


def check_loader(reference: str, file: str, sha256: str, *, allow_changed: bool = False) -> None:
    """Import a data loader, saying so on stderr first (what a launch, `train` and `reproduce` do before any data is
    read; a study's trial workers import it silently)."""
    load_callable("data loader", reference, file, sha256, announce=True, allow_changed=allow_changed)


def read_user(reference: str, file: str, sha256: str) -> Raw:
    """The loader's train and test parts, checked against the contract (refused in one line naming what was
    expected), called once per process."""
    key = (reference, file, sha256)
    loader = load_callable("data loader", reference, file, sha256, announce=False)  # the file still what was recorded
    if key not in _READ:
        try:
            returned = loader()
        except Exception as exc:  # the user's code failed: say where, in one line
            raise AblateError(f"data loader {reference} failed: {type(exc).__name__}: {exc}") from None
        _READ[key] = _check(reference, returned)
    return _READ[key]


def _check(reference: str, returned: Any) -> Raw:
    def refuse(problem: str) -> AblateError:
        return AblateError(f"data loader {reference} returned {problem}; expected {CONTRACT}")

    if not isinstance(returned, dict) or not {"train", "test"} <= set(returned) or \
            not set(returned) <= {"train", "test", "classes"}:
        keys = f"a dict with keys {', '.join(map(str, returned))}" if isinstance(returned, dict) else \
            f"a {type(returned).__name__}"
        raise refuse(keys)
    parts = {}
    for part in ("train", "test"):
        pair = returned[part]
        if isinstance(pair, torch.utils.data.Dataset):
            pair = _stacked(pair, part, refuse)
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise refuse(f"{part} as a {type(pair).__name__}, not a pair (images, labels)")
        x, y = pair
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] == 0 or 0 in x.shape[1:]:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise refuse(f"{part} images of shape {shape}, not a non-empty tensor (N, C, H, W)")
        if not (x.dtype == torch.uint8 or x.is_floating_point()):
            raise refuse(f"{part} images of dtype {x.dtype}")
        if x.is_floating_point() and x.numel() and not (float(x.min()) >= 0 and float(x.max()) <= 1):
            raise refuse(f"{part} images of float values from {float(x.min()):g} to {float(x.max()):g}, outside [0, 1]")
        if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype in (torch.bool, torch.complex64,
                                                                                       torch.complex128):
            what = f"dtype {y.dtype}" if isinstance(y, torch.Tensor) else f"a {type(y).__name__}"
            raise refuse(f"{part} labels of {what}, not an integer tensor")
        if y.shape != (x.shape[0],):
            raise refuse(f"{part} labels of shape {tuple(y.shape)} for {x.shape[0]} images")
        parts[part] = (x.detach().cpu().contiguous(), y.detach().cpu().to(torch.int64).contiguous())
    (train_x, train_y), (test_x, test_y) = parts["train"], parts["test"]
    if train_x.dtype != test_x.dtype or train_x.shape[1] != test_x.shape[1]:
        raise refuse(f"train images of {train_x.dtype} with {train_x.shape[1]} channels and test images of "
                     f"{test_x.dtype} with {test_x.shape[1]}")
    low = min(int(train_y.min()), int(test_y.min()))
    high = max(int(train_y.max()), int(test_y.max()))
    classes = returned.get("classes", high + 1)
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise refuse(f"classes {classes!r} (at least 2 are needed)")
    if low < 0 or high >= classes:
        raise refuse(f"labels from {low} to {high}, not from 0 to {classes - 1}")
    max_value = 255.0 if train_x.dtype == torch.uint8 else 1.0
    return Raw(train_x, train_y, test_x, test_y, max_value, classes, int(train_x.shape[1]))


def _stacked(data: Any, part: str, refuse) -> tuple[torch.Tensor, torch.Tensor]:
    """A map-style Dataset's (image, label) items as (images (N, C, H, W), labels (N,)); what does not fit the
    contract is refused (`refuse`) naming the first item that does not."""
    try:
        n = len(data)
    except TypeError:
        raise refuse(f"{part} as a {type(data).__name__} without a length (an iterable Dataset); return a map-style "
                     "Dataset or tensors") from None
    if n == 0 or n > MAX_IMAGES:
        raise refuse(f"{part} as a Dataset of {n:,} items (from 1 to {MAX_IMAGES:,} are read)")
    images, labels = [], []
    for i in range(n):
        item = data[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise refuse(f"{part} item {i} as a {type(item).__name__}, not a pair (image, label)")
        x, y = item
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise refuse(f"{part} item {i} with an image of shape {shape}, not a tensor (C, H, W)")
        if isinstance(y, torch.Tensor) and y.numel() == 1 and not y.dtype.is_floating_point and y.dtype != torch.bool:
            y = int(y)
        if isinstance(y, bool) or not isinstance(y, int):
            raise refuse(f"{part} item {i} with a label of {type(y).__name__}, not an int")
        if images and (x.shape != images[0].shape or x.dtype != images[0].dtype):
            raise refuse(f"{part} item {i} with an image of {tuple(x.shape)} {x.dtype}, item 0's of "
                         f"{tuple(images[0].shape)} {images[0].dtype}")
        images.append(x)
        labels.append(y)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)
