"""What was run, in words: dataset actually used, model, protocol, resumes, readable arm labels,
and the precision the numbers carry. Shared by the report, the tables and the figure titles."""
from __future__ import annotations

import math
import re
from typing import Any

from .load import Run, arm_value

NUM_CLASSES = 10  # both datasets (MNIST, scikit-learn digits) are the ten digits
CHANCE = 1 / NUM_CLASSES
DATASET_NAMES = {"mnist": "MNIST", "digits": "scikit-learn digits"}
DATASET_DETAILS = {"mnist": "MNIST (28×28 handwritten digits)",
                   "digits": "scikit-learn's digits (8×8 handwritten digits, 1,797 images)"}
FAMILY_NAMES = {"imagenet": "ResNet-{d}", "cifar": "CIFAR-style ResNet-{d}"}


def dataset_name(run: Run) -> str:
    """Short name of the dataset actually used (for titles and captions)."""
    return " + ".join(DATASET_NAMES.get(d, d) for d in run.dataset.split(" + "))


def model_name(run: Run) -> str:
    """e.g. 'ResNet-18', 'CIFAR-style ResNets, depths 20–56' when depth is a factor."""
    family, depth = run.config_value("family"), run.config_value("depth")
    if family is None:
        return "ResNets"
    if depth is None:
        depths = sorted({int(arm_value(run, a, "depth")) for a in run.arm_names})
        stem = FAMILY_NAMES.get(family, family + "-{d}").replace("-{d}", "s")
        return f"{stem}, depths {depths[0]}–{depths[-1]}"
    return FAMILY_NAMES.get(family, family + "-{d}").format(d=depth)


def title(run: Run, what: str) -> str:
    """A figure title that names the study, the model and the dataset actually used."""
    return f"{run.study.name}: {what}\n{model_name(run)} on {dataset_name(run)}"


def acc_step(run: Run) -> float:
    """The step, in percentage points, in which one model's test accuracy moves (one test image)."""
    sizes = [int(arm_value(run, a, "test_size")) for a in run.arm_names]
    return 100.0 / min(sizes)


def acc_digits(run: Run) -> int:
    """Decimals for accuracies in %: what one test image resolves, at least one (200 images: 0.5 pp, 1 decimal)."""
    return max(1, math.ceil(-math.log10(acc_step(run)) - 1e-9))


def level_text(factor: str, value: Any) -> str:
    """A factor level in words: 'residual' / 'plain', 'stage 1 only', 'depth 20', 'lr 0.01', 'preact blocks'."""
    if factor == "residual":
        return "residual" if value else "plain"
    if factor == "residual_stages":
        if value is None:
            return "all stages"
        stages = list(value)
        return f"stage {stages[0]} only" if len(stages) == 1 else "stages " + ", ".join(map(str, stages))
    if factor == "shortcut":
        return f"{value} shortcut"
    if factor == "block":
        return f"{value} blocks"
    if factor == "norm":
        return "no normalisation" if value == "none" else f"{value} norm"
    if factor == "depth":
        return f"depth {value}"
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
        elif factor in ("block", "shortcut", "norm") or isinstance(value, bool):
            parts.append(f"with {text}")
        else:
            parts.append(f"at {text}")
    return ", ".join(parts)


def readable_arm(run: Run, arm: str) -> str:
    """'plain', 'residual', 'depth 20, plain', 'identity shortcut' ... from the arm's factor settings."""
    settings = next((a.settings for a in run.study.arms if a.name == arm), None)
    if not run.study.factor_names or not settings:
        return arm
    parts = []
    for key, value in settings.items():
        if key == "residual":
            parts.append("residual" if value else "plain")
        elif key == "shortcut":
            parts.append(f"{value} shortcut")
        elif key == "depth":
            parts.append(f"depth {value}")
        elif key == "residual_stages":
            parts.append(level_text(key, value))
        elif isinstance(value, bool):
            parts.append(key if value else f"no {key}")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


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
    source = "; ".join(DATASET_DETAILS.get(d, d) for d in data)
    return (f"Protocol: {model_name(run)} ({val('family')} layout, {val('shortcut')} shortcuts where residual), "
            f"plain SGD (lr {lr}, momentum {val('momentum')}, weight decay {val('weight_decay')}, batch {val('batch_size')}, "
            f"constant learning rate), {steps_text} steps ({val('epochs')} epochs over {val('train_size')} training "
            f"images), no data augmentation; dev set {val('dev_size')} images from the training split, evaluated "
            f"every {val('eval_every')} steps; test set {val('test_size')} images; data {source}, resized to "
            f"{size}×{size}. The numbers describe this short protocol (budget {run.study.budget}), not converged "
            "training.")


def search_line(run: Run) -> str:
    """How the tuning trials were proposed and stopped (empty for a study without a search)."""
    study = run.study
    if not study.space:
        return ""
    if study.legacy:
        return ("Search: an older ablate's asynchronous Optuna/ASHA search; its proposals depended on which trial "
                "finished first, so a rerun of this spec need not give the same configurations.")
    return (f"Search: {study.sampler_text()}; {study.trials_per_arm} tuning trials per arm, each round proposed only "
            "after every earlier round's results were told, so the same spec gives the same proposals and choices on "
            "any machine, interrupted or not. Each arm's configuration with the best dev accuracy went to the confirm "
            "stage.")


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
        counts = ", ".join(f"{DATASET_NAMES.get(d, d)}: {k} trial(s)" for d, k in sorted(used.items()))
        lines.append(f"**Warning**: the trials of this run used different datasets ({counts}); numbers from "
                     "different datasets are not comparable. A study resumed on another machine (or after "
                     "`ABLATE_DATA_DIR` changed) can do this when the spec says `dataset: auto`.")
    named = {d for d, name in DATASET_NAMES.items() if re.search(rf"\b{re.escape(name)}\b", run.study.description)}
    if named and not named & set(used or [run.dataset]):
        lines.append(f"Note: the spec's description names {', '.join(DATASET_NAMES[d] for d in sorted(named))}, "
                     f"but this run used {dataset_name(run)}.")
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
                     "function of the spec and of results already recorded, so an uninterrupted run gives the same "
                     "trials.")
    for r in run.resumes:
        changed = [f"{key} {first.get(key)!s} → {r.get(key)!s}" for key in ("dataset", "git_commit")
                   if first and r.get(key) != first.get(key)]
        if changed:
            lines.append(f"At the resume of {r.get('started_at', r['file'])}: " + "; ".join(changed) + ".")
    return lines
