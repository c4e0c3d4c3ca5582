"""Runs a study's stages on Ray Tune: the only module that imports Ray.

Tuning: one Tuner per arm (its own OptunaSearch study in optuna.db and its own ASHA, so arms never
compete for early-stopping slots). Confirm/grid stages: one Tuner over every missing trial of the stage.
Workers write the trial folders; the driver appends a registry row as each trial ends, so a crash
loses at most the trials in flight.
"""
from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AblateError
from .outputs import atomic_write_text
from .runs import append_registry, best_params, read_registry, registry_row, trials_csv
from .study import PlannedTrial, Study, plan_fixed_stage
from .trial import TrialConfig

FINISHED = ("ok", "diverged")


@dataclass(frozen=True)
class Resources:
    cpus: int
    gpus: float = 0.0
    gpus_per_trial: float | None = None
    address: str | None = None

    def gpu_share(self) -> float:
        """Trials share a GPU (4 to a GPU by default): small models leave most of one idle."""
        return 0.0 if self.gpus <= 0 else (self.gpus_per_trial or min(1.0, 0.25))

    def concurrency(self) -> int:
        return max(1, int(self.gpus / self.gpu_share() + 1e-9)) if self.gpus > 0 else max(1, self.cpus)

    def cpus_per_trial(self) -> int:
        """CPUs per trial so that the machine is full; torch threads = CPUs given."""
        return max(1, self.cpus // self.concurrency())


def check_address(address: str, timeout: float = 3.0) -> None:
    """Fail fast, before any folder exists, when nobody listens at a Ray cluster address."""
    if address == "auto":
        return
    host, _, port = address.replace("ray://", "").rpartition(":")
    if not host or not port.isdigit():
        raise AblateError(f"--address {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise AblateError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with 'ray start --head' or drop --address") from None


def _finished(folder: Path) -> dict[str, Any] | None:
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if metrics.get("status") in FINISHED else None


def train_trainable(params: dict[str, Any], job: dict[str, Any]) -> None:
    """Ray Tune function trainable: one trial, written to run_dir/trials/<id>/ by the worker itself."""
    from ray import tune

    from .outputs import write_trial_folder
    from .trial import run_trial

    if "config" in params:
        cfg = TrialConfig.from_dict(params["config"])
    else:
        tuned = {k: v for k, v in params.items() if k != "arm"}
        cfg = TrialConfig.from_dict({**job["bases"][params["arm"]], **tuned})
    trial_id = cfg.trial_id()
    folder = Path(job["run_dir"]) / "trials" / trial_id
    done = _finished(folder)
    if done is not None:  # same config finished before (resume, or a repeated proposal): reuse it
        tune.report({"trial_id": trial_id, "best_dev_acc": done["best_dev_acc"], "reused": True})
        return
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.yaml", cfg.to_yaml())
    import ray

    where = {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid(),
             "started_at": time.time()}
    try:
        result = run_trial(cfg, report=lambda m: tune.report({**m, "trial_id": trial_id}), data_dir=job["data_dir"])
    except Exception as exc:  # a crashing trial is recorded; the study goes on
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        atomic_write_text(folder / "metrics.json", json.dumps({"trial_id": trial_id, "status": "error", "error": text}))
        return
    write_trial_folder(folder, cfg, result, extra={**where, "ended_at": time.time()}, plot=False)


def _callback_class():
    from ray.tune import Callback

    class ForwardingCallback(Callback):
        """Hands Ray's trial events to a StudyCallback; holds no closure, so Ray can pickle it."""

        def __init__(self, outer):
            self.outer = outer

        def __getstate__(self):
            # Ray pickles callbacks into its experiment snapshot; the live display stays behind.
            return {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.outer.running += 1
            self.outer._refresh()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "dev_acc" in result:
                self.outer.curves.setdefault(trial.trial_id, []).append(
                    {k: result.get(k) for k in ("step", "train_loss", "dev_loss", "dev_acc")})

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.outer.finish(trial, error=None)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.outer.finish(trial, error=str(getattr(trial, "error_msg", None) or "trial worker failed"))

    return ForwardingCallback


class StudyCallback:
    """Driver side: registry rows, trials.csv and the live progress line, as trials end."""

    def __init__(self, study: Study, run_dir: Path, stage: str, total: int,
                 planned: dict[str, PlannedTrial] | None = None):
        from tqdm import tqdm

        self.study, self.run_dir, self.stage, self.planned = study, run_dir, stage, planned or {}
        self.curves: dict[str, list[dict]] = {}
        self.running = 0
        self.bar = tqdm(total=total, desc=stage, unit="trial", file=sys.stderr, dynamic_ncols=True)
        self.best: dict[str, float] = {}
        self.callback = _callback_class()(self)

    def _refresh(self) -> None:
        best = " ".join(f"{a}:{v:.3f}" for a, v in self.best.items())
        self.bar.set_postfix_str(f"running {self.running} best {best}" if best else f"running {self.running}")

    def finish(self, trial, error: str | None) -> None:
        self.running = max(0, self.running - 1)
        config = trial.config
        if "config" in config:
            cfg = TrialConfig.from_dict(config["config"])
            planned = self.planned[cfg.trial_id()]
        else:
            arm = next(a for a in self.study.arms if a.name == config["arm"])
            tuned = {k: v for k, v in config.items() if k != "arm"}
            cfg = self.study.arm_config(arm, **tuned)
            planned = PlannedTrial(self.stage, arm.name, cfg, tuned)
        folder = self.run_dir / "trials" / planned.trial_id
        last = trial.last_result or {}
        metrics = _read_metrics(folder)
        if metrics is None or metrics.get("status") not in ("ok", "diverged", "error"):
            # Stopped early by ASHA, or the worker died: keep what Ray saw of it.
            status = "error" if error else "stopped"
            best = max((r.get("dev_acc") or 0.0 for r in self.curves.get(trial.trial_id, [])), default=0.0)
            metrics = {"trial_id": planned.trial_id, "status": status, "best_dev_acc": best,
                       "train_seconds": last.get("time_total_s"), "total_seconds": last.get("time_total_s"),
                       "error": error}
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "config.yaml").exists():
                atomic_write_text(folder / "config.yaml", cfg.to_yaml())
            rows = self.curves.get(trial.trial_id, [])
            atomic_write_text(folder / "curves.csv", "step,train_loss,dev_loss,dev_acc\n" + "".join(
                f"{r['step']},{r['train_loss']},{r['dev_loss']},{r['dev_acc']}\n" for r in rows))
            atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2))
        append_registry(self.run_dir, registry_row(planned, metrics))
        write_trials_csv(self.study, self.run_dir)
        if metrics.get("best_dev_acc") is not None:
            self.best[planned.arm] = max(self.best.get(planned.arm, 0.0), metrics["best_dev_acc"])
        self.bar.update(1)
        self._refresh()

    def close(self) -> None:
        self.bar.close()


