"""Runs a study on Ray Tune: this package is the only place that imports Ray.

The whole study is one Tuner, so trial workers start once and are reused (reuse_actors) from the
first tuning segment to the last confirm run. What runs, and when, is decided by ablate.search's
Planner from the run folder alone; Ray only executes its work items on the resources at hand.
Workers write the trial folders; the driver registers results, so a crash loses at most the
segments in flight.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import AblateError
from ..outputs import atomic_write_text
from ..runs import write_trials_csv
from ..search import Planner
from ..study import Study


class StudyInterrupted(Exception):
    """Ctrl-C (or SIGTERM) stopped the study; the run folder holds everything that finished."""


@dataclass(frozen=True)
class Resources:
    cpus: int
    gpus: int = 0
    gpus_per_trial: float | None = None
    address: str | None = None
    threads: int = 1  # per trial: the spec's, never the machine's
    trial_cpus: int | None = None  # CPUs Ray reserves per trial when it is more than threads (ablate.gpu_plan)

    def gpu_share(self) -> float:
        """Trials share a GPU (4 to a GPU unless ablate.gpu_plan measured or was told otherwise): small models
        leave most of one idle."""
        return 0.0 if self.gpus <= 0 else (self.gpus_per_trial or 0.25)

    def cpus_per_trial(self) -> int:
        """CPUs Ray reserves for a trial: its threads (or the cores the GPU plan gives each trial), or the whole
        machine when it has fewer cores (the trial still runs its threads, so its numbers do not depend on the
        machine)."""
        return max(1, min(max(self.threads, self.trial_cpus or 0), self.cpus))

    def concurrency(self) -> int:
        """Trials at once: as many as the CPUs allow at `threads` each, and no more than the GPU slots."""
        by_cpu = max(1, self.cpus // self.cpus_per_trial())
        if self.gpus > 0:
            return max(1, min(by_cpu, int(self.gpus / self.gpu_share() + 1e-9)))
        return by_cpu


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


def optuna_study_names(study: Study, run_id: str, storage: str | None) -> dict[str, str]:
    """One Optuna study per arm. In the run folder's own optuna.db the arm's name is enough; in a shared
    database the name also carries the study and the run, so two runs never feed on each other's trials."""
    return {a.name: a.name if storage is None else f"{study.name}/{run_id}/{a.name}" for a in study.arms}


