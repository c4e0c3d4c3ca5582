"""A trial's timeline: where its wall-clock seconds went, from the moment the planner handed it out to the moment its
result was registered. The one owner of the `timeline` field of metrics.json (and paused.json) and of the
`registered_at` field of a registry row: what they hold, their check, and how they are read back.

metrics.json's `timeline` is a list, one entry per segment the trial ran (a trial that successive halving paused at
a rung and continued has two; the paused segment's entry travels in paused.json). Each entry maps:

- `queued`: the planner handed the segment out (the study process's clock);
- `entered`: the worker's function started on it;
- `data`: the data splits were loaded (entered -> data also holds writing the trial's config.yaml and, for a
  continuation, reading its checkpoint);
- `model`: the model was built and the splits were on the device (training starts);
- `trained`: training, its dev evaluations and the test scoring are done (a paused segment: its checkpoint made);
- `written`: the trial folder's files are written (metrics.json, or paused.json, follows at once);

as wall-clock timestamps (time.time(): seconds since the epoch, comparable between the processes of one machine),
and `step_seconds` and `eval_seconds`: the seconds the segment spent in training steps and in dev evaluations (the
rest of model -> trained is the test scoring and its bookkeeping). The registry row's `registered_at` is when the
study process registered the result: a tuning trial is registered with its whole round, so registered_at - written
includes the wait for the round's other trials.

A folder written before timelines existed has none: every reader takes a missing timeline as unknown. Imports
nothing of ablate.
"""
from __future__ import annotations

import math
from typing import Any

TIMELINE = "timeline"  # the field of metrics.json and paused.json
REGISTERED_AT = "registered_at"  # the field of a registry row
MARKS = ("queued", "entered", "data", "model", "trained", "written")  # timestamps, in the order they happen
SUMS = ("step_seconds", "eval_seconds")  # seconds spent, summed over the segment's steps and evaluations
# What each stretch between two marks is, as the benchmarks and the docs name it.
PHASES = {"dispatch": ("queued", "entered"), "data": ("entered", "data"), "model": ("data", "model"),
          "training": ("model", "trained"), "files": ("trained", "written")}


def segment(queued: float | None, entered: float, marks: dict[str, float], written: float) -> dict[str, float]:
    """One segment's entry: `marks` holds the training loop's (data, model, trained, step_seconds, eval_seconds);
    `queued` is None where the worker was not told when its work was handed out (then the entry has no queued)."""
    out = {} if queued is None else {"queued": queued}
    out.update({"entered": entered, **{k: marks[k] for k in (*MARKS[2:5], *SUMS) if k in marks}, "written": written})
    return out


def problem(value: Any) -> str | None:
    """What is wrong with a `timeline` value, or None when ablate could have written it."""
    if not isinstance(value, list):
        return "not a list of segments"
    for entry in value:
        if not isinstance(entry, dict) or not all(
                k in MARKS + SUMS and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and v >= 0 for k, v in entry.items()):
            return f"not a list of segments mapping {', '.join(MARKS + SUMS)} to finite times >= 0"
    return None


def segments(metrics: dict[str, Any] | None) -> list[dict[str, float]]:
    """The segments a metrics.json (or paused.json) records; [] when it has no timeline (an older ablate's)."""
    value = (metrics or {}).get(TIMELINE)
    return list(value) if isinstance(value, list) and problem(value) is None else []


def phase_seconds(entry: dict[str, float]) -> dict[str, float]:
    """The seconds of each PHASES stretch that the entry has both ends of, and of training split into steps,
    evaluations and the rest (`other`: test scoring, checkpoints, the loop's bookkeeping)."""
    out = {name: entry[b] - entry[a] for name, (a, b) in PHASES.items() if a in entry and b in entry}
    if "training" in out:
        out["steps"] = entry.get("step_seconds", 0.0)
        out["evaluations"] = entry.get("eval_seconds", 0.0)
        out["other"] = out["training"] - out["steps"] - out["evaluations"]
    return out
