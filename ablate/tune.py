"""Runs a study on Ray Tune: the only module that imports Ray.

The whole study is one Tuner, so trial workers start once and are reused (reuse_actors) from the
first tuning trial to the last confirm run. A study-wide searcher proposes the tuning trials of every
arm through one OptunaSearch per arm (its own study in optuna.db), then, as soon as an arm's tuning
is complete, that arm's confirm runs; a per-arm ASHA keeps arms from competing for early-stopping
slots. Workers write the trial folders; the driver appends a registry row as each trial ends, so a
crash loses at most the trials in flight.
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
from .runs import (adopt_orphans, append_registry, best_params, finished_metrics, missing, read_metrics,
                   read_registry, record_reused, registry_row, remaining, write_trials_csv)
from .study import PlannedTrial, Study, plan_fixed_stage
from .trial import TrialConfig



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


def train_trainable(params: dict[str, Any], job: dict[str, Any]) -> None:
    """Ray Tune function trainable: one trial, written to run_dir/trials/<id>/ by the worker itself."""
    import ray
    from ray import tune

    from .outputs import write_trial_folder
    from .trial import run_trial

    cfg = TrialConfig.from_dict(params["config"])
    trial_id = cfg.trial_id()
    folder = Path(job["run_dir"]) / "trials" / trial_id
    done = finished_metrics(folder)
    if done is not None:  # the same config finished before (a repeated proposal): reuse it
        tune.report({"trial_id": trial_id, "best_dev_acc": done["best_dev_acc"], "reused": True})
        return
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.yaml", cfg.to_yaml())
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    where = {"node": node, "host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time()}
    # Final-stage runs keep their best-dev weights for the lesion study; tuning runs need none.
    keep = params.get("stage") in ("confirm", "grid")
    try:
        result = run_trial(cfg, report=lambda m: tune.report({**m, "trial_id": trial_id}), data_dir=job["data_dir"],
                           keep_best_state=keep)
    except Exception as exc:
        # Recorded for the driver, then raised so that Ray retries the trial (FailureConfig); a retry
        # that succeeds overwrites this, one that does not leaves the error text in the registry.
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        atomic_write_text(folder / "metrics.json", json.dumps({"trial_id": trial_id, "status": "error", "error": text, **where}))
        raise
    # No report after training: the last evaluation's report is the trial's final result, and ASHA's
    # max_t lies past it, so a trial that reaches the end is never cut before it scores its test set.
    write_trial_folder(folder, cfg, result, extra={**where, "ended_at": time.time()}, plot=False, weights=keep)


def _ray_classes():
    """Ray Tune extension points, defined lazily so that importing ablate.tune does not import Ray."""
    from ray.tune import Callback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import Searcher

    class StudySearch(Searcher):
        """Proposes every trial of a study: tuning trials round-robin over the arms (Optuna per arm),
        then each arm's confirm runs once all of its tuning trials have ended."""

        def __init__(self, study: Study, run_dir: Path, storage: str | None):
            super().__init__(metric="best_dev_acc", mode="max")
            self.study, self.run_dir = study, run_dir
            rows = read_registry(run_dir)
            done = {a.name: sum(1 for r in rows if r["stage"] == "tune" and r["arm"] == a.name) for a in study.arms}
            self.left = {a: max(0, study.trials_per_arm - n) for a, n in done.items()} if study.space else {}
            self.optuna = {a: _optuna_search(study, run_dir, a, done[a], storage) for a, n in self.left.items() if n > 0}
            self.of: dict[str, tuple[str, str]] = {}  # ray trial id -> (stage, arm)
            self.running = {a.name: 0 for a in study.arms}
            self.queued: list[PlannedTrial] = []
            self.waiting = [a.name for a in study.arms] if study.space else []
            if not study.space:
                self.queued = missing(run_dir, record_reused(study, run_dir, plan_fixed_stage(study, study.stages[-1])))

        def suggest(self, trial_id):
            open_arms = [a for a, n in self.left.items() if n > 0]
            if open_arms:
                arm = max(open_arms, key=lambda a: self.left[a])  # round robin: the arm with most left
                params = self.optuna[arm].suggest(trial_id)
                self.left[arm] -= 1
                self.running[arm] += 1
                self.of[trial_id] = ("tune", arm)
                cfg = self.study.arm_config(next(a for a in self.study.arms if a.name == arm), **params)
                return {"stage": "tune", "arm": arm, "params": params, "config": cfg.to_dict()}
            self._release_confirms()
            if self.queued:
                trial = self.queued.pop(0)
                self.of[trial_id] = (trial.stage, trial.arm)
                return {"stage": trial.stage, "arm": trial.arm, "params": trial.params, "config": trial.config.to_dict()}
            return None if self.waiting else Searcher.FINISHED

        def _release_confirms(self) -> None:
            rows = read_registry(self.run_dir)
            for arm in list(self.waiting):
                ended = sum(1 for r in rows if r["stage"] == "tune" and r["arm"] == arm)
                if self.running[arm] or ended < self.study.trials_per_arm:
                    continue
                self.waiting.remove(arm)
                best = best_params(self.study, rows).get(arm)
                if best is None:
                    print(f"warning: arm {arm}: no tuning trial finished; its confirm runs are skipped", file=sys.stderr)
                    continue
                planned = [p for p in plan_fixed_stage(self.study, "confirm", {arm: best}) if p.arm == arm]
                self.queued += missing(self.run_dir, record_reused(self.study, self.run_dir, planned))

        def on_trial_result(self, trial_id, result):
            stage, arm = self.of[trial_id]
            if stage == "tune":
                self.optuna[arm].on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id, result=None, error=False):
            stage, arm = self.of[trial_id]
            if stage == "tune":
                self.running[arm] -= 1
                self.optuna[arm].on_trial_complete(trial_id, result=result, error=error)

    class PerArmASHA(FIFOScheduler):
        """An ASHA per arm for tuning trials, so arms never compete for early-stopping slots;
        confirm and grid runs are never stopped."""

        def __init__(self, max_t: int):
            super().__init__()
            self.max_t, self.by_arm = max_t, {}

        def _of(self, trial):
            if trial.config.get("stage") != "tune":
                return None
            arm = trial.config["arm"]
            if arm not in self.by_arm:
                self.by_arm[arm] = ASHAScheduler(time_attr="training_iteration", max_t=self.max_t,
                                                 grace_period=max(1, min(2, self.max_t - 1)), reduction_factor=3)
                self.by_arm[arm].set_search_properties("best_dev_acc", "max")
            return self.by_arm[arm]

        def on_trial_add(self, tc, trial):
            (self._of(trial) or super()).on_trial_add(tc, trial)

        def on_trial_result(self, tc, trial, result):
            return (self._of(trial) or super()).on_trial_result(tc, trial, result)

        def on_trial_complete(self, tc, trial, result):
            (self._of(trial) or super()).on_trial_complete(tc, trial, result)

        def on_trial_error(self, tc, trial):
            (self._of(trial) or super()).on_trial_error(tc, trial)

        def on_trial_remove(self, tc, trial):
            (self._of(trial) or super()).on_trial_remove(tc, trial)

    class ForwardingCallback(Callback):
        """Hands Ray's trial events to a StudyProgress; holds no closure, so Ray can pickle it."""

        def __init__(self, outer):
            self.outer = outer

        def __getstate__(self):
            # Ray pickles callbacks into its experiment snapshot; the live display stays behind.
            return {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.outer.start(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "dev_acc" in result:
                self.outer.curves.setdefault(trial.trial_id, []).append(
                    {k: result.get(k) for k in ("step", "train_loss", "dev_loss", "dev_acc")})

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.outer.finish(trial, error=None)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.outer.finish(trial, error=str(getattr(trial, "error_msg", None) or "trial worker failed"))

    return StudySearch, PerArmASHA, ForwardingCallback


class StudyProgress:
    """Driver side: registry rows, trials.csv and the live progress line, as trials end."""

    def __init__(self, study: Study, run_dir: Path, totals: dict[str, int], callback_class):
        from tqdm import tqdm

        self.study, self.run_dir, self.totals = study, run_dir, totals
        self.done = {stage: 0 for stage in totals}
        self.curves: dict[str, list[dict]] = {}
        self.running = 0
        self.best: dict[str, float] = {}
        self.bar = tqdm(total=sum(totals.values()), desc=study.name, unit="trial", file=sys.stderr, dynamic_ncols=True)
        self.callback = callback_class(self)

    def _refresh(self) -> None:
        stages = " ".join(f"{s} {self.done[s]}/{n}" for s, n in self.totals.items())
        best = " ".join(f"{a}:{v:.3f}" for a, v in self.best.items())
        self.bar.set_postfix_str(f"{stages} | running {self.running}" + (f" | best dev {best}" if best else ""))

    def start(self, trial) -> None:
        self.running += 1
        self._refresh()

    def finish(self, trial, error: str | None) -> None:
        self.running = max(0, self.running - 1)
        stage, arm, params = trial.config["stage"], trial.config["arm"], trial.config["params"]
        cfg = TrialConfig.from_dict(trial.config["config"])
        planned = PlannedTrial(stage, arm, cfg, dict(params))
        folder = self.run_dir / "trials" / planned.trial_id
        metrics = read_metrics(folder)
        if metrics is None or metrics.get("status") not in ("ok", "diverged", "error"):
            metrics = self._record_unfinished(trial, planned, folder, error)
        append_registry(self.run_dir, registry_row(planned, metrics))
        write_trials_csv(self.study, self.run_dir)
        if metrics.get("best_dev_acc") is not None:
            self.best[arm] = max(self.best.get(arm, 0.0), metrics["best_dev_acc"])
        self.done[stage] = self.done.get(stage, 0) + 1
        self.bar.update(1)
        self._refresh()

    def _record_unfinished(self, trial, planned: PlannedTrial, folder: Path, error: str | None) -> dict:
        """Stopped early by ASHA, or the worker died: keep what Ray saw of it."""
        last = trial.last_result or {}
        rows = self.curves.get(trial.trial_id, [])
        metrics = {"trial_id": planned.trial_id, "status": "error" if error else "stopped",
                   "best_dev_acc": max((r.get("dev_acc") or 0.0 for r in rows), default=0.0),
                   "train_seconds": last.get("time_total_s"), "total_seconds": last.get("time_total_s"),
                   "steps": rows[-1]["step"] if rows else 0, "error": error}
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "config.yaml").exists():
            atomic_write_text(folder / "config.yaml", planned.config.to_yaml())
        atomic_write_text(folder / "curves.csv", "step,train_loss,dev_loss,dev_acc\n" + "".join(
            f"{r['step']},{r['train_loss']},{r['dev_loss']},{r['dev_acc']}\n" for r in rows))
        atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2))
        return metrics

    def close(self) -> None:
        self.bar.close()


