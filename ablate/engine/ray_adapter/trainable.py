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
    best, members = max(r.best_dev_acc for r in results), len(results)
    del results
    release_memory()
    tune.report({"best_dev_acc": best, "members": members})


def release_memory() -> None:
    """Hand what a finished trial freed back to the system before the reused worker takes its next trial:
    collect Python's cycles, then ask glibc to return its free pages (malloc_trim; elsewhere nothing)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
