"""What was run, in words: dataset actually used, model, protocol, resumes, readable arm labels,
and the precision the numbers carry. Shared by the report, the tables and the figure titles."""
from __future__ import annotations

import math
import re
from typing import Any

from ablate.data import FOLDER, REGISTRY as DATASETS
from ablate.errors import AblateError
from ablate.models import FAMILY_TITLES, MODEL_AXES, axis_meta, axis_text, neutral_defaults
from ablate.run_folder import read_metrics, trial_dir

from .load import Run, arm_value
from .markdown_text import plot_text, text

# The named datasets' titles and descriptions, from the dataset registry.
MAX_LEADS = 8  # the compared pairs a report names one by one (its lead, the paired-difference figure, the tuning
#               notes); the rest are counted and left to their sections
DATASET_NAMES = {name: d.title for name, d in DATASETS.items()}
DATASET_DETAILS = {name: d.details for name, d in DATASETS.items()}


def _short(d: str, run: Run) -> str:
    loader = run.study.data  # a user's data loader: named with its source's hash, as a user's model is
    if loader is not None and d == loader.reference:
        return loader.describe("the data of the user's loader")
    return f"images in {d[len(FOLDER):]}" if d.startswith(FOLDER) else DATASET_NAMES.get(d, d)


def dataset_name(run: Run) -> str:
    """Short name of the dataset actually used (for titles and captions)."""
    return " + ".join(_short(d, run) for d in run.dataset.split(" + "))


def recorded(run: Run, key: str) -> int | None:
    """An integer the reported trials recorded in their metrics.json (the first found), or None."""
    for row in run.ok.itertuples():
        try:
            value = read_metrics(trial_dir(run.run_dir, row.trial_id)) or {}
        except AblateError:  # a value its field cannot hold: not a count to report
            continue
        if isinstance(value.get(key), int) and not isinstance(value.get(key), bool):
            return value[key]
    return None


def num_classes(run: Run) -> int:
    """Classes of the dataset the reported trials used: as their metrics.json recorded it, else known from the
    dataset's name (runs made before trials recorded it), else 10 (every dataset of those runs had ten)."""
    value = recorded(run, "num_classes")
    if value is not None and value >= 2:
        return value
    return max((DATASETS[d].classes if d in DATASETS else 10 for d in run.dataset.split(" + ")), default=10)


def chance(run: Run) -> float:
    """Accuracy of guessing one class for every image: 1 / number of classes."""
    return 1 / num_classes(run)


def model_name(run: Run) -> str:
    """e.g. 'ResNet-18', 'CIFAR-style ResNets, depths 20–56' when depth is a factor; a user model by its factory and
    its source's hash ('the user model ./nets.py:build (source SHA-256 1a2b3c4d5e6f)'), never as a ResNet."""
    if run.study.model is not None:
        return run.study.model.describe()
    family, depth = run.config_value("family"), run.config_value("depth")
    if family is None:
        return "ResNets"
    if depth is None:
        depths = sorted({int(arm_value(run, a, "depth")) for a in run.arm_names})
        stem = FAMILY_TITLES.get(family, family + "-{depth}").replace("-{depth}", "s")
        return f"{stem}, depths {depths[0]}–{depths[-1]}"
    return FAMILY_TITLES.get(family, family + "-{depth}").format(depth=depth)


def shared_model_axes(run: Run) -> list[str]:
    """The model axes every arm sets alike away from the reference model ('pre-activation blocks', 'GELU'), in the
    words ModelSpec.describe() uses; the protocol and methods.md name them. None for a user model (its settings are
    its factory's, not these axes)."""
    if run.study.model is not None:
        return []
    return [axis_text(name, value) for name, default in neutral_defaults().items() if name != "residual_stages"
            and (value := run.config_value(name)) is not None and value != default]


def title(run: Run, what: str) -> str:
    """A figure title that names the study, the model and the dataset actually used."""
    return plot_text(f"{run.study.name}: {what}\n{model_name(run)} on {dataset_name(run)}")


def acc_step(run: Run) -> float:
    """The step, in percentage points, in which one model's test accuracy moves (one test image)."""
    sizes = [int(arm_value(run, a, "test_size")) for a in run.arm_names]
    return 100.0 / min(sizes)


def acc_digits(run: Run) -> int:
    """Decimals for accuracies in %: what one test image resolves, at least one (200 images: 0.5 pp, 1 decimal)."""
    return max(1, math.ceil(-math.log10(acc_step(run)) - 1e-9))


def level_text(factor: str, value: Any) -> str:
    """A factor level in words: a model axis's as the model registry words it ('residual' / 'plain', 'stage 1
    only', 'depth 20', 'pre-activation blocks', 'GELU'; what ModelSpec.describe() says), else 'lr 0.01'."""
    if factor in MODEL_AXES:
        return axis_text(factor, value)
    if isinstance(value, bool):
        return factor if value else f"no {factor}"
    if isinstance(value, float):
        return f"{factor} {value:g}"
    return f"{factor} {value}"


