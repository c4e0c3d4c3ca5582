"""The Python API: a study's whole cycle from a script or a notebook, through the very functions the command line runs
(`ablate study` is `plan` then `execute`, as `run` is; `ablate analyze` is `analyze`).

    import ablate

    study = ablate.load_study("residual-ablation", budget="smoke")   # or a .yaml path, or a spec dict
    run_dir = ablate.run(study, out="runs/mine")                       # the run folder
    result = ablate.analyze(run_dir)                                   # figures, tables, report.md
    tables = ablate.load_run(run_dir)                                  # trials, confirm, comparisons: DataFrames

Bad input raises ablate.errors.AblateError, whose message is the line the command line prints after "error: ".
Loading a study needs no torch; this module imports nothing heavy until a function needs it.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ablate.errors import AblateError

if TYPE_CHECKING:
    import pandas as pd

    from ablate.analysis import Run
    from ablate.execute import launch as L
    from ablate.spec import Study


def load_study(study: str | Path | dict, budget: str | None = None, sampler_seed: int | None = None,
               dataset: str | None = None) -> Study:
    """The study a run would start, parsed and checked (no torch, nothing written).

    `study`: a shipped study's name (`ablate study` lists them), a path to a spec .yaml, or a spec document as a
    dict (the same keys as the YAML; read by the same parser). `budget`: smoke, default or full (default: default).
    `sampler_seed` replaces the spec's search.sampler_seed (a name or path only: a dict carries its own).
    `dataset` replaces the spec's dataset (mnist, digits, ..., folder:PATH, or a data loader MODULE:FUNCTION or
    FILE.py:FUNCTION, found from the working directory). Raises AblateError naming the problem, as `ablate study`
    prints it."""
    from ablate.execute import launch as L

    return L.new_study(study, budget, dataset, sampler_seed)[0]


def _echo(text: str, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


@dataclass
class Plan:
    """A study's run, decided and checked, nothing written yet: the launch (spec, resources, run id, GPU plan,
    notes; ablate.execute.launch.Launch) and the options of the run itself."""

    launch: L.Launch
    out: Path | None = None
    data_dir: Path | None = None
    tensorboard: bool = False
    stall_seconds: int | None = None

    @property
    def run_dir(self) -> Path | None:
        """The run folder: the resumed one, or the new one once `execute` has made it (None before)."""
        return self.launch.run_dir


def plan(study: str | Path | dict | Study | None = None, *, resume: str | Path | None = None, out: str | Path | None = None,
         budget: str | None = None, dataset: str | None = None, sampler_seed: int | None = None,
         data_dir: str | Path | None = None, cpus: int | None = None, gpus: int | None = None,
         gpus_per_trial: float | None = None, address: str | None = None, storage: str | None = None,
         retries: int = 1, stall_seconds: int | None = None, tensorboard: bool = False, fuse: str = "off") -> Plan:
    """Everything a run decides before it writes anything (the spec, resources, data, GPU plan, fusing), every
    input checked; the arguments are `run`'s. Raises AblateError on bad input."""
    from ablate.engine import check_available, check_stall_seconds
    from ablate.execute import launch as L

    if stall_seconds is not None:
        check_stall_seconds(stall_seconds)
    if study is None and resume is None:
        raise AblateError("name a study (a name, a spec .yaml, a spec dict or a Study) or a run folder to resume")
    if tensorboard:
        check_available()
    out, resume, data_dir = (Path(p) if p is not None else None for p in (out, resume, data_dir))
    launch = L.prepare(study, resume, budget=budget, dataset=dataset, out=out, data_dir=data_dir, cpus=cpus,
                       gpus=gpus, gpus_per_trial=gpus_per_trial, address=address, storage=storage, retries=retries,
                       fuse=fuse, sampler_seed=sampler_seed)
    return Plan(launch, out, data_dir, tensorboard, stall_seconds)


@dataclass
class Outcome:
    """What `execute` did: the run folder, whether any trial ran (a finished folder resumed runs none), the
    registry's rows when it ended, and the seconds it took."""

    run_dir: Path
    ran: bool
    rows: int
    seconds: float


