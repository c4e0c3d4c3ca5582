"""The study's one Ray Tune run: the planner's work handed out by a searcher, trials on reused workers, with
the resources and retries the study was given.
"""
from __future__ import annotations


from ablate.engine import Progress


def tune_study(study, run_dir, resources, data_dir, planner, retries, tmp, stall_seconds: float,
               on_change=None) -> list[str]:
    """Run until the planner has nothing left, or until a trial failed for a reason outside its config (then
    the running trials end and no more start). Returns one line per such failure. A trial that makes no
    progress for its bound (ablate.engine.liveness, `stall_seconds`) is killed and retried (Liveness).
    `on_change` is called whenever the planner may have registered results."""
    import logging

    from ray import tune

    # Ray reads back its own per-trial result files at the end; with its loggers off (the run folder
    # holds every result) it would warn once per trial that they are missing.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # A failed trial gets one line of ablate's (PlannerSearch.judge), not Ray's list of its own trial ids.
    logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)

    from ablate.engine.ray_adapter.liveness import Liveness
    from ablate.engine.ray_adapter.searcher import PlannerSearch, TrialErrors
    from ablate.engine.ray_adapter.trainable import train_trainable

    job = {"run_dir": str(run_dir.resolve()), "data_dir": data_dir,
           "keep_weights": [stage for stage in ("tune", "grid", "confirm") if study.keeps_weights(stage)]}
    fn = tune.with_resources(tune.with_parameters(train_trainable, job=job),
                             {"cpu": resources.cpus_per_trial(), "gpu": resources.gpu_share()})
    progress = Progress(study, planner)

    def changed() -> None:
        progress.refresh()
        if on_change is not None:
            on_change()

    searcher = PlannerSearch(planner, on_change=changed, say=progress.say)

    try:
        tune.Tuner(
            fn,
            tune_config=tune.TuneConfig(
                search_alg=searcher, num_samples=-1, reuse_actors=True,
                max_concurrent_trials=resources.concurrency(),
                trial_dirname_creator=lambda t: t.trial_id, trial_name_creator=lambda t: t.trial_id,
            ),
            run_config=tune.RunConfig(name="tune", storage_path=str(tmp / "results"), verbose=0, log_to_file=False,
                                      callbacks=[TrialErrors(searcher), Liveness(searcher, stall_seconds)],
                                      failure_config=tune.FailureConfig(max_failures=retries)),
        ).fit()
    finally:
        progress.close()
    return searcher.faults