def context_text(context: dict[str, Any]) -> str:
    """Where an effect was measured, in words: 'at depth 20', 'in stage 1 only', 'with preact blocks'."""
    parts = []
    for factor, value in context.items():
        text = level_text(factor, value)
        if factor == "residual_stages":
            parts.append(f"in {text}")
        elif factor == "residual":
            parts.append(f"in the {text} net")
        elif factor == "family":
            parts.append(f"in the {text}")
        elif (factor in MODEL_AXES and axis_meta(factor).names is not None) or isinstance(value, bool):
            parts.append(f"with {text}")
        else:
            parts.append(f"at {text}")
    return ", ".join(parts)


def readable_arm(run: Run, arm: str) -> str:
    """'plain', 'residual', 'depth 20, plain', 'identity shortcut' ... from the arm's factor settings."""
    settings = next((a.settings for a in run.study.arms if a.name == arm), None)
    if not run.study.factor_names or not settings:
        return arm
    return ", ".join(level_text(key, value) for key, value in settings.items())


def protocol(run: Run) -> str:
    """One sentence of the protocol limits: model, optimiser, steps, images, what is not done."""
    def val(key: str) -> Any:
        v = run.config_value(key)
        return "varies by arm" if v is None else v

    steps = sorted({int(s) for s in run.reported["total_steps"].dropna()})
    steps_text = ("/".join(map(str, steps)) if steps else "?")
    lr = ("tuned per arm" if any(p.name == "lr" for p in run.study.space)
          else "chosen per arm from a grid" if "lr" in run.study.grid else f"{val('lr'):g}")
    size = val("image_size")
    data = run.dataset.split(" + ")
    source = "; ".join(DATASET_DETAILS.get(d, text(_short(d, run))) for d in data)
    sgd = "SGD with Nesterov momentum" if val("nesterov") is True else "plain SGD"
    shared = "".join(f", {text}" for text in shared_model_axes(run))
    arch = (f" ({val('family')} layout, {val('shortcut')} shortcuts where residual{shared})" if run.study.model is None
            else " (built by its factory with each arm's settings)")
    return (f"Protocol: {model_name(run)}{arch}, "
            f"{sgd} (lr {lr}, momentum {val('momentum')}, weight decay {val('weight_decay')}, batch {val('batch_size')}, "
            f"{schedule_text(val)}), {steps_text} steps ({val('epochs')} epochs over {val('train_size')} training "
            f"images), {augment_text(val('augment'))}; dev set {val('dev_size')} images from the training split, "
            f"evaluated every {val('eval_every')} steps; test set {val('test_size')} images; data {source}, resized to "
            f"{size}×{size}, {scaling_text(run)}{execution_text(val)}. The numbers describe this "
            + (f"short protocol (budget {run.study.budget}), not converged training." if val("schedule") == "constant"
               else f"protocol (budget {run.study.budget})."))


def schedule_text(val) -> str:
    """The learning-rate schedule in words, from a setting getter (`val(key)`, 'varies by arm' when arms differ)."""
    kind, warm = val("schedule"), val("warmup_steps")
    if kind == "step":
        marks = val("milestones")
        marks = "/".join(f"{100 * m:g} %" for m in marks) if isinstance(marks, (list, tuple)) else str(marks)
        text = f"learning rate times {val('milestone_factor')} at {marks} of training"
    elif kind == "cosine":
        text = "cosine decay of the learning rate to zero"
    elif kind == "constant":
        text = "constant learning rate"
    else:
        text = f"learning-rate schedule {kind}"
    if warm == "varies by arm" or (isinstance(warm, int) and warm > 0):
        text += f" after {warm} steps of linear warm-up"
    return text


def execution_text(val) -> str:
    """'' for fp32 eager training (the default); else how the training steps ran (evaluation is always fp32)."""
    precision, mode = val("precision"), val("compile")
    parts = []
    if precision != "fp32":
        parts.append("training forward passes in bf16 autocast (evaluation in fp32)" if precision == "bf16"
                     else f"precision {precision}")
    if mode != "none":
        parts.append(f"trained through torch.compile (mode {mode})" if mode in ("default", "reduce-overhead")
                     else f"compile {mode}")
    return "".join(f"; {p}" for p in parts)


def augment_text(kind: Any) -> str:
    return {"none": "no data augmentation",
            "crop": "random crops after padding by 4 black pixels (on the device, drawn from the seed)",
            "crop-flip": "random crops after padding by 4 black pixels and horizontal flips (on the device, drawn "
                         "from the seed)"}.get(kind, f"augmentation {kind}")


