"""How well a study keeps the machine busy.

Runs a study into a temporary folder and prints, from its own records:
  efficiency = sum of trial compute (seconds inside each trial, all its segments, x its threads)
               / (wall seconds x cores)
  overhead   = (wall x concurrent slots - sum of trial seconds) / trials: what scheduling costs per trial,
               Ray start-up, worker start-up and the waits at each round's rungs included.
Target: efficiency >= 0.8 (rounds make the search reproducible; their synchronisation costs some of it).

    python benchmarks/study_efficiency.py [--study residual-ablation] [--budget smoke]
    python benchmarks/study_efficiency.py --run RUN_DIR     # the same figures from a finished run's own records

With --run, the wall time is the run's own (launch to its last trial's end, summed over its sessions, as the
report gives it) and the trials are its registry's.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from ablate.data.splits import load_splits
from ablate.run_folder.registry import read_registry
from ablate.spec.study_spec import load_study
from ablate.engine.resources import Resources
from ablate.engine.study_runner import run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="residual-ablation")
    parser.add_argument("--budget", default="smoke")
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--run", type=Path, help="a finished study run folder: its records, nothing is run")
    args = parser.parse_args()
    if args.run is not None:
        from ablate.analysis.load import load_run
        from ablate.analysis.runinfo import facts

        run = load_run(args.run)
        study = run.study
        resources = Resources(cpus=args.cpus, threads=study.base["threads"])
        summarise(study, resources, facts(run).wall_seconds, read_registry(args.run))
        return
    study = load_study(args.study, args.budget)
    resources = Resources(cpus=args.cpus, threads=study.base["threads"])
    base = study.arm_config(study.arms[0], **{k: v[0] for k, v in study.grid.items()})
    splits = load_splits(base.dataset, None, base.train_size, base.dev_size, base.test_size, seed=base.data_seed,
                         image_size=base.image_size)
    study.pin(dataset=splits.dataset)
    with tempfile.TemporaryDirectory(prefix="ablate-bench-") as tmp:
        run_dir = Path(tmp)
        (run_dir / "spec.yaml").write_text(study.resolved_yaml())
        t0 = time.perf_counter()
        run_study(study, run_dir, resources, None)
        wall = time.perf_counter() - t0
        rows = read_registry(run_dir)
    summarise(study, resources, wall, rows)


def summarise(study, resources: Resources, wall: float, rows: list[dict]) -> None:
    threads = study.base["threads"]
    # A repeated proposal shares its trial with the first one: count each trial's compute once.
    rows = list({(r["stage"], r["trial_id"]): r for r in rows}.values())
    seconds = [r["total_seconds"] or 0.0 for r in rows]
    slots = resources.concurrency()
    efficiency = sum(seconds) * threads / (wall * resources.cpus)
    overhead = (wall * slots - sum(seconds)) / len(rows)
    print(f"study {study.name} ({study.budget}): {len(rows)} trials, {slots} at a time x {threads} threads on {resources.cpus} CPUs")
    print(f"wall {wall:.1f} s, sum of trial seconds {sum(seconds):.1f} s (mean {sum(seconds) / len(rows):.1f} s)")
    print(f"efficiency: {efficiency:.3f} (target >= 0.8)")
    print(f"per-trial scheduling overhead: {overhead:.2f} s (Ray and worker start-up and each round's waits at its "
          "rungs; <= 1 s was the target before rounds made the search reproducible, >= 0.8 efficiency is now)")


if __name__ == "__main__":
    main()
