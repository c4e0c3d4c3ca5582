"""What registering one result costs the study process: Planner.refresh over a finished run folder, as the study
runs it after each trial (its caches warm), against the same refresh with those caches emptied first (every
trial's curve parsed, every config made, every Optuna round read from the storage again: what each registration
cost before the caches). The study's next trial is handed out after it, so it is part of the gap between two
trials on a worker.

    python benchmarks/registration.py RUN_DIR [--reps 20]

It runs on a copy of the run folder in a temporary folder (a planner opening a folder records where it is in its
Optuna studies), removed at the end; prints the median and fastest milliseconds of each and their ratio.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ablate.engine import planner as planner_module
from ablate.engine.planner import Planner
from ablate.errors import AblateError
from ablate.run_folder import read_spec
from ablate.spec import study_spec


def refresh_seconds(planner: Planner, cold: bool) -> float:
    if cold:
        planner_module._parsed_dev_curve.cache_clear()
        study_spec._CONFIGS.clear()
        for sampler in planner.optuna.values():
            sampler.asked.clear()
            sampler.told.clear()
    start = time.perf_counter()
    planner.refresh()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished study run folder")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    if not (args.run / "spec.yaml").is_file():
        parser.error(f"{args.run} is not a study run folder (no spec.yaml)")
    if not 1 <= args.reps <= 1000:
        parser.error("--reps must be from 1 to 1000")
    try:
        study = read_spec(args.run)  # read only
    except AblateError as exc:  # a spec.yaml or a manifest that is not a study's
        parser.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="ablate-registration-") as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(args.run, run)
        planner = Planner(study, run)
        planner.refresh()  # registers nothing new in a finished run; warms the caches
        times: dict[str, list[float]] = {"warm": [], "cold": []}
        for _ in range(args.reps):  # alternating, so that drift hits both
            for kind in ("warm", "cold"):
                times[kind].append(refresh_seconds(planner, kind == "cold"))
    print(f"{args.run}: {len(planner.rows)} registered trials, {args.reps} refreshes each")
    for kind, label in (("warm", "as a study runs it (caches warm)"), ("cold", "caches emptied first")):
        print(f"  {label:34s} median {statistics.median(times[kind]) * 1000:7.1f} ms, "
              f"fastest {min(times[kind]) * 1000:7.1f} ms")
    print(f"  ratio warm / cold: median {statistics.median(times['warm']) / statistics.median(times['cold']):.2f}, "
          f"fastest {min(times['warm']) / min(times['cold']):.2f}")


if __name__ == "__main__":
    sys.exit(main())
