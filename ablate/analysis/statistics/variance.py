"""What the reported intervals cover: which sources of variance the seeds of the final stage vary (weight
initialisation, data order, augmentation draws, the draw of the training, dev and test images) and which they do
not (the search's luck, other data). One sentence, for the report's lead and for the tables' captions."""
from __future__ import annotations

from ..context import dataset_name
from ..load import Run
from ..markdown_text import text


def covers(run: Run, markdown: bool = True) -> str:
    """The sentence; `markdown=False` gives plain text (a LaTeX caption escapes it itself)."""
    quote = (lambda s: f"`{s}`") if markdown else (lambda s: s)  # noqa: E731
    augment = run.config_value("augment")
    order = "the order of the training data" + (" and its augmentation draws" if augment not in (None, "none") else "")
    data = text(dataset_name(run)) if markdown else dataset_name(run)
    sizes = [run.config_value(k) for k in ("train_size", "dev_size", "test_size")]
    counts = (f"{sizes[0]} training, {sizes[1]} dev and {sizes[2]} test images" if all(v is not None for v in sizes)
              else "training, dev and test images")
    search = (" nor the luck of the search that chose each arm's configuration (given separately where it was "
              "measured)" if run.study.space else "")
    if run.study.resample_data:
        return (f"The intervals cover the variation from weight initialisation, {order}, and the draw of the "
                f"{counts} (every seed drew its own subsets of {data}: {quote('resample_data: true')}); they do not "
                f"cover other datasets or training lengths{search}.")
    return (f"The intervals cover weight initialisation and {order} only, on one fixed draw of {counts} of {data} "
            f"({quote('resample_data: false')}): they do not cover which images were drawn{search}; the same spec "
            f"with {quote('resample_data: true')} gives intervals that do.")
