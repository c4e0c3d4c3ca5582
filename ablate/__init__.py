"""ablate: rigorous ablation studies on deep networks, with hyperparameter search."""

__version__ = "0.1.0"