def _read_metrics(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_trials_csv(study: Study, run_dir: Path) -> None:
    atomic_write_text(run_dir / "trials.csv", trials_csv(study, read_registry(run_dir)))


def _ray_env(address: str | None) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "16")
    if address is None:
        # Keeps a local Ray on 127.0.0.1 instead of the machine's network address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _temp_dir(run_dir: Path) -> Path:
    """Ray's session files inside the run folder, unless its socket paths would pass the 107-byte limit."""
    inside = run_dir.resolve() / "ray_tmp"
    if len(str(inside)) <= 50:
        return inside
    short = Path("/tmp") / f"ablate-{abs(hash(str(inside))) % 10**8:08d}"
    short.mkdir(parents=True, exist_ok=True)
    link = run_dir / "ray_tmp"
    if not link.exists():
        link.symlink_to(short, target_is_directory=True)
    return short


def start_ray(run_dir: Path, resources: Resources) -> None:
    import ray

    _ray_env(resources.address)
    if resources.address:
        ray.init(address=resources.address, logging_level="WARNING", log_to_driver=False)
        return
    ray.init(num_cpus=resources.cpus, num_gpus=resources.gpus, include_dashboard=False,
             _temp_dir=str(_temp_dir(run_dir)), logging_level="WARNING", log_to_driver=False)


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _tuner(trainable, job, resources: Resources, run_dir: Path, name: str, callback,
           param_space=None, search_alg=None, scheduler=None, num_samples=1):
    from ray import tune

    fn = tune.with_resources(tune.with_parameters(trainable, job=job),
                             {"cpu": job["threads"], "gpu": resources.gpu_share()})
    return tune.Tuner(
        fn,
        param_space=param_space or {},
        tune_config=tune.TuneConfig(
            metric="best_dev_acc", mode="max", search_alg=search_alg, scheduler=scheduler,
            num_samples=num_samples, reuse_actors=True,
            trial_dirname_creator=lambda t: t.trial_id, trial_name_creator=lambda t: t.trial_id,
        ),
        run_config=tune.RunConfig(name=name, storage_path=str((run_dir / "ray").resolve()), verbose=0,
                                  callbacks=[callback], log_to_file=False),
    )