def _ray_env(address: str | None) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "16")
    host = (address or "").replace("ray://", "").rpartition(":")[0]
    if address is None or host.startswith("127.") or host == "localhost":
        # Keeps a local Ray (or this driver on a loopback cluster) on 127.0.0.1 instead of the
        # machine's network address.
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
    _ray_env(resources.address)  # before Ray's first import: it reads these when imported
    import ray

    if resources.address:
        ray.init(address=resources.address, logging_level="WARNING", log_to_driver=False)
        return
    # Every Ray server binds the node address; 127.0.0.1 keeps them all off the network interfaces.
    ray.init(num_cpus=resources.cpus, num_gpus=resources.gpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             _temp_dir=str(_temp_dir(run_dir)), logging_level="WARNING", log_to_driver=False)


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def check_storage(url: str) -> None:
    """Fail fast, before any folder exists, when the Optuna storage cannot be opened."""
    import optuna

    try:
        optuna.storages.RDBStorage(url)
    except Exception as exc:  # SQLAlchemy raises many kinds; all mean the same to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AblateError(f"cannot open Optuna storage {url!r}: {reason}") from None


def storage_url(run_dir: Path, storage: str | None) -> str:
    return storage or f"sqlite:///{(run_dir / 'optuna.db').resolve()}"


