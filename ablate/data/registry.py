"""The names of the datasets ablate knows, and the rules that depend on the name alone (folder:PATH, which
datasets must never be mirrored). Imports no torch.
"""
from __future__ import annotations

from pathlib import Path


from ablate.errors import AblateError


NAMED = ("auto", "mnist", "digits", "fashion-mnist", "kmnist", "cifar10", "cifar100")
FOLDER = "folder:"
DATASETS = (*NAMED, f"{FOLDER}PATH")
# Mirrored digits and characters are not the same class (a mirrored 2 is no digit): crop-flip is refused on these.
NO_FLIP = ("auto", "mnist", "digits", "kmnist")


def check_dataset(name: object) -> str:
    """The name if it is a dataset ablate knows (folder:PATH with any non-empty PATH), else one line saying which are."""
    if isinstance(name, str) and (name in NAMED or (name.startswith(FOLDER) and name[len(FOLDER):].strip())):
        return name
    raise AblateError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)} (PATH holding train/<class>/ "
                      "and test/<class>/ image folders)")


# --- folders of images ---------------------------------------------------------------------------
def folder_path(name: str) -> Path:
    return Path(name[len(FOLDER):]).expanduser().resolve()


def canonical_dataset(name: str) -> str:
    """folder:PATH with PATH absolute (relative paths are taken from the current folder); other names as they are."""
    return f"{FOLDER}{folder_path(name)}" if name.startswith(FOLDER) else name
