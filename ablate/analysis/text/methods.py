"""methods.md and references.bib: one paragraph a paper can take as it is, every number read from the run folder
(spec, manifest, registry, the trials' records) or from the analysis that ran, with pandoc citation keys
([@key]) for exactly the works the run used, and the BibTeX entries of those works."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..statistics.compare import ALPHA, BOOTSTRAP_SEED
from ablate.data import REGISTRY as DATASETS

from ..context import (DATASET_DETAILS, augment_text, dataset_name, model_name, readable_arm, scaling_text, schedule_text,
                       shared_model_axes)
from ..load import Run, arm_value
from ..markdown_text import text
from .references import ENTRIES, bibtex
from ..statistics.search_luck import DRAWS, lucks, selection_optimism
from ..runinfo import RunFacts, analysis_versions_text, duration, facts, param_counts, versions_text
from .seeding import rule_outcome
from ablate.spec import TWO_STAGE
from ..statistics.stats import EXACT_MAX_N, IMAGE_BOOTSTRAP_RESAMPLES
from ..formats import fmt_param



@dataclass
class Methods:
    text: str
    keys: list[str]          # citation keys in order of first use

    def markdown(self) -> str:
        return (f"## Methods\n\n{self.text}\n\n<!-- Citation keys refer to references.bib, e.g. pandoc methods.md "
                "--citeproc --bibliography references.bib. Every number above was read from the run folder. -->\n")

    def bib(self) -> str:
        return bibtex(self.keys)


class _Cites:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def __call__(self, *keys: str) -> str:
        for k in keys:
            if k not in ENTRIES:
                raise KeyError(k)
            if k not in self.keys:
                self.keys.append(k)
        return "[" + "; ".join(f"@{k}" for k in keys) + "]"


def _num(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else str(x)


def _val(run: Run, key: str) -> Any:
    v = run.config_value(key)
    return "per-arm" if v is None else v


def _tpe_used(run: Run) -> bool:
    s = run.study
    rounds = math.ceil(s.trials_per_arm / s.round_size) if s.round_size else 0
    return any(r * s.round_size >= s.startup for r in range(rounds))


def _model(run: Run, cite: _Cites) -> str:
    counts = param_counts(run)
    variants = "; ".join(f"{text(readable_arm(run, a))} ({_num(counts[a]) + ' parameters' if counts[a] else 'parameters n/a'})"
                         for a in run.arm_names)
    if run.study.model is not None:  # the user's network: what its factory built, never a ResNet
        return (f"We compared {_plural(len(run.arm_names), 'variant')} of {text(model_name(run))}, each built by "
                f"calling the factory with its settings: {variants}.")
    keys = ["he2016deep"]
    if any(arm_value(run, a, "block") == "preact" for a in run.arm_names):
        keys.append("he2016identity")
    n = len(run.arm_names)
    family, shortcut = run.config_value("family"), run.config_value("shortcut")
    notes = ([f"{family} layout"] if family else []) + ([f"{shortcut} shortcuts in the residual blocks"] if shortcut else [])
    notes += shared_model_axes(run)
    layout = f" ({', '.join(notes)})" if notes else ""
    return (f"We compared {_plural(n, 'variant')} of {model_name(run)}{layout} {cite(*keys)}: {variants}.")


def _data(run: Run, cite: _Cites) -> str:
    names = run.dataset.split(" + ")
    keys = list(dict.fromkeys(k for d in names for k in (DATASETS[d].cite if d in DATASETS else ())))
    source = "; ".join(DATASET_DETAILS.get(d, text(dataset_name(run))) for d in names)
    size = _val(run, "image_size")
    same = ("each seed drew its own subsets (data seed = seed)" if run.study.resample_data else
            f"the same subsets for every seed and variant (data seed {_val(run, 'data_seed')})")
    return (f"Data: {source}{' ' + cite(*keys) if keys else ''}; {_num(_val(run, 'train_size'))} training and "
            f"{_num(_val(run, 'dev_size'))} validation images drawn from the training split and "
            f"{_num(_val(run, 'test_size'))} test images from the test split, {same}, resized to {size}×{size} pixels "
            f"(antialiased bilinear) and {scaling_text(run)}; {augment_text(_val(run, 'augment'))}.")


def _plural(k: Any, word: str) -> str:
    return f"{_num(k)} {word}" if k == 1 else f"{_num(k)} {word}s"


def _training(run: Run, cite: _Cites) -> str:
    steps = sorted({int(s) for s in run.reported["total_steps"].dropna()})
    sgd = "SGD with Nesterov momentum" if _val(run, "nesterov") is True else "SGD"
    sched = schedule_text(lambda k: _val(run, k))
    if _val(run, "schedule") == "cosine":
        sched += " " + cite("loshchilov2017sgdr")
    if run.study.space or run.study.grid:
        how = "tuned" if run.study.space else "chosen from the grid"
        chosen = "; ".join(f"{text(readable_arm(run, a))}: " + ", ".join(f"{k} {fmt_param(v)}" for k, v in p.items())
                           for a, p in run.selected.items())
        lr_text = f"{sched}, {how} per variant ({chosen})"
    elif _val(run, "schedule") == "constant":
        lr_text = f"constant learning rate of {fmt_param(_val(run, 'lr'))}"
    else:
        lr_text = f"{sched} (base learning rate {fmt_param(_val(run, 'lr'))})"
    every = _val(run, "eval_every")
    every = "step" if every == 1 else f"{_num(every)} steps"
    return (f"Training: {sgd} in PyTorch {cite('paszke2019pytorch')} with batch {_val(run, 'batch_size')}, momentum "
            f"{_val(run, 'momentum')}, weight decay {_val(run, 'weight_decay')} and a {lr_text}, for "
            f"{'/'.join(_num(s) for s in steps) or 'n/a'} steps ({_plural(_val(run, 'epochs'), 'epoch')}); validation "
            f"accuracy was evaluated every {every} and the weights with the best validation accuracy were scored on "
            "the test set.")


def _grid_values(s, name: str) -> list:
    return list(dict.fromkeys(point[name] for point in s.search_points))


def _grid_axis(s, p) -> str:
    """One parameter of a search grid in words: its values and how they were placed."""
    values = ", ".join(fmt_param(v) for v in _grid_values(s, p.name))
    if p.distribution == "choice":
        return f"{p.name} ∈ {{{values}}}"
    how = {"loguniform": "evenly spaced on a log scale", "uniform": "evenly spaced",
           "int": "evenly spaced integers"}.get(p.distribution, p.distribution)
    count = len(_grid_values(s, p.name))
    return f"{p.name} at {count} values {how} from {fmt_param(p.low)} to {fmt_param(p.high)} ({values})"


def _scoring(run: Run) -> str:
    low, high = _seeds_per_point(run)
    if high <= 1:
        return "best validation accuracy (a trial that diverged or failed counted 0)"
    seeds = f"{low} to {high}" if low != high else f"{low}"
    return (f"the mean over each point's tuning seeds ({seeds} per point) of the best validation accuracy (a seed that "
            "diverged or failed counted 0; ties to the lower mean validation loss, then the earlier point)")


def _search(run: Run, cite: _Cites) -> str:
    s = run.study
    if s.legacy:
        return (f"Search: an asynchronous Optuna {cite('akiba2019optuna')} search with ASHA early stopping "
                f"{cite('li2020system')}, scheduled with Ray Tune {cite('liaw2018tune')}.")
    if not s.space:
        ray = cite("liaw2018tune")
        if s.grid:
            grid = "; ".join(f"{k} ∈ {{{', '.join(fmt_param(v) for v in vals)}}}" for k, vals in s.grid.items())
            return (f"Grid: every variant was trained at every grid point ({grid}) with every seed, and each variant is "
                    f"reported at the grid point with the best mean validation accuracy; trials were scheduled with "
                    f"Ray Tune {ray}.")
        return f"No hyperparameter search: the spec fixed every setting; trials were scheduled with Ray Tune {ray}."
    stop = (f"synchronous successive halving {cite('li2020system')} in each round (η = {s.halving.eta}, first rung at "
            f"≥ {s.halving.min_evals} validation evaluations) stopped the weaker tuning trials early"
            if s.halving else "no tuning trial was stopped early")
    seeds = s.tuning_seeds()
    k = len(seeds)
    trained = (f"each point trained under {_plural(k, 'tuning seed')} ({', '.join(map(str, seeds))}"
               f"{' in the first search' if s.repeats > 1 else ''}), {s.trials_per_arm * k} tuning trials per variant"
               if k > 1 else f"each point trained under tuning seed {seeds[0]}")
    objective = _scoring(run)
    confirm = ("Each variant's best configuration was then retrained with every seed for all its steps (no trial of "
               "this stage was stopped early); as in every trial, the checkpoint with the best validation accuracy was "
               "selected and scored on the test set.")
    if s.sampler == "grid":
        grid = "; ".join(_grid_axis(s, p) for p in s.space)
        return (f"Search: a fixed grid of {_plural(s.trials_per_arm, 'point')} per variant, the same for every variant "
                f"({grid}); {trained}; every point was trained at once, none proposed from earlier results; "
                f"objective: {objective}; {stop}; the points were recorded in an Optuna study per variant "
                f"{cite('akiba2019optuna')} and the trials scheduled with Ray Tune {cite('liaw2018tune')}. {confirm}")
    space = "; ".join(f"{p.name} {p.distribution} over [{fmt_param(p.low)}, {fmt_param(p.high)}]" if p.choices is None
                      else f"{p.name} from {{{', '.join(fmt_param(c) for c in p.choices)}}}" for p in s.space)
    if _tpe_used(run):
        sampler = (f"the TPE sampler {cite('bergstra2011algorithms')} of Optuna {cite('akiba2019optuna')} after "
                   f"{s.startup} random startup proposals")
    else:
        sampler = (f"Optuna {cite('akiba2019optuna')} at random (its TPE sampler would have taken over only after "
                   f"{_plural(s.startup, 'result')}, later than this search's last round)")
    ray = cite("liaw2018tune")
    return (f"Search: {space}, tuned separately for each variant with {s.trials_per_arm} "
            f"{'points' if k > 1 else 'trials'} per variant proposed by {sampler}, in rounds of {s.round_size} (sampler "
            f"seed {s.sampler_seed}), each round proposed only after the earlier rounds' results were known; {trained}; "
            f"objective: {objective}; {stop}; trials were scheduled with Ray Tune {ray}. {confirm}")


def _seeds_per_point(run: Run) -> tuple[int, int]:
    """Fewest and most distinct tuning seeds behind one search point (arm and parameters) of the run."""
    tune = run.trials[run.trials["stage"] == "tune"].drop_duplicates("trial_id")
    names = [p.name for p in run.study.space if p.name in tune]
    if tune.empty or not names:
        return 0, 0
    counts = tune.groupby(["arm", *names], observed=True, dropna=False)["seed"].nunique()
    return int(counts.min()), int(counts.max())


def _budget(run: Run, budget: bool, repeated: bool, cite: _Cites) -> str:
    parts = []
    if budget:
        parts.append(f"the expected validation performance {cite('dodge2019show')} of a search of n points against n, "
                     f"by the unbiased estimator of {cite('tang2020showing')}: the mean over every set of n of the "
                     "variant's search points, drawn without replacement, of the score of the point the selection "
                     "would choose from the set, with the standard deviation of that score over the sets (the spread "
                     "of single searches, not a confidence interval)")
    if repeated:
        reps = sorted({int(r) for r in run.trials.loc[run.trials["stage"] == "tune", "repeat"].fillna(0)})
        parts.append(f"the spread of the chosen configuration and of the effect over {len(reps)} repeats of the search "
                     f"under different sampler seeds {cite('bouthillier2021accounting')}")
    elif budget and any(x.method == "replay" for x in lucks(run)):
        parts.append(f"the search's luck {cite('bouthillier2021accounting')}, as the standard deviation of the effect "
                     f"over {DRAWS:,} replays of the selection on the tuning trials (a plug-in simulation: each "
                     "point's mean validation accuracy over its tuning seeds taken as the truth, the within-point "
                     "standard deviation pooled over stable points as the noise of a fresh tuning seed)")
    if budget and selection_optimism(run)["optimism_pp"].notna().any():
        parts.append("the selection's optimism (the chosen point's mean validation accuracy over its tuning seeds "
                     "minus the mean its confirmation runs reached with fresh seeds)")
    if len(parts) > 2:
        return "Tuning: we report " + "; ".join(parts[:-1]) + "; and " + parts[-1] + "."
    return ("Tuning: we report " + " and ".join(parts) + ".") if parts else ""


def _seeds(run: Run, cite: _Cites) -> str:
    seeds = ", ".join(map(str, run.seeds))
    drawn = ", and the draw of the training, validation and test subsets" if run.study.resample_data else ""
    text = (f"Seeds: {len(run.seeds)} per variant ({seeds}); a seed sets the initialisation and the order of the "
            f"data{drawn}")
    rule, out = run.study.seed_rule, rule_outcome(run)
    if rule is not None and out is not None and rule.design != TWO_STAGE:
        how = {"precision": "it stopped when every interval was that narrow",
               "max": f"it stopped at its maximum of {rule.max} seeds before every interval was that narrow",
               "running": "it had not finished when this analysis ran"}[out.state]
        text += (f". Their number was chosen by a rule fixed before the study: starting from {rule.min} seeds, "
                 f"{rule.step} more at a time, up to {rule.max}, until the 95 % t-interval of every compared paired "
                 f"difference in test accuracy was within ±{rule.half_width:g} percentage points; {how}. A rule "
                 "that stops when the interval is narrow inflates the false-positive rate somewhat, as the stop "
                 "favours a small sample SD")
    elif rule is not None and out is not None:
        how = {"planned": "the pilot's answer", "extended": "more than the pilot's answer, for the sign-flip test",
               "max": "its maximum", "running": "not yet decided when this analysis ran"}[out.state]
        text += (f". Their number was chosen by Stein's two-stage design {cite('stein1945two')}, fixed before the "
                 f"study: a pilot of {rule.min} seeds, whose standard deviation of each compared paired difference "
                 f"set the number of seed pairs giving a 95 % interval within ±{rule.half_width:g} percentage points "
                 f"(at most {rule.max}), with more where too few pairs differed for the exact sign-flip test to reach "
                 f"α = {ALPHA:g}; it ran {len(run.seeds)} ({how}). Intervals use the pilot's standard deviation with "
                 f"{rule.min - 1} degrees of freedom, so their coverage does not depend on the number of seeds the "
                 "pilot chose")
    return text + "."


def _statistics(run: Run, comparisons: pd.DataFrame, cite: _Cites) -> str:
    multiple = len(comparisons) > 1
    images = bool(len(comparisons)) and bool((comparisons["image_pairs"] > 0).any())
    two_stage = bool(len(comparisons)) and bool(comparisons["pilot"].any())
    interval = "Stein two-stage" if two_stage else "Student-t"
    text = (f"Statistics: variants were compared on test accuracy paired by seed, every run counted (a run that failed "
            f"or diverged scored at chance, intention to treat {cite('gupta2011intention')}): the mean paired "
            f"difference with its {100 * (1 - ALPHA):g} % {interval} interval, the effect size d_z (mean over SD of the "
            f"differences), an exact sign-flip test over all 2^n sign patterns (up to {EXACT_MAX_N} pairs) and, beside "
            "it, the t-test")
    if multiple:
        text += f", with sign-flip p-values Holm-corrected over all pairs {cite('holm1979simple')}"
    if images:
        text += (f"; per test image, a bootstrap over images and seed pairs ({IMAGE_BOOTSTRAP_RESAMPLES:,} resamples, "
                 f"generator seed {BOOTSTRAP_SEED}) and an exact McNemar test per seed {cite('mcnemar1947note')}")
    text += (f". A difference was called supported only when every interval excluded 0, the sign-flip p was below "
             f"{ALPHA:g} and the variant called better did not fail in more seeds")
    margin = comparisons["margin"].dropna() if "margin" in comparisons else pd.Series(dtype=float)
    if len(margin):
        text += (f"; no meaningful difference when the {100 * (1 - 2 * ALPHA):g} % interval lay within the margin of "
                 f"±{margin.iloc[0]:g} percentage points declared before the study (two one-sided tests "
                 f"{cite('schuirmann1987comparison')}; {cite('lakens2017equivalence')})")
    return text + "."


def _diagnostics(lesion: bool, diag, cite: _Cites) -> str:
    parts = []
    if diag is not None:
        if len(diag.landscape):
            parts.append(f"filter-normalised loss landscapes {cite('li2018visualizing')}")
        if len(diag.shattered):
            parts.append(f"the autocorrelation of input gradients (shattered gradients) {cite('balduzzi2017shattered')}")
        if len(diag.signal):
            parts.append(f"signal propagation at initialisation {cite('brock2021characterizing')}")
        if len(diag.lesions_k):
            parts.append(f"test accuracy with k random residual blocks removed {cite('veit2016residual')}")
    if lesion:
        parts.append(f"test accuracy with each residual block removed in turn {cite('veit2016residual')}")
    return ("Diagnostics: " + "; ".join(parts) + ".") if parts else ""


def _machine(run: Run, f: RunFacts) -> str:
    hw, res = f.manifest.get("hardware") or {}, f.manifest.get("resources") or {}
    devices = ", ".join(f"{d} ({k} trials)" for d, k in f.devices.items()) or "not recorded"
    cpu = hw.get("cpu") or "CPU model not recorded"
    parts = [f"{cpu}"]
    if hw.get("logical_cpus"):
        parts.append(f"{hw['logical_cpus']} logical CPUs")
    if hw.get("memory_gib"):
        parts.append(f"{hw['memory_gib']:g} GiB memory")
    if hw.get("gpus"):
        parts.append("GPUs: " + ", ".join(hw["gpus"]))
    elif res.get("gpus") == 0:
        parts.append("no GPU")
    where = f"on {len(f.machines)} machines" if len(f.machines) > 1 else "on one machine"
    threads, at_once = res.get("threads_per_trial"), res.get("trials_at_once")
    sched = ", ".join(x for x in (f"{_plural(threads, 'thread')} per trial" if threads else "",
                                  f"up to {at_once} trials at once" if at_once else "") if x)
    sessions = len(f.sessions)
    over = f" over {sessions} sessions (launch and resumes)" if sessions > 1 else ""
    wall = (f"the study took {duration(f.wall_seconds)} of wall time{over} from launch to its last trial"
            if f.wall_seconds is not None else "its wall time was not recorded")
    busy = (f"{duration(f.trial_seconds)} of trial time summed over its {f.trials} trials" if f.trial_seconds is not None
            else f"the run times of its {f.trials} trials were not recorded")
    return (f"Hardware: trials ran {where} ({'; '.join(parts)}; devices recorded by the trials: {devices}"
            f"{'; ' + sched if sched else ''}); {wall}, {busy}.")


def _software(f: RunFacts) -> str:
    commit = f.manifest.get("git_commit") or "unknown"
    ablate = f.packages.get("ablate")
    launch = versions_text(f) or "package versions not recorded at launch"
    return (f"Software: {launch}; ablate{' ' + ablate if ablate else ''} (git commit {commit}); analysis with "
            f"{analysis_versions_text(f)}.")


def methods(run: Run, comparisons: pd.DataFrame, lesion: bool = False, diag=None, f: RunFacts | None = None,
            budget: bool = False, repeated: bool = False) -> Methods:
    """The methods paragraph of this run and the works it cites (only those the run used; `budget`: the expected-max
    curves were reported, `repeated`: the repeats of the search)."""
    cite = _Cites()
    f = f or facts(run)
    parts = [_model(run, cite), _data(run, cite), _training(run, cite), _search(run, cite),
             _budget(run, budget, repeated, cite), _seeds(run, cite),
             _statistics(run, comparisons, cite), _diagnostics(lesion, diag, cite), _machine(run, f), _software(f)]
    text = " ".join(p for p in parts if p)
    # references.bib lists the works in the order the paragraph first cites them
    order = list(dict.fromkeys(re.findall(r"@([A-Za-z0-9_]+)", text)))
    return Methods(text, [k for k in order if k in cite.keys])
