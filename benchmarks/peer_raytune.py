"""ablate against the same protocol written by hand on Ray Tune, back to back on this machine.

The peer is what a Ray Tune user would write for the study without ablate: one `tune.Tuner` over
arm x grid point x tuning seed (a `grid_search` of every combination), each arm's point chosen by its mean dev
accuracy over the tuning seeds, then one `tune.Tuner` over arm x confirm seed at the chosen points. Its trials
call ablate's own trial function (`ablate.train.run_trial`) on the trial configs the spec makes, one torch thread
and one CPU per trial, as many at once as there are CPUs, Ray Tune's defaults otherwise; it has no seed rule, so
it trains the confirm seeds that ablate's run trained (the same number per arm). Both run in their own process,
timed from outside (interpreter and imports included), first ablate, then the peer.

    python benchmarks/peer_raytune.py [--study residual-ablation] [--budget default] [--cpus 2]

Prints each one's wall time, the ratio ablate / peer, and each one's answer (the chosen point of each arm and
its mean test accuracy over the confirm seeds). The issue's goal: ablate <= 0.7 x the peer's wall at the same
answer.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def peer(study_name: str, budget: str, cpus: int, seeds: list[int], out: Path) -> None:
    """The hand-written study (run in a process of its own): writes its answer to `out` as JSON."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray import tune

    from ablate.data.splits import load_splits
    from ablate.spec import load_study

    study = load_study(study_name, budget)
    first = study.first_config()
    dataset = load_splits(first.dataset, None, 8, 4, 4, seed=0, image_size=first.image_size).dataset
    study.pin(dataset=dataset, threads=1)  # what `auto` finds here; one torch thread per trial
    arms = {arm.name: arm for arm in study.arms}
    points = study.search_points

    def trainable(config: dict) -> None:
        from ablate.train import run_trial

        name, index = config["arm_point"]
        result = run_trial(study.trial_config(arms[name], points[index], config["seed"]))
        tune.report({"dev_acc": result.best_dev_acc, "test_acc": result.test_acc, "status": result.status})

    ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING",
             log_to_driver=False)
    storage = Path(tempfile.mkdtemp(prefix="peer-raytune-"))

    def fit(name: str, space: dict) -> list[dict]:
        tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), param_space=space,
                           tune_config=tune.TuneConfig(max_concurrent_trials=cpus),
                           run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0))
        return [{**r.config, **r.metrics} for r in tuner.fit()]

    tuned = fit("tune", {"arm_point": tune.grid_search([(a, i) for a in arms for i in range(len(points))]),
                         "seed": tune.grid_search(study.tuning_seeds())})
    chosen = {}
    for name in arms:  # each arm's point with the best mean dev accuracy over its tuning seeds (first on ties)
        by_point: dict[int, list[float]] = {}
        for row in tuned:
            if row["arm_point"][0] == name:
                by_point.setdefault(row["arm_point"][1], []).append(row["dev_acc"])
        chosen[name] = max(sorted(by_point), key=lambda i: sum(by_point[i]) / len(by_point[i]))
    confirmed = fit("confirm", {"arm_point": tune.grid_search([(a, chosen[a]) for a in arms]),
                                "seed": tune.grid_search(seeds)})
    ray.shutdown()
    shutil.rmtree(storage, ignore_errors=True)
    answer = {name: {"point": points[chosen[name]],
                     "test_acc": [r["test_acc"] for r in confirmed if r["arm_point"][0] == name]} for name in arms}
    out.write_text(json.dumps({"answer": answer, "trials": len(tuned) + len(confirmed)}))


def ablate_answer(run_dir: Path, params: list[str]) -> tuple[dict, list[int], int]:
    """Each arm's chosen point and its confirm test accuracies, the confirm seeds and the trial count of
    ablate's run, from its trials.csv."""
    import pandas as pd

    table = pd.read_csv(run_dir / "trials.csv")
    confirm = table[table["stage"] == "confirm"]
    answer = {arm: {"point": {p: float(rows[p].iloc[0]) for p in params}, "test_acc": list(rows["test_acc"])}
              for arm, rows in confirm.groupby("arm", sort=False)}
    seeds = sorted({int(s) for s in confirm["seed"]})
    return answer, seeds, len(table)


def timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="residual-ablation")
    parser.add_argument("--budget", default="default")
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--peer-only", type=Path, help=argparse.SUPPRESS)  # the peer's own process: its JSON
    parser.add_argument("--seeds", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_only is not None:
        peer(args.study, args.budget, args.cpus, [int(s) for s in args.seeds.split(",")], args.peer_only)
        return
    with tempfile.TemporaryDirectory(prefix="peer-bench-") as tmp:
        run_dir = Path(tmp) / "ablate"
        ablate_wall = timed([sys.executable, "cli.py", "study", args.study, "--budget", args.budget,
                             "--cpus", str(args.cpus), "--out", str(run_dir)])
        from ablate.spec import load_study

        params = [p.name for p in load_study(args.study, args.budget).space]
        ours, seeds, our_trials = ablate_answer(run_dir, params)
        out = Path(tmp) / "peer.json"
        peer_wall = timed([sys.executable, __file__, "--study", args.study, "--budget", args.budget, "--cpus",
                           str(args.cpus), "--seeds", ",".join(map(str, seeds)), "--peer-only", str(out)])
        theirs = json.loads(out.read_text())
    print(f"{args.study} ({args.budget}) on {args.cpus} CPUs, back to back; ablate's rule ran {len(seeds)} confirm "
          f"seeds per arm, the peer trains the same seeds")
    print(f"ablate: {ablate_wall:.1f} s, {our_trials} trials")
    print(f"peer (hand-written Ray Tune): {peer_wall:.1f} s, {theirs['trials']} trials")
    print(f"ratio ablate / peer: {ablate_wall / peer_wall:.2f} (goal <= 0.7)")
    for arm, mine in ours.items():
        other = theirs["answer"][arm]
        mean = lambda values: 100 * sum(values) / len(values)  # noqa: E731
        print(f"  {arm}: ablate {mine['point']} {mean(mine['test_acc']):.2f} %; "
              f"peer {other['point']} {mean(other['test_acc']):.2f} %")


if __name__ == "__main__":
    main()