def _ray_env(address: str | None) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ctrl-C reaches ablate, which stops Ray and says how to resume (Ray's own handler would suggest
    # Tuner.restore, which is not how a study resumes).
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # Ray's own per-trial CSV/JSON/TensorBoard logs would duplicate curves.csv.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000000")
    host = (address or "").replace("ray://", "").rpartition(":")[0]
    if address is None or host.startswith("127.") or host == "localhost":
        # Keeps a local Ray (or this driver on a loopback cluster) on 127.0.0.1 instead of the
        # machine's network address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


RAY_TMP_RECORD = ".ray_tmp"


def _temp_dir(run_dir: Path) -> Path:
    """A short private folder for Ray's session files and sockets (their paths must stay under 107
    bytes, which a run folder's path cannot promise), recorded in the run folder so that one left by a
    crash is removed when the run resumes."""
    record = run_dir / RAY_TMP_RECORD
    try:
        stale = Path(record.read_text(encoding="utf-8").strip())
        if stale.name.startswith("ablate-ray-"):
            shutil.rmtree(stale, ignore_errors=True)
    except OSError:
        pass
    tmp = Path(tempfile.mkdtemp(prefix="ablate-ray-", dir="/tmp" if os.path.isdir("/tmp") else None))
    atomic_write_text(record, str(tmp))
    return tmp


def start_ray(resources: Resources, temp_dir: Path) -> None:
    _ray_env(resources.address)  # before Ray's first import: it reads these when imported
    import ray

    if resources.address:
        ray.init(address=resources.address, logging_level="WARNING", log_to_driver=False)
        return
    # Every Ray server binds the node address; 127.0.0.1 keeps them all off the network interfaces.
    ray.init(num_cpus=resources.cpus, num_gpus=resources.gpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             _temp_dir=str(temp_dir), logging_level="WARNING", log_to_driver=False)


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


class RunLock:
    """One study process per run folder: a second one (say, a --resume while the first still runs) is refused."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.fh = None

    def __enter__(self):
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise AblateError(f"{self.path.parent} is in use by another study process; wait for it to end "
                              "(or stop it) before resuming") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


class Progress:
    """The live progress line: finished trials per stage (a tuning trial counts once, however many segments)."""

    def __init__(self, study: Study, planner: Planner):
        from tqdm import tqdm

        self.study, self.planner = study, planner
        self.totals = {stage: planner.counts().get(stage, 0) + n for stage, n in planner.remaining().items()}
        self.bar = tqdm(total=sum(self.totals.values()), desc=study.name, unit="trial", file=sys.stderr,
                        dynamic_ncols=True, initial=sum(planner.counts().values()))

    def refresh(self) -> None:
        counts = self.planner.counts()
        self.bar.n = sum(counts.values())
        stages = " ".join(f"{s} {counts.get(s, 0)}/{n}" for s, n in self.totals.items())
        self.bar.set_postfix_str(f"{stages} | running {len(self.planner.in_flight)}")

    def close(self) -> None:
        self.bar.close()


def run_study(study: Study, run_dir: Path, resources: Resources, data_dir: str | None,
              storage: str | None = None, retries: int = 1, run_id: str = "", tensorboard: bool = False,
              fuse: int = 1) -> None:
    """Every stage of the study in one Tuner, skipping what the run folder already holds; with fuse >= 2,
    groups of up to `fuse` trials that may be fused train as one model (ablate.fused)."""
    with RunLock(run_dir):
        planner = Planner(study, run_dir, storage, optuna_study_names(study, run_id, storage), fuse=fuse)
        if tensorboard:
            from ..tensorboard import write_trial

            planner.on_register = lambda row, config: write_trial(run_dir, row, config.to_dict())
        planner.refresh()
        try:
            if planner.done:  # a finished study resumes without starting Ray
                return
            tmp = _temp_dir(run_dir)
            try:
                start_ray(resources, tmp)
                _fit(study, run_dir, resources, data_dir, planner, retries, tmp)
            except KeyboardInterrupt:
                raise StudyInterrupted() from None
            finally:
                stop_ray()
                shutil.rmtree(tmp, ignore_errors=True)
                (run_dir / RAY_TMP_RECORD).unlink(missing_ok=True)
            if planner.done:
                planner.cleanup()
            else:
                raise AblateError(f"the study stopped with work left (see the errors above); finish it with "
                                  f"ablate study --resume {run_dir}")
        finally:
            write_trials_csv(study, run_dir)


def _fit(study, run_dir, resources, data_dir, planner, retries, tmp) -> None:
    import logging

    from ray import tune

    # Ray reads back its own per-trial result files at the end; with its loggers off (the run folder
    # holds every result) it would warn once per trial that they are missing.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)

    from .ray_ext import PlannerSearch
    from .worker import train_trainable

    job = {"run_dir": str(run_dir.resolve()), "data_dir": data_dir,
           "keep_weights": [stage for stage in ("tune", "grid", "confirm") if study.keeps_weights(stage)]}
    fn = tune.with_resources(tune.with_parameters(train_trainable, job=job),
                             {"cpu": resources.cpus_per_trial(), "gpu": resources.gpu_share()})
    progress = Progress(study, planner)

    def changed() -> None:
        write_trials_csv(study, run_dir)
        progress.refresh()

    try:
        tune.Tuner(
            fn,
            tune_config=tune.TuneConfig(
                search_alg=PlannerSearch(planner, on_change=changed), num_samples=-1, reuse_actors=True,
                max_concurrent_trials=resources.concurrency(),
                trial_dirname_creator=lambda t: t.trial_id, trial_name_creator=lambda t: t.trial_id,
            ),
            run_config=tune.RunConfig(name="tune", storage_path=str(tmp / "results"), verbose=0,
                                      log_to_file=False,
                                      failure_config=tune.FailureConfig(max_failures=retries)),
        ).fit()
    finally:
        progress.close()