def execute(planned: Plan, echo: Callable[..., None] = _echo,
            on_folder: Callable[[Path], None] | None = None) -> Outcome:
    """Run a planned study: make its run folder (a new run), run every stage with a live progress bar (tqdm: a
    terminal line, a widget in a notebook) and say what it did through `echo(text, err=False)`: the start
    line, then the trial rows written and the summary table, or that a resumed run had nothing left.
    `on_folder(run_dir)` is called once the run folder exists. An interruption (Ctrl-C, SIGTERM) raises
    ablate.engine.StudyInterrupted, a fault of the machine ablate.engine.StudyStopped: both leave the folder
    to finish with `resume`."""
    from ablate.engine import run_study
    from ablate.execute import launch as L
    from ablate.run_folder import TRIALS_CSV, read_registry

    launch = planned.launch
    resumed = launch.resumed
    run_dir = L.start(launch, planned.out)
    if on_folder is not None:
        on_folder(run_dir)
    t0 = time.perf_counter()
    ran = []

    def started() -> None:  # the study holds the run folder's lock and has work left
        ran.append(True)
        if resumed:
            L.record_resume(launch)
        echo(f"study {launch.spec.name} ({launch.spec.budget}) -> {run_dir}", err=True)

    options = {"stall_seconds": planned.stall_seconds} if planned.stall_seconds is not None else {}
    run_study(launch.spec, run_dir, launch.resources, str(planned.data_dir) if planned.data_dir else None,
              storage=launch.storage, retries=launch.retries, run_id=launch.run_id, tensorboard=planned.tensorboard,
              fuse=launch.fuse, on_start=started, **options)
    rows = read_registry(run_dir)
    seconds = time.perf_counter() - t0
    if not ran:  # resuming a finished run: every planned trial has its result
        echo(f"nothing to run: {run_dir} is finished (no trial ran; {len(rows)} trial rows in "
             f"{run_dir / TRIALS_CSV}); figures, statistics and a report: ablate analyze {run_dir}")
        return Outcome(run_dir, False, len(rows), seconds)
    echo(f"done in {seconds:.0f} s: {len(rows)} trial rows in {run_dir / TRIALS_CSV}")
    from ablate.analysis import terminal_table

    try:
        echo(terminal_table(run_dir))
    except AblateError as exc:  # e.g. every final-stage trial failed: the run is still complete
        echo(f"no table: {exc}", err=True)
    echo(f"figures, statistics and a report: ablate analyze {run_dir}")
    return Outcome(run_dir, True, len(rows), seconds)


def run(study: str | Path | dict | Study | None = None, out: str | Path | None = None, *, resume: str | Path | None = None,
        cpus: int | None = None, gpus: int | None = None, budget: str | None = None, dataset: str | None = None,
        sampler_seed: int | None = None, data_dir: str | Path | None = None, gpus_per_trial: float | None = None,
        address: str | None = None, storage: str | None = None, retries: int = 1, stall_seconds: int | None = None,
        tensorboard: bool = False, fuse: str = "off") -> Path:
    """Run a study, as `ablate study` does, and return its run folder.

    `study`: a Study (load_study), a shipped name, a spec .yaml path or a spec dict; `budget`, `sampler_seed` and
    `dataset` apply to a name, path or dict as in load_study. `out`: the run folder (default
    runs/<study>/<time> under the working directory). `resume`: a run folder to finish instead (only what is
    missing runs; a finished one runs nothing); `study` is then left out or the run's own. The other arguments are
    the command's options of the same names (`ablate study --help`): `cpus`, `gpus`, `gpus_per_trial`,
    `data_dir`, `address` (a Ray cluster), `storage` (an Optuna storage URL), `retries`, `stall_seconds`
    (default 300), `tensorboard`, `fuse` (off, auto or the members per model).

    A progress bar shows finished trials per stage (tqdm.auto: a line in a terminal, a widget in a notebook
    where ipywidgets is installed, else a text line); warnings and the start line go to stderr, the summary
    table to stdout. Bad input raises AblateError before anything is written; Ctrl-C raises
    ablate.engine.StudyInterrupted and a fault of the machine ablate.engine.StudyStopped, each after saying how
    to finish the run (`run(resume=run_dir)`)."""
    from ablate.engine import StudyInterrupted, interrupt_signal

    planned = plan(study, resume=resume, out=out, budget=budget, dataset=dataset, sampler_seed=sampler_seed,
                   data_dir=data_dir, cpus=cpus, gpus=gpus, gpus_per_trial=gpus_per_trial, address=address,
                   storage=storage, retries=retries, stall_seconds=stall_seconds, tensorboard=tensorboard, fuse=fuse)
    for note in planned.launch.notes:
        _echo(f"warning: {note}", err=True)
    try:
        return execute(planned).run_dir
    except (StudyInterrupted, KeyboardInterrupt) as exc:
        if planned.run_dir is not None:
            _echo(StudyInterrupted.line(interrupt_signal(exc), planned.run_dir), err=True)
        raise


