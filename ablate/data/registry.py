"""The dataset registry: per dataset name what ablate knows of it without reading it (title, description, classes,
channels, image size, split sizes, whether it may be mirrored, the works to cite, which reader reads it), and the
rules that depend on the name alone (folder:PATH; a user's loader, my_package.data:load or ./data.py:load). Every
other module reads these facts from here. Imports no torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


from ablate.errors import AblateError


@dataclass(frozen=True)
class Dataset:
    title: str  # its name in titles, captions and messages: "MNIST"
    details: str  # what it is, for a report's protocol and methods: "MNIST (28×28 handwritten digits)"
    classes: int
    channels: int  # 1 greyscale, 3 colour
    image_size: int  # the side of its square images, in pixels
    train_images: int  # in its training split (the most a file of it may declare)
    test_images: int  # in its test split
    mirror: bool  # whether a mirrored image keeps its class (augment crop-flip is refused where not)
    cite: tuple[str, ...]  # citation keys (ablate.analysis.text.references) of the works that made it
    reader: str  # which reader of ablate.data.readers reads it: idx | cifar | digits


# Mirrored digits and characters are not the same class (a mirrored 2 is no digit): those may not be mirrored.
REGISTRY: dict[str, Dataset] = {
    "mnist": Dataset("MNIST", "MNIST (28×28 handwritten digits)", 10, 1, 28, 60_000, 10_000, False,
                     ("lecun1998gradient",), "idx"),
    "digits": Dataset("scikit-learn digits", "scikit-learn's digits (8×8 handwritten digits, 1,797 images)", 10, 1, 8,
                      1_437, 360, False, ("alpaydin1998optical", "pedregosa2011scikit"), "digits"),
    "fashion-mnist": Dataset("Fashion-MNIST", "Fashion-MNIST (28×28 greyscale clothing, 10 classes)", 10, 1, 28,
                             60_000, 10_000, True, ("xiao2017fashion",), "idx"),
    "kmnist": Dataset("Kuzushiji-MNIST", "Kuzushiji-MNIST (28×28 cursive Japanese characters, 10 classes)", 10, 1, 28,
                      60_000, 10_000, False, ("clanuwat2018deep",), "idx"),
    "cifar10": Dataset("CIFAR-10", "CIFAR-10 (32×32 colour photographs, 10 classes)", 10, 3, 32, 50_000, 10_000, True,
                       ("krizhevsky2009learning",), "cifar"),
    "cifar100": Dataset("CIFAR-100", "CIFAR-100 (32×32 colour photographs, 100 fine classes)", 100, 3, 32, 50_000,
                        10_000, True, ("krizhevsky2009learning",), "cifar"),
}
AUTO = "auto"  # MNIST where it can be had, else digits
AUTO_CHOICES = ("mnist", "digits")
NAMED = (AUTO, *REGISTRY)
FOLDER = "folder:"
DATASETS = (*NAMED, f"{FOLDER}PATH")
# a user's data loader (ablate.data.user_data): an import path or a .py file, then the function's name
_LOADER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*|.*\.py|.*[/\\].*):[A-Za-z_][A-Za-z0-9_]*$")


def info(name: str) -> Dataset | None:
    """The registry's entry of a named dataset (auto: MNIST's, what it is where it can be); None for a folder."""
    return REGISTRY.get(AUTO_CHOICES[0] if name == AUTO else name)


def is_user_data(name: object) -> bool:
    """Whether a dataset name is a user's loader (MODULE:FUNCTION or FILE.py:FUNCTION); folder:PATH comes first."""
    return isinstance(name, str) and not name.startswith(FOLDER) and bool(_LOADER.match(name))


def may_mirror(name: str) -> bool:
    """Whether augment crop-flip may mirror this dataset's images: not digits or characters (auto may give either);
    a folder of images is the user's to judge."""
    if name == AUTO:
        return all(REGISTRY[n].mirror for n in AUTO_CHOICES)
    entry = REGISTRY.get(name)
    return entry.mirror if entry else True


def no_flip() -> tuple[str, ...]:
    """The names augment crop-flip is refused with."""
    return tuple(n for n in NAMED if not may_mirror(n))


def check_dataset(name: object) -> str:
    """The name if it is a dataset ablate knows (folder:PATH with any non-empty PATH, or a user's loader), else one
    line saying which are."""
    if isinstance(name, str) and (name in NAMED or (name.startswith(FOLDER) and name[len(FOLDER):].strip())
                                  or is_user_data(name)):
        return name
    raise AblateError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}, MODULE:FUNCTION, FILE.py:FUNCTION (PATH holding train/<class>/ "
                      "and test/<class>/ image folders; FUNCTION a data loader of yours that returns the images and "
                      "labels)")


# --- folders of images ---------------------------------------------------------------------------
def folder_path(name: str) -> Path:
    return Path(name[len(FOLDER):]).expanduser().resolve()


def canonical_dataset(name: str) -> str:
    """folder:PATH with PATH absolute (relative paths are taken from the current folder); other names as they are."""
    return f"{FOLDER}{folder_path(name)}" if name.startswith(FOLDER) else name
