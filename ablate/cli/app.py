"""The `ablate` command line: a thin layer over the package.

Bad input of any kind ends in one line on stderr and exit code 2, with nothing written. A failure of
ablate's own ends in one line and exit code 1, its traceback written to a file the line names (the
command's output folder when it has one). A study stopped by a fault of the machine ends in exit code 3 and
the command that finishes it. Ctrl-C ends in exit code 130, SIGTERM in 143.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import Optional

import typer

from ablate.cli.errors import OneLineErrors, error_folder, fail, handles_errors, save_traceback, say, timestamp
from ablate.messages import one_line
from ablate.cli.trial_options import given_settings, model_options, trial_options
from ablate.data import DATASETS
from ablate.errors import AblateError


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Ablation studies of residual connections: train, tune, analyse.",
)


DATA_DIR_HELP = "Data root (default: $ABLATE_DATA_DIR, else ~/.cache/ablate)."  # train, study and reproduce


def main() -> None:
    app()


def _version(value: bool) -> None:
    if value:
        from ablate import __version__

        typer.echo(f"ablate {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print ablate's version and exit.")) -> None:
    """Ablation studies of residual connections: train, tune, analyse."""


# --- train -----------------------------------------------------------------------------------------
@app.command()
@handles_errors
@trial_options()
def train(
    config: Optional[Path] = typer.Option(None, "--config", help="Trial YAML (e.g. a study's trials/<id>/config.yaml); flags override it."),
    settings: dict = None,  # one option per trial setting (ablate.cli.trial_options): --family ... --lr ... --compile
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    out: Optional[Path] = typer.Option(None, help="Run folder (default runs/train/<time>-<trial id>)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    save_weights: bool = typer.Option(False, "--save-weights", help="Also save the best-dev weights as weights.pt."),
) -> None:
    """Train one model and write config.yaml, metrics.json, curves.csv, grad_norms.csv and curves.png."""
    from tqdm import tqdm

    from ablate.data import canonical_dataset, load_splits
    from ablate.execute import check_folder_path
    from ablate.train import run_trial, write_trial_folder
    from ablate.spec import TrialConfig

    base = TrialConfig.from_yaml_file(config).to_dict() if config else {}
    # another family without a depth: its own default depth, not the config's
    given = given_settings(settings, base.get("family"))
    cfg = TrialConfig.from_dict(with_data_loader({**base, **given}, "dataset" in given), source="flags")
    cfg = cfg.replace(dataset=canonical_dataset(cfg.dataset))  # folder:PATH made absolute: it runs from anywhere
    folder = out or Path("runs") / "train" / f"{timestamp()}-{cfg.trial_id()}"
    check_folder_path(folder, "--out" if out is not None else "the run folder in this directory")
    if folder.exists() and not folder.is_dir():
        fail(f"{folder} is a file; pass a folder for --out")
    if folder.exists() and any(folder.iterdir()):
        fail(f"run folder {folder} exists and is not empty; choose another --out")
    _check_device(device)
    memory, limits = _trial_memory(cfg, device)  # before any data is loaded: a trial that cannot fit stops here
    # Loading first surfaces data problems before anything is written; the data cache makes it free.
    made: list[Path] = []
    if cfg.data_sha256:  # a data loader of the user's: imported (saying so) before anything is read
        from ablate.data import check_loader

        check_loader(cfg.dataset, cfg.data_file, cfg.data_sha256)
    with _memory_faults(memory, limits, folder, made):
        splits = load_splits(cfg.dataset, data_dir, cfg.train_size, cfg.dev_size, cfg.test_size,
                             seed=cfg.data_seed, image_size=cfg.image_size, data_file=cfg.data_file,
                             data_sha256=cfg.data_sha256)
        if splits.note:
            typer.echo(f"warning: {splits.note}", err=True)
        made += _make_folder(folder)
        error_folder(folder)  # a failure from here on leaves its traceback in the run folder
        bar = tqdm(total=None, unit="step", desc="train", file=sys.stderr, dynamic_ncols=True)

        def progress(step: int, total: int) -> None:
            bar.total = total
            bar.update(step - bar.n)

        def report(m: dict) -> None:
            bar.set_postfix(loss=f"{m['train_loss']:.3f}", dev_acc=f"{m['dev_acc']:.3f}", best=f"{m['best_dev_acc']:.3f}")

        try:
            result = run_trial(cfg, report, device=device, data_dir=data_dir, progress=progress,
                               keep_best_state=save_weights)
        finally:
            bar.close()
    write_trial_folder(folder, cfg, result, weights=save_weights)
    typer.echo(
        f"{result.status}: test accuracy {result.test_acc:.4f}, test loss {result.test_loss:.4f} "
        f"(best dev {result.best_dev_acc:.4f} at step {result.best_step}/{result.steps}, dataset {result.dataset}) "
        f"in {result.total_seconds:.1f} s"
    )
    typer.echo(f"wrote {folder}")


def with_data_loader(settings: dict, given: bool) -> dict:
    """A trial's settings with a data loader's source file and hash: found and hashed now (relative to the working
    directory) where --dataset names a loader, or taken as a --config recorded them; none for another dataset."""
    from ablate.data import is_user_data
    from ablate.spec import parse_data

    if given or not settings.get("data_sha256"):
        settings = {k: v for k, v in settings.items() if k not in ("data_file", "data_sha256")}
        if is_user_data(settings.get("dataset")):
            ref = parse_data(settings["dataset"], None, "--dataset")
            settings.update(data_file=ref.file, data_sha256=ref.sha256)
    return settings


def _make_folder(folder: Path) -> list[Path]:
    """Make the output folder before training, so that an unwritable --out costs nothing; a failure leaves
    none of the parents it made. Returns the folders it made, deepest first."""
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        for parent in made:
            try:
                parent.rmdir()
            except OSError:
                pass
        raise AblateError(f"cannot create {folder}: {exc.strerror or exc}; choose another --out") from None
    return made


def _trial_memory(cfg, device: str | None):
    """The trial's estimated peak memory and the limits it runs under (this machine's, or its GPU's); refuses a
    trial that can never fit (one line, exit 2) and warns of one that may not fit in what is free now."""
    import torch

    from ablate.data import expected_shape
    from ablate.execute import process_baseline, trial_memory
    from ablate.machine_memory import gpu_memory, memory_limits

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = dev.type == "cuda"
    limits = gpu_memory(dev.index if dev.index is not None else torch.cuda.current_device()) if on_gpu else \
        memory_limits()
    memory = trial_memory(cfg, *expected_shape(cfg.dataset), process_baseline(), device=on_gpu)
    never = memory.cannot_fit(limits)
    if never:
        raise AblateError(f"this trial {never}: it cannot run here; lower image_size or batch_size")
    short = memory.not_now(limits)
    if short:
        typer.echo(one_line(f"warning: this trial {short}; it may run out of memory"), err=True)
    return memory, limits


@contextlib.contextmanager
def _memory_faults(memory, limits, folder: Path, made: list[Path]):
    """Memory running out inside the trial: one line, exit 2 when the config can never fit here, 3 when other
    programs held the memory (ablate.execute.estimate.out_of_memory); the run folder it made is removed (it holds
    nothing yet: the trial's files are written at its end)."""
    from ablate.execute import out_of_memory
    from ablate.machine_memory import is_out_of_memory

    try:
        yield
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        code, text = out_of_memory(exc, memory, limits)
        for path in made:  # deepest first; a folder that holds anything stays
            try:
                path.rmdir()
            except OSError:
                break
        typer.echo(one_line(f"error: {text}"), err=True)
        raise typer.Exit(code) from None


def _check_device(device: str | None) -> None:
    """cpu, cuda or cuda:N with a GPU N: ablate trains on nothing else (meta, mps, xla ... would fail mid-run)."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise AblateError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AblateError(f"device {device!r} asked for but no CUDA GPU is available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise AblateError(f"device {device!r} asked for but only {torch.cuda.device_count()} GPU(s) are visible "
                          f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")


# --- models ----------------------------------------------------------------------------------------
@app.command()
@handles_errors
@model_options
def summary(
    settings: dict = None,  # one option per model axis (ablate.cli.trial_options): --family, --depth, --plain ...
    in_channels: int = typer.Option(1, help="Input channels."),
    num_classes: int = typer.Option(10, help="Output classes."),
    input_size: int = typer.Option(32, help="Input height and width."),
) -> None:
    """Per-layer table (output shape, params, MACs) and totals; MACs counted by torch's FlopCounterMode."""
    from ablate.models import build_model, format_summary, summarize
    from ablate.spec import TrialConfig, limits

    spec = TrialConfig.from_dict(given_settings(settings), source="flags").model
    if input_size < 8:
        fail(f"--input-size must be at least 8, got {input_size}")
    limits.check_at_most(input_size, limits.MAX_IMAGE_SIZE, "--input-size")
    limits.check_at_most(in_channels, limits.MAX_CHANNELS, "--in-channels")
    limits.check_at_most(num_classes, limits.MAX_CLASSES, "--num-classes")
    model = build_model(spec, in_channels, num_classes)
    typer.echo(format_summary(summarize(model, in_channels=in_channels, input_size=input_size)))


@app.command("verify-torchvision")
@handles_errors
def verify_torchvision_cmd(
    seed: int = typer.Option(0, help="Seed for the weights and the input batch."),
    tolerance: float = typer.Option(1e-5, help="Largest allowed absolute difference."),
) -> None:
    """Copy torchvision's resnet18 weights into ablate's ResNet18 and compare outputs (exit 0 iff equal within tolerance)."""
    from ablate.models import verify_torchvision
    from ablate.spec import check_seed

    check_seed(seed, "--seed")
    diff = verify_torchvision(seed=seed)
    verdict = "match" if diff <= tolerance else "MISMATCH"
    typer.echo(f"max |torchvision - ablate| = {diff:.3e} (tolerance {tolerance:g}): {verdict}")
    raise typer.Exit(0 if diff <= tolerance else 1)


# --- studies ---------------------------------------------------------------------------------------
@app.command()
@handles_errors
def study(
    name: Optional[str] = typer.Argument(None, help="Study name from studies/ or a path to a spec .yaml; omit to list them."),
    budget: Optional[str] = typer.Option(None, help="smoke, default or full (default: default)."),
    sampler_seed: Optional[int] = typer.Option(None, "--sampler-seed", help="Replace the spec's search.sampler_seed: "
                                               "it seeds TPE's proposals and which tuning seeds train each point."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print arms, search, trial counts and resources; run nothing."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<study>/<time>)."),
    resume: Optional[Path] = typer.Option(None, help="Finish an interrupted run folder: only what is missing runs."),
    dataset: Optional[str] = typer.Option(None, help=f"Override the spec's dataset: {', '.join(DATASETS[:-1])}, folder:PATH, or a data loader of yours: MODULE:FUNCTION or FILE.py:FUNCTION."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    cpus: Optional[int] = typer.Option(None, help="CPUs to use (default: all)."),
    gpus: Optional[int] = typer.Option(None, help="GPUs to use, a whole number (default: all visible)."),
    gpus_per_trial: Optional[float] = typer.Option(None, help="GPU share per trial (default: chosen from img/s measured for 1, 2, 4 and 8 trials at once on the GPU; see the dry run)."),
    address: Optional[str] = typer.Option(None, help="Attach to a running Ray cluster (HOST:PORT) instead of starting one."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL, e.g. postgresql://user@host/db (default: optuna.db in the run folder)."),
    retries: int = typer.Option(1, help="Times a failed trial is retried; then a failure its config raised on every attempt is its result (error), anything else (worker died, disk full, ...) stops the study (exit 3) for --resume."),
    stall_seconds: int = typer.Option(300, "--stall-seconds", help="A trial with no progress for max(this, 20 x its slowest step so far) seconds, or 6 x this before its first step (worker start, data, model, torch.compile: 30 minutes by default), is stalled: its worker is killed and the trial retried (--retries), else the study stops (exit 3) for --resume. 1 to 604,800; default 300."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also write TensorBoard event files (curves, hyper-parameters) to RUN/tensorboard."),
    fuse: str = typer.Option("off", help="Train trials that differ only in seed/lr/momentum/weight decay as one model batched over them: off (the default: fusing changes a trial's numbers slightly), auto (on a GPU when measured faster, never on a CPU) or the members per model; fused trials are marked in trials.csv (fused_with)."),
) -> None:
    """Run a study: per-arm search in reproducible rounds (Optuna TPE through Ray Tune, optional successive
    halving), then the best config of each arm over seeds."""
    from ablate import api
    from ablate.execute import process_baseline
    from ablate.spec import list_studies
    from ablate.engine import StudyInterrupted, StudyStopped, interrupt_signal, terminate_like_ctrl_c

    terminate_like_ctrl_c()  # SIGTERM stops a study as Ctrl-C does, whenever it comes
    from ablate.engine import check_stall_seconds

    check_stall_seconds(stall_seconds)
    if name is None and resume is None:
        for study_name, description in list_studies():
            typer.echo(f"{study_name:20s} {description}")
        return
    if tensorboard:
        from ablate.engine import check_available

        check_available()
    baseline = process_baseline() if dry_run else 0  # before any data is loaded: what a trial's process starts from
    planned = api.plan(name, resume=resume, budget=budget, dataset=dataset, out=out, data_dir=data_dir, cpus=cpus,
                       gpus=gpus, gpus_per_trial=gpus_per_trial, address=address, storage=storage, retries=retries,
                       fuse=fuse, sampler_seed=sampler_seed, stall_seconds=stall_seconds, tensorboard=tensorboard)
    plan = planned.launch
    for note in plan.notes:
        typer.echo(f"warning: {note}", err=True)
    if dry_run:
        _print_plan(plan.spec, plan.resources, baseline)
        for line in plan.gpu.lines():  # trials per GPU, cores per trial, fusing, and where the numbers came from
            typer.echo(line)
        return
    try:  # from the moment the run folder exists (error_folder), an interruption says how to finish it
        api.execute(planned, echo=typer.echo, on_folder=error_folder)
    except (StudyInterrupted, KeyboardInterrupt) as exc:
        if planned.run_dir is None:  # before the run folder was made: nothing to finish
            raise
        signum = interrupt_signal(exc)
        say(StudyInterrupted.line(signum, planned.run_dir))  # dropped where stderr's reader has gone (2>&1 | tee)
        raise typer.Exit(128 + signum)
    except StudyStopped as exc:  # a fault of the machine; a failed trial's traceback is in its own folder
        where = f" ({save_traceback(exc.__cause__)})" if exc.__cause__ is not None else ""
        typer.echo(one_line(f"error: {exc.what}{where}; {exc.hint}"), err=True)
        raise typer.Exit(3)


def _print_plan(spec, resources, baseline: int) -> None:
    typer.echo(f"study {spec.name} (budget {spec.budget}): {spec.description}")
    typer.echo(f"arms ({len(spec.arms)}):")
    for arm in spec.arms:
        typer.echo(f"  {arm.name}: {arm.settings}")
    if spec.space:
        typer.echo("search space:")
        for p in spec.space:
            bounds = f"{list(p.choices)}" if p.choices else f"[{p.low:g}, {p.high:g}]"
            typer.echo(f"  {p.name}: {p.distribution} {bounds}")
        if spec.sampler == "grid":
            values = {p.name: list(dict.fromkeys(point[p.name] for point in spec.search_points)) for p in spec.space}
            typer.echo("grid: " + "; ".join(f"{name} {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vs)}"
                                            for name, vs in values.items()))
        per_arm = spec.trials_per_arm * len(spec.tuning_seeds()) * spec.repeats
        n_seeds = len(spec.tuning_seeds())
        how = f"{spec.trials_per_arm} points x {n_seeds} tuning seed{'s' if n_seeds > 1 else ''}" + (
            f" x {spec.repeats} repeats of the search" if spec.repeats > 1 else "")
        typer.echo(f"stage tune: {how} = {per_arm} trials per arm x {len(spec.arms)} arms = "
                   f"{per_arm * len(spec.arms)} trials")
        typer.echo(f"sampler: {spec.sampler_text()}")
    if spec.grid:
        typer.echo(f"grid: {spec.grid}")
    per_arm = len(spec.seeds) * (len(spec.grid_points()) if spec.grid else 1)
    final = spec.stages[-1]
    if spec.seed_rule:
        typer.echo(f"stage {final}: at most {per_arm} trials per arm x {len(spec.arms)} arms = {per_arm * len(spec.arms)} "
                   f"trials ({spec.seed_rule.text()}; the estimate below assumes the most)")
    else:
        typer.echo(f"stage {final}: {per_arm} trials per arm x {len(spec.arms)} arms = {per_arm * len(spec.arms)} trials (seeds {spec.seeds})")
    device = f"each on a {resources.gpu_share():g} share of a GPU" if resources.gpus else "on the CPU"
    typer.echo(f"resources: {resources.cpus} CPUs, {resources.gpus} GPUs; {resources.threads} threads per trial "
               f"(from the spec), {resources.concurrency()} trials at a time {device}; dataset {spec.base['dataset']}")
    from ablate.execute import estimate_study, study_memory, trial_memory
    from ablate.data import expected_shape

    memory = study_memory(spec, resources, baseline)
    for line in memory.lines():
        typer.echo(line)
    for line in memory.warnings():
        typer.echo(one_line(f"warning: {line}"), err=True)
    cpu = memory if not memory.trial.device else study_memory(spec, dataclasses.replace(resources, gpus=0), baseline)

    def fits(cfg) -> bool:  # the step timing below trains a few steps of it in this process, on the CPU
        return trial_memory(cfg, *expected_shape(cfg.dataset), baseline).not_now(cpu.limits) is None

    for line in estimate_study(spec, resources.concurrency(), fits).lines():
        typer.echo(line)


# --- analysis --------------------------------------------------------------------------------------
@app.command("analyze")
@handles_errors
def analyze_cmd(
    run_dir: Optional[Path] = typer.Argument(None, help="Study run folder (default: the newest under runs/)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default RUN_DIR/analysis)."),
    lesion: bool = typer.Option(False, "--lesion", help="Also drop each residual block in turn at test time (needs weights.pt)."),
    lesion_recalibrate: bool = typer.Option(False, "--lesion-recalibrate", help="With --lesion: re-estimate the BatchNorm statistics on the training images after each lesion (default: keep those of training, as Veit et al. 2016)."),
    diagnostics: bool = typer.Option(False, "--diagnostics", help="Also measure loss landscapes, shattered gradients, signal propagation and k-block lesions per arm (see docs/benchmarks.md for the cost)."),
    landscape_2d: bool = typer.Option(False, "--landscape-2d", help="With --diagnostics: add a 21x21 loss landscape plane per arm."),
    min_effect: Optional[float] = typer.Option(None, "--min-effect", metavar="PP", help="The difference (percentage points of test accuracy) the seeds-for-80%-power line asks about (default: the observed one)."),
    no_figures: bool = typer.Option(False, "--no-figures", help="Tables, statistics and reports without drawing figures (0.2 s instead of 4.2 s for a small two-arm run here); the report lists the figures as not drawn, and figures of an earlier analysis in the folder are removed."),
) -> None:
    """Figures, summary tables, statistics, report.md, report.html, methods.md and references.bib for a finished (or partly finished) study."""
    from ablate import api
    from ablate.analysis import NOT_DRAWN, check_min_effect, check_out, integrity_notes, latest_run

    check_min_effect(min_effect)
    check_out(out)
    if landscape_2d and not diagnostics:
        fail("--landscape-2d adds to --diagnostics; pass both")
    if lesion_recalibrate and not lesion:
        fail("--lesion-recalibrate adds to --lesion; pass both")

    def progress(i: int, n: int, trial: dict) -> None:
        typer.echo(f"diagnostics {i + 1}/{n}: {trial['arm']}, seed {trial['seed']}", err=True)

    _runs_inside(run_dir, "analyze")
    result = api.analyze(run_dir or latest_run(), out, lesion=lesion, lesion_recalibrate=lesion_recalibrate,
                         diagnostics=diagnostics, landscape_2d=landscape_2d, progress=progress, min_effect=min_effect,
                         figures=not no_figures)
    error_folder(result.out_dir)
    typer.echo(result.table)
    for line in result.missing:
        typer.echo(f"missing: {line}", err=True)
    for note in integrity_notes(result.run_dir):
        typer.echo(f"note: {note}", err=True)
    if no_figures:
        typer.echo("figures: not drawn (--no-figures)", err=True)
    for name, why in result.skipped.items():
        if not (no_figures and why == NOT_DRAWN):
            typer.echo(f"skipped {name}: {why}", err=True)
    typer.echo(f"wrote {result.report}, {result.html.name}, {result.methods.name} and {result.references.name}")


def _runs_inside(run_dir: Path | None, command: str) -> None:
    """A folder that is no study run but holds some (runs/NAME, runs/): one line listing them, newest first, and the
    command for the latest."""
    import shlex

    from ablate.analysis import study_runs
    from ablate.run_folder import SPEC

    if run_dir is None or not run_dir.is_dir() or (run_dir / SPEC).is_file():
        return
    runs = study_runs(run_dir)
    if not runs:
        return
    shown = ", ".join(r.relative_to(run_dir).as_posix() for r in runs[:3])
    more = f" and {len(runs) - 3} more" if len(runs) > 3 else ""
    fail(f"{run_dir} is not a study run folder but holds {len(runs)} run{'s' if len(runs) > 1 else ''}, newest first: "
         f"{shown}{more}; for the latest: ablate {command} {shlex.quote(str(runs[0]))}")


@app.command("export")
@handles_errors
def export_cmd(
    run_dir: Path = typer.Argument(..., help="Study run folder."),
    fmt: str = typer.Option("latex", "--format", help="latex, csv or markdown."),
    configs: Optional[Path] = typer.Option(None, "--configs", help="Also copy every confirm-stage trial config here."),
) -> None:
    """Print the summary table for a paper, and optionally copy the exact trial configs behind it."""
    from ablate.analysis import check_configs_dest, export, export_configs, integrity_notes

    _runs_inside(run_dir, "export")
    if configs is not None:
        check_configs_dest(configs)  # a non-empty folder that is not an earlier export is refused before anything runs
    text = export(run_dir, fmt)  # everything is checked and made before anything is printed or copied
    copied = export_configs(run_dir, configs) if configs is not None else None
    typer.echo(text, nl=False)
    if copied is not None:
        typer.echo(f"copied {len(copied)} configs to {configs}", err=True)
    for note in integrity_notes(run_dir):
        typer.echo(f"note: {note}", err=True)


@app.command()
@handles_errors
def reproduce(
    config: Path = typer.Argument(..., help="A trial's config.yaml (RUN_DIR/trials/<id>/config.yaml) or its folder."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    device: Optional[str] = typer.Option(None, help="cpu, cuda ... (default: the device the trial recorded)."),
    allow_changed: bool = typer.Option(False, "--allow-changed", help="Rerun a user model or data loader whose "
                                       "source file no longer hashes to what the trial recorded (the result says so)."),
) -> None:
    """Rerun one trial and compare with what was recorded; exit 0 iff identical."""
    from ablate.train import reproduce_trial as rerun

    _check_device(device)
    report = rerun(config, data_dir, device=device, allow_changed=allow_changed)
    typer.echo(report.format())
    raise typer.Exit(0 if report.identical else 1)
