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
          fuse: int = 1, slots: int | None = None, cancelled: list | None = None) -> int:
    """Run the planner's work in this process, `order` deciding which ready item goes first (fifo, lifo,
    random); with stop_after, stop (as a crash would) after that many segments; with `slots`, at most that many
    handed out at once (a machine with that many CPUs), else all that is ready. Returns segments run (a fused group
    counts once, as one Ray trial would; a trial cancelled as it ran counts too, and its id goes to `cancelled`)."""
    run_dir.mkdir(exist_ok=True)
    planner = Planner(study, run_dir, fuse=fuse)
    rng = random.Random(seed)
    done = 0
    pending = []
    while True:
        while slots is None or len(pending) < slots:  # take what is ready now, as a machine with that many slots would
            work = planner.next()
            if work is None or work == FINISHED:
                break
            pending.append([work, *planner.take_group(work)])
        if not pending:
            assert work == FINISHED
            planner.cleanup()  # as the study does when it is done
            return done
        pick = {"fifo": 0, "lifo": -1, "random": rng.randrange(len(pending))}[order]
        works = pending.pop(pick)
        if not run_works(works, run_dir, None) and cancelled is not None:
            cancelled += [w.trial_id for w in works]
        for work in works:
            planner.finished(work)
        done += 1
        if stop_after is not None and done >= stop_after:
            return done


def csv_of(study, run_dir):
    return trials_csv(study, read_registry(run_dir))