def scaling_text(run: Run) -> str:
    """How pixels were scaled: colour images per channel (the statistics are in each trial's metrics.json)."""
    channels = recorded(run, "in_channels") or max((DATASETS[d].channels if d in DATASETS else 1
                                                      for d in run.dataset.split(" + ")), default=1)
    return ("normalised per channel by the training subset's mean and standard deviation (channel_mean, channel_std "
            "in each trial's metrics.json)" if channels == 3 else "scaled to [-1, 1]")


# What a rerun of the same spec reproduces, and where it stops (issue 24: sampler seed 0 gave 12 confirm seeds on an
# AMD machine and 10 on an Intel one, same torch: CPUs differ in the last bits of floating-point results).
SAME_HARDWARE = ("the same spec gives the same results, proposals and choices on the same hardware and library versions, "
                 "interrupted or not; on another CPU model (or other library versions) the training's floating-point "
                 "results can differ in the last bits")


def search_line(run: Run) -> str:
    """How the tuning trials were proposed and stopped (empty for a study without a search)."""
    study = run.study
    if not study.space:
        return ""
    if study.legacy:
        return ("Search: an older ablate's asynchronous Optuna/ASHA search; its proposals depended on which trial "
                "finished first, so a rerun of this spec need not give the same configurations.")
    points, seeds = study.trials_per_arm, study.tuning_seed_count
    count = (f"{points} points per arm, each trained under {seeds} tuning seeds ({points * seeds} tuning trials per arm)"
             if seeds > 1 else f"{points} tuning trials per arm")
    if study.repeats > 1:
        count += f", the whole search run {study.repeats} times under sampler seeds of its own"
    if study.sampler == "grid":
        how = (f"every grid point trained at once, so the points are the spec's own on any machine; {SAME_HARDWARE}, "
               "and so can a choice between points that nearly tie")
    else:
        how = (f"each round proposed only after every earlier round's results were told; {SAME_HARDWARE}, and with "
               "them the later rounds' proposals and a choice between points that nearly tie")
    return (f"Search: {study.sampler_text()}; {count}, {how}. Each arm's configuration with the best "
            f"{'mean ' if seeds > 1 else ''}dev accuracy went to the confirm stage.")


def test_images_line(run: Run) -> str:
    n = run.config_value("test_size")
    n_text = f"{n}" if n is not None else "the"
    if run.study.resample_data:
        return (f"Test images: each seed drew its own data subsets (resample_data: true, data seed = seed); both arms "
                f"of a seed pair saw the same {n_text} test images, so the spread over seeds includes the choice of "
                "images.")
    return (f"Test images: every seed and arm was scored on the same {n_text} test images (resample_data: false), so "
            "the spread over seeds is retraining noise only; the per-image analysis below adds the sampling of test "
            "images.")


def dataset_lines(run: Run) -> list[str]:
    """Which dataset the trials actually used, and where that disagrees with the spec or between trials."""
    used = run.datasets
    lines = []
    if len(used) > 1:
        counts = ", ".join(f"{text(DATASET_NAMES.get(d, d))}: {k} trial(s)" for d, k in sorted(used.items()))
        lines.append(f"**Warning**: the trials of this run used different datasets ({counts}); numbers from "
                     "different datasets are not comparable. A study resumed on another machine (or after "
                     "`ABLATE_DATA_DIR` changed) can do this when the spec says `dataset: auto`.")
    # A name counts as a word of its own: "MNIST" inside "Fashion-MNIST" does not name MNIST.
    named = {d for d, name in DATASET_NAMES.items()
             if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", run.study.description)}
    if named and not named & set(used or [run.dataset]):
        lines.append(f"Note: the spec's description names {', '.join(DATASET_NAMES[d] for d in sorted(named))}, "
                     f"but this run used {text(dataset_name(run))}.")
    return lines


def resume_lines(run: Run) -> list[str]:
    """When the study was resumed, and what changed between the launch and each resume."""
    if not run.resumes:
        return ["The study ran in one go (no `study --resume`)."]
    first = run.manifest
    lines = [f"The study was resumed {len(run.resumes)} time(s) with `study --resume` "
             f"({', '.join(r.get('started_at', r['file']) for r in run.resumes)}); trials finished before a resume "
             "were kept, not rerun."]
    if run.study.space and not run.study.legacy:
        lines.append("Resuming does not change a study's results: every proposal, halving decision and choice is a "
                     "function of the spec and of results already recorded, so an uninterrupted run on the same "
                     "hardware and library versions gives the same trials (trials trained after a resume on another "
                     "CPU model can differ in the last bits, and so can what depends on them).")
    for r in run.resumes:
        changed = [f"{key} {first.get(key)!s} → {r.get(key)!s}" for key in ("dataset", "git_commit")
                   if first and r.get(key) != first.get(key)]
        if changed:
            lines.append(f"At the resume of {r.get('started_at', r['file'])}: " + "; ".join(changed) + ".")
    return lines