def _optuna_search(study: Study, run_dir: Path, arm_name: str, n_done: int):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {}
    for p in study.space:
        if p.distribution == "choice":
            space[p.name] = optuna.distributions.CategoricalDistribution(list(p.choices))
        elif p.distribution == "int":
            space[p.name] = optuna.distributions.IntDistribution(int(p.low), int(p.high))
        else:
            space[p.name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.distribution == "loguniform")
    # Every arm starts from the same sampler seed (the same first proposals); a resumed arm moves the
    # seed on so it does not propose again what it already ran.
    sampler = optuna.samplers.TPESampler(seed=study.sampler_seed + n_done,
                                         n_startup_trials=max(1, min(10, study.trials_per_arm // 2)))
    storage = optuna.storages.RDBStorage(f"sqlite:///{(run_dir / 'optuna.db').resolve()}")
    return OptunaSearch(space=space, metric="best_dev_acc", mode="max", sampler=sampler,
                        study_name=arm_name, storage=storage)


def _per_arm_classes():
    """Ray Tune extension points, defined lazily so importing ablate.tune does not import Ray."""
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import Searcher

    class PerArmSearch(Searcher):
        """One Optuna study per arm, all arms tuned in one Tuner: the machine stays full across arms."""

        def __init__(self, searchers: dict, budgets: dict[str, int]):
            super().__init__(metric="best_dev_acc", mode="max")
            self.searchers, self.left = searchers, dict(budgets)
            self.arm_of: dict[str, str] = {}

        def suggest(self, trial_id):
            open_arms = [a for a, n in self.left.items() if n > 0]
            if not open_arms:
                return Searcher.FINISHED
            arm = max(open_arms, key=lambda a: self.left[a])  # round robin: the arm with most left
            params = self.searchers[arm].suggest(trial_id)
            self.left[arm] -= 1
            self.arm_of[trial_id] = arm
            return {**params, "arm": arm}

        def on_trial_result(self, trial_id, result):
            self.searchers[self.arm_of[trial_id]].on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id, result=None, error=False):
            self.searchers[self.arm_of[trial_id]].on_trial_complete(trial_id, result=result, error=error)

    class PerArmScheduler(FIFOScheduler):
        """An ASHA per arm, so arms never compete for early-stopping slots."""

        def __init__(self, make):
            super().__init__()
            self.make, self.by_arm = make, {}

        def _of(self, trial):
            arm = trial.config["arm"]
            if arm not in self.by_arm:
                self.by_arm[arm] = self.make()
                self.by_arm[arm].set_search_properties("best_dev_acc", "max")
            return self.by_arm[arm]

        def on_trial_add(self, tc, trial):
            self._of(trial).on_trial_add(tc, trial)

        def on_trial_result(self, tc, trial, result):
            return self._of(trial).on_trial_result(tc, trial, result)

        def on_trial_complete(self, tc, trial, result):
            self._of(trial).on_trial_complete(tc, trial, result)

        def on_trial_error(self, tc, trial):
            self._of(trial).on_trial_error(tc, trial)

        def on_trial_remove(self, tc, trial):
            self._of(trial).on_trial_remove(tc, trial)

    return PerArmSearch, PerArmScheduler


def run_tune_stage(study: Study, run_dir: Path, resources: Resources, job: dict) -> None:
    from ray.tune.schedulers import ASHAScheduler

    PerArmSearch, PerArmScheduler = _per_arm_classes()
    rows = read_registry(run_dir)
    done = {a.name: sum(1 for r in rows if r["stage"] == "tune" and r["arm"] == a.name) for a in study.arms}
    budgets = {a.name: study.trials_per_arm - done[a.name] for a in study.arms if study.trials_per_arm > done[a.name]}
    if not budgets:
        return
    search = PerArmSearch({arm: _optuna_search(study, run_dir, arm, done[arm]) for arm in budgets}, budgets)
    scheduler = None
    if study.asha:
        cfg = study.arm_config(study.arms[0], **{p.name: p.low if p.distribution != "choice" else p.choices[0] for p in study.space})
        evals = math.ceil(math.ceil(cfg.train_size / cfg.batch_size) * cfg.epochs / cfg.eval_every)
        # max_t past the last evaluation: a trial that reaches the end finishes and scores its test set.
        scheduler = PerArmScheduler(lambda: ASHAScheduler(time_attr="training_iteration", max_t=evals + 1,
                                                          grace_period=max(1, min(2, evals)), reduction_factor=3))
    total = sum(budgets.values())
    cb = StudyCallback(study, run_dir, "tune", total)
    tune_job = {**job, "bases": {a.name: {**study.base, **a.settings} for a in study.arms}}
    try:
        _tuner(train_trainable, tune_job, resources, run_dir, "tune", cb.callback,
               search_alg=search, scheduler=scheduler, num_samples=total).fit()
    finally:
        cb.close()


def missing(run_dir: Path, planned: list[PlannedTrial]) -> list[PlannedTrial]:
    """Planned trials without a finished result in the run folder (they are the only ones to run)."""
    return [p for p in planned if _finished(run_dir / "trials" / p.trial_id) is None]


def record_reused(study: Study, run_dir: Path, planned: list[PlannedTrial]) -> None:
    """A planned trial whose config already finished (in any stage) gets its stage's registry row without a rerun."""
    have = {(r["stage"], r["trial_id"]) for r in read_registry(run_dir)}
    for p in planned:
        if (p.stage, p.trial_id) not in have:
            metrics = _finished(run_dir / "trials" / p.trial_id)
            if metrics is not None:
                append_registry(run_dir, registry_row(p, metrics))


def fixed_stage_plan(study: Study, run_dir: Path, stage: str) -> list[PlannedTrial]:
    params = best_params(study, read_registry(run_dir)) if stage == "confirm" and study.space else None
    if params is not None:
        absent = [a.name for a in study.arms if a.name not in params]
        if absent:
            raise AblateError(f"no finished tuning trial for arm(s) {', '.join(absent)}; cannot confirm (resume to retry)")
    return plan_fixed_stage(study, stage, params)


def run_fixed_stage(study: Study, run_dir: Path, resources: Resources, job: dict, stage: str) -> None:
    from ray import tune

    planned = fixed_stage_plan(study, run_dir, stage)
    record_reused(study, run_dir, planned)
    todo = missing(run_dir, planned)
    if not todo:
        return
    by_id = {p.trial_id: p for p in todo}
    cb = StudyCallback(study, run_dir, stage, len(by_id), planned=by_id)
    space = {"config": tune.grid_search([p.config.to_dict() for p in todo])}
    try:
        _tuner(train_trainable, job, resources, run_dir, stage, cb.callback, param_space=space).fit()
    finally:
        cb.close()


def run_study(study: Study, run_dir: Path, resources: Resources, data_dir: str | None) -> None:
    """Every stage of the study, skipping what the run folder already holds."""
    job = {"run_dir": str(run_dir.resolve()), "data_dir": data_dir, "threads": int(study.base["threads"])}
    if not _needs_ray(study, run_dir):
        return
    start_ray(run_dir, resources)
    try:
        for stage in study.stages:
            if stage == "tune":
                run_tune_stage(study, run_dir, resources, job)
            else:
                run_fixed_stage(study, run_dir, resources, job, stage)
    finally:
        stop_ray()
        write_trials_csv(study, run_dir)


def _needs_ray(study: Study, run_dir: Path) -> bool:
    """False when every trial is already there: a finished study resumes without starting Ray."""
    rows = read_registry(run_dir)
    if "tune" in study.stages:
        if any(sum(1 for r in rows if r["stage"] == "tune" and r["arm"] == a.name) < study.trials_per_arm for a in study.arms):
            return True
    for stage in study.stages:
        if stage != "tune":
            planned = fixed_stage_plan(study, run_dir, stage)
            record_reused(study, run_dir, planned)
            if missing(run_dir, planned):
                return True
    write_trials_csv(study, run_dir)
    return False
