"""For tests only: make a chosen trial's worker fail the way a machine fails, where the real fault cannot be
made on demand (threads cannot be exhausted for root, whom RLIMIT_NPROC does not bind).

Off unless the environment variable ABLATE_TEST_FAULT holds a JSON object, e.g.
`{"fault": "threads", "stage": "tune", "arm": "residual=true", "round": 1, "index": 0, "at": "start"}`: every
attempt of each trial segment whose Work matches all the given keys (stage, arm, round, index, seed) fails at
`at` (start: before training; write: after training, before the trial folder is written) with
  enospc    OSError(ENOSPC), as a full disk gives;
  threads   RuntimeError("can't start new thread"), as Python gives when no thread can be had;
  memory    MemoryError;
  oom       a real allocation (torch.empty) of four times the machine's memory, which torch's allocator refuses
            with its own "can't allocate memory" error: a config that cannot fit, the same on every attempt;
  kill      SIGKILL of the worker process itself;
  config    ValueError, the same on every attempt (a failure of the config, for contrast).
The study's Ray workers inherit the variable; a `--resume` without it runs the trial normally.
`{"fault": "ray_start"}` instead makes the study's own start of Ray fail as Ray does when its node does not come
up in time (seen on an overloaded machine).
"""
from __future__ import annotations

import errno
import json
import os
import signal

VARIABLE = "ABLATE_TEST_FAULT"
_KEYS = ("stage", "arm", "round", "index")


def strike(works, at: str, beat=None) -> None:
    """`beat`: the attempt's heartbeat, told where the fault struck (the place an out-of-memory record names)."""
    text = os.environ.get(VARIABLE)
    if not text:
        return
    fault = json.loads(text)
    if fault.get("at", "start") != at or fault["fault"] == "ray_start":
        return
    for work in works:
        if all(fault[k] == getattr(work, k) for k in _KEYS if k in fault) and \
                ("seed" not in fault or fault["seed"] == work.config.seed):
            if beat is not None:
                beat(f"injected fault at {at}", 0)
            _raise(fault["fault"], f"trials/{work.trial_id}")


def strike_ray_start() -> None:
    text = os.environ.get(VARIABLE)
    if text and json.loads(text).get("fault") == "ray_start":
        raise Exception("The current node timed out during startup. This could happen because some of the raylet "
                        f"failed to startup or the GCS has become overloaded. ({VARIABLE})")


def _raise(kind: str, where: str) -> None:
    if kind == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where)
    if kind == "threads":
        raise RuntimeError("can't start new thread")
    if kind == "memory":
        raise MemoryError()
    if kind == "oom":
        import torch

        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        torch.empty(4 * pages * size, dtype=torch.uint8)  # refused by the allocator: nothing is touched
        raise AssertionError("an allocation of four times the machine's memory succeeded")
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "config":
        raise ValueError(f"injected failure of the config of {where}")
    raise ValueError(f"{VARIABLE}: unknown fault {kind!r}")
