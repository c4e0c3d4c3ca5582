"""ablate: rigorous ablation studies on deep networks, with hyperparameter search.

The whole cycle from Python (a script, a notebook), through the functions the command line runs (ablate.api):

    import ablate

    study = ablate.load_study("residual-ablation", budget="smoke")  # a shipped name, a spec .yaml or a dict
    run_dir = ablate.run(study, out="runs/mine")                      # search, then confirm over seeds
    result = ablate.analyze(run_dir)                                  # figures, tables, report.md
    tables = ablate.load_run(run_dir)                                 # .trials, .confirm, .comparisons

A network of your own marks its residual blocks as `ablate.Residual(branch, shortcut, residual=...)`, so that
lesions, signal propagation and the per-block gradient records find them (docs/your-own-network.md).

Bad input raises ablate.errors.AblateError with the line the command line prints. The names are loaded when first
used: `import ablate` imports no torch, Ray or plotting library.
"""

__version__ = "0.1.0"

from ablate.matplotlib_home import use_writable_folder as _use_writable_folder  # noqa: E402

_use_writable_folder()  # before anything imports matplotlib: no multi-line warning where HOME cannot be written

from ablate.lazy_names import lazy_names as _lazy_names  # noqa: E402

__getattr__, __all__ = _lazy_names(__name__, {
    "api": ["Outcome", "Plan", "RunTables", "analyze", "execute", "load_run", "load_study", "plan", "run"],
    "errors": ["AblateError"],
    "models": ["Residual"],
})


def __dir__() -> list[str]:
    """The public names with the module's own, so that a notebook's completion offers `ablate.run` and the rest."""
    return sorted(set(globals()) | set(__all__))
