"""ablate: rigorous ablation studies on deep networks, with hyperparameter search."""

__version__ = "0.1.0"

from ablate.matplotlib_home import use_writable_folder as _use_writable_folder  # noqa: E402

_use_writable_folder()  # before anything imports matplotlib: no multi-line warning where HOME cannot be written