def analyze(run_dir: str | Path, out: str | Path | None = None, **options: Any):
    """Analyse a run folder, as `ablate analyze` does: figures, summary and comparison tables, report.md,
    report.html, methods.md and references.bib in `out` (default run_dir/analysis). Returns the
    ablate.analysis.AnalysisResult (paths of what it wrote, and the summary and comparisons as DataFrames).
    `options` are ablate.analysis.analyze's: lesion, lesion_recalibrate, diagnostics, landscape_2d,
    min_effect, figures (False: tables and reports without figures, in a fraction of the time)."""
    from ablate.analysis import analyze as analyze_run

    return analyze_run(Path(run_dir), Path(out) if out is not None else None, **options)


@dataclass
class RunTables:
    """A run folder's results as tables (pandas DataFrames), read as `ablate analyze` reads them; nothing is
    computed here that the analysis does not compute the same way (ablate.analysis.load_run,
    ablate.analysis.paired_verdicts).

    `trials`: every registered trial, one row each, in registry order. Columns: trial_id, stage (tune, confirm or
    grid), arm, one column per setting that differs between trials (the factors, searched or grid parameters;
    as the trial's config.yaml recorded it), seed, status (ok, diverged, stopped, error), dataset, best_dev_acc,
    best_step, test_acc, test_loss (of the best-dev checkpoint), final_test_acc, final_test_loss (at the last
    step), scored_train_acc, scored_train_loss, final_train_loss, steps (run), total_steps (configured), and the
    registry's other fields (timings, attempts, fused_with, ...). Accuracies are fractions (0.93), not percent.

    `confirm`: the rows behind the headline numbers: the final stage (confirm; grid for a grid study) of each
    arm's reported configuration, with the columns of `trials`.

    `comparisons`: one row per pair of scored arms, paired by seed (diff = arm_a - arm_b), exactly as
    analysis/comparisons.csv holds it. Columns include arm_a, arm_b, mean_a, mean_b, n_pairs, seeds, diff,
    diff_ci_low, diff_ci_high (the 95 % interval), p_sign_flip, p_t, p_holm, effect_size, verdict (supported, no
    meaningful difference, inconclusive, untested), why, and the power columns (ablate.analysis.statistics.power).

    `selected`: per arm, the parameters it was confirmed at (tuned, or the chosen grid point). `study`: the spec as
    run. `run`: the whole parsed run (ablate.analysis.Run) for anything else."""

    run_dir: Path
    study: Study
    trials: pd.DataFrame = field(repr=False)
    confirm: pd.DataFrame = field(repr=False)
    comparisons: pd.DataFrame = field(repr=False)
    selected: dict[str, dict[str, Any]] = field(default_factory=dict)
    run: Run | None = field(default=None, repr=False)


def load_run(run_dir: str | Path, min_effect: float | None = None) -> RunTables:
    """A study run folder (finished, or with some final-stage trials finished) as RunTables: trials, confirm
    results and the paired comparisons. No torch. `min_effect` (percentage points) as in analyze. Raises
    AblateError when the folder is not a run or has no finished final-stage trial."""
    from ablate.analysis import check_min_effect, load_run as parse_run, paired_verdicts

    check_min_effect(min_effect)
    parsed = parse_run(Path(run_dir))
    return RunTables(parsed.run_dir, parsed.study, parsed.trials, parsed.reported,
                     paired_verdicts(parsed, min_effect), parsed.selected, parsed)

