"""The Ray Tune trainable: one segment of one trial, written to run_dir/trials/<id>/ by the worker itself."""
from __future__ import annotations

import os
import socket
from typing import Any

from ablate.engine import TrialPlan, run_works, trial_device


def train_trainable(params: dict[str, Any], job: dict[str, Any]) -> None:
    """Ray Tune function trainable: one TrialPlan, or one fused group of them, on the device Ray allocated."""
    import ray
    from ray import tune

    works = [TrialPlan.from_dict(w) for w in params["works"]]
    where = {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}
    device = trial_device(ray.get_gpu_ids())
    results = run_works(works, job["run_dir"], job["data_dir"], device, where, tuple(job["keep_weights"]),
                        queued=params.get("queued"))
    # nothing: the study cancelled a seed run ahead of its seed rule's decision (ablate.engine.planner)
    best, members = max((r.best_dev_acc for r in results), default=float("nan")), len(results)
    del results
    release_memory()
    tune.report({"best_dev_acc": best, "members": members})


def release_memory() -> None:
    """Hand what a finished trial freed back to the system before the reused worker takes its next trial:
    collect Python's cycles, then ask glibc to return its free pages (malloc_trim; elsewhere nothing).

    After the worker's first trial, what is still alive (the 400,000-odd objects of torch's, Ray's and ablate's
    modules) is frozen (gc.freeze): no collection walks
    it again, so this collection takes milliseconds instead of about half a second a trial (as does each of the
    collector's own full passes during a trial), and each trial's own cycles are still collected. A frozen object
    is never collected, even when it later becomes garbage: what is alive after a first trial is the modules and
    their caches, alive for the worker's life anyway."""
    import ctypes
    import gc

    gc.collect()
    if not gc.get_freeze_count():
        gc.freeze()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
