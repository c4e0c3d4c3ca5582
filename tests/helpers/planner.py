"""The study planner driven in this process, as the Ray workers would drive it: every ready item taken at once,
run through the workers' own function (run_works) in an order the test chooses."""
from __future__ import annotations

import random
from pathlib import Path

from ablate.engine.planner import FINISHED, Planner
from ablate.run_folder.registry import read_registry
from ablate.run_folder.trial_table import trials_csv
from ablate.engine.run_work import run_works


def drive(study, run_dir: Path, order: str = "fifo", stop_after: int | None = None, seed: int = 0,
          fuse: int = 1) -> int:
    """Run the planner's work in this process, `order` deciding which ready item goes first (fifo, lifo,
    random); with stop_after, stop (as a crash would) after that many segments. Returns segments run (a
    fused group counts once, as one Ray trial would)."""
    run_dir.mkdir(exist_ok=True)
    planner = Planner(study, run_dir, fuse=fuse)
    rng = random.Random(seed)
    done = 0
    pending = []
    while True:
        while True:  # take everything that is ready now, as a machine with many slots would
            work = planner.next()
            if work is None or work == FINISHED:
                break
            pending.append([work, *planner.take_group(work)])
        if not pending:
            assert work == FINISHED
            return done
        pick = {"fifo": 0, "lifo": -1, "random": rng.randrange(len(pending))}[order]
        works = pending.pop(pick)
        run_works(works, run_dir, None)
        for work in works:
            planner.finished(work)
        done += 1
        if stop_after is not None and done >= stop_after:
            return done


def csv_of(study, run_dir):
    return trials_csv(study, read_registry(run_dir))