def _optuna_search(study: Study, run_dir: Path, arm_name: str, n_done: int, storage: str | None):
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
    return OptunaSearch(space=space, metric="best_dev_acc", mode="max", sampler=sampler,
                        study_name=f"{study.name}/{arm_name}" if storage else arm_name,
                        storage=optuna.storages.RDBStorage(storage_url(run_dir, storage)))


def _evaluations(study: Study) -> int:
    cfg = study.arm_config(study.arms[0], **{p.name: p.low if p.distribution != "choice" else p.choices[0] for p in study.space})
    return math.ceil(math.ceil(cfg.train_size / cfg.batch_size) * cfg.epochs / cfg.eval_every)


def run_study(study: Study, run_dir: Path, resources: Resources, data_dir: str | None,
              storage: str | None = None, retries: int = 1) -> None:
    """Every stage of the study in one Tuner, skipping what the run folder already holds."""
    adopt_orphans(study, run_dir)
    totals = remaining(study, run_dir)
    if not any(totals.values()):  # a finished study resumes without starting Ray
        write_trials_csv(study, run_dir)
        return
    start_ray(run_dir, resources)
    try:
        from ray import tune

        StudySearch, PerArmASHA, ForwardingCallback = _ray_classes()
        job = {"run_dir": str(run_dir.resolve()), "data_dir": data_dir}
        threads = int(study.base["threads"])
        fn = tune.with_resources(tune.with_parameters(train_trainable, job=job),
                                 {"cpu": threads, "gpu": resources.gpu_share()})
        progress = StudyProgress(study, run_dir, totals, ForwardingCallback)
        # max_t past the last evaluation: a tuning trial that reaches the end finishes normally.
        scheduler = PerArmASHA(_evaluations(study) + 1) if study.space and study.asha else None
        try:
            tune.Tuner(
                fn,
                tune_config=tune.TuneConfig(
                    metric="best_dev_acc", mode="max", search_alg=StudySearch(study, run_dir, storage), scheduler=scheduler,
                    num_samples=sum(totals.values()) if study.space else totals[study.stages[-1]], reuse_actors=True,
                    trial_dirname_creator=lambda t: t.trial_id, trial_name_creator=lambda t: t.trial_id,
                ),
                run_config=tune.RunConfig(name="tune", storage_path=str((run_dir / "ray").resolve()), verbose=0,
                                          callbacks=[progress.callback], log_to_file=False,
                                          failure_config=tune.FailureConfig(max_failures=retries)),
            ).fit()
        finally:
            progress.close()
    finally:
        stop_ray()
        write_trials_csv(study, run_dir)
