"""Why a trial failed, and whether that failure is a result.

A failure that is a property of the trial's config (an error that the same config raises again on its retry,
or running out of memory at the same place on every attempt while the machine was not short of memory: see
ablate.engine.memory_faults) is a result: the trial is recorded as an error, ranked last and told to Optuna as
failed. Anything else (the worker died, the disk filled up, no thread or memory could be had, a node was lost,
the trial stalled (ablate.engine.liveness), or an error that did not come back on the retry) is a fault of the
machine: it is never a result, the study stops, and `--resume` runs the trial again later. The worker leaves
`error.txt` (the whole traceback) and `failure.json` (one record per attempt: its kind, the exception's type
and message, where it ran; the study adds the record of an attempt it killed as stalled) in the trial folder;
the engine judges once Ray's retries are spent. Knows nothing of Ray or torch.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.engine import memory_faults
from ablate.run_folder import add_attempt, clear_failures, read_attempts, write_error_text

INFRASTRUCTURE = "infrastructure"
CONFIG = "config"
STALLED = "Stalled"  # the type of an attempt the study killed as stalled
_FACTS = ("kind", "type", "error", "memory")  # what an attempt record holds beside where it ran

# Messages of exceptions that say the machine ran out of something, whatever their type.
_EXHAUSTED = ("can't start new thread", "pthread_create", "resource temporarily unavailable", "out of memory",
              "no space left on device", "disk is full", "disk i/o error", "is killed by signal",
              "cannot allocate memory")


def kind_of(exc: BaseException) -> str:
    """`infrastructure` for an exception of the machine (OSError such as ENOSPC or EIO, MemoryError, torch's
    OutOfMemoryError, no thread to be had, a database whose disk is full), else `config`. The exception's
    causes count too: a library that wraps an OSError in its own type still failed for lack of disk."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (OSError, MemoryError)):
            return INFRASTRUCTURE
        if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
            return INFRASTRUCTURE
        if any(text in str(exc).lower() for text in _EXHAUSTED):
            return INFRASTRUCTURE
        exc = exc.__cause__ or exc.__context__
    return CONFIG


def describe(exc: BaseException) -> str:
    """The exception's type and the first line of its message, as one line."""
    first = str(exc).strip().splitlines()[0].strip() if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def record_attempt(folder: Path, exc: BaseException, where: dict[str, Any]) -> None:
    """A worker's failed attempt: the whole traceback to error.txt, and one record to failure.json. Writing
    may fail too (a full disk); then the engine takes the cause from what Ray reports."""
    try:
        write_error_text(folder, "".join(traceback.format_exception(exc)))
        add_attempt(folder, {"kind": kind_of(exc), "type": type(exc).__name__, "error": describe(exc), **where})
    except OSError:
        pass


def record_stall(folder: Path, description: str, where: dict[str, Any]) -> None:
    """The study killed an attempt that made no progress (ablate.engine.liveness): a fault of the machine."""
    try:
        add_attempt(folder, {"kind": INFRASTRUCTURE, "type": STALLED, "error": f"stalled: {description}", **where})
    except OSError:
        pass


def clear(folder: Path) -> None:
    """Forget earlier attempts: when a trial is handed out anew (its attempts start over), and when it succeeds
    (an attempt that a retry made good is no failure)."""
    clear_failures(folder)


@dataclass
class Verdict:
    """How a trial whose retries ran out failed: `kind` config (a result) or infrastructure (the study stops)."""

    kind: str
    cause: str  # one line: type and message
    why: str  # why this kind, for the user
    where: dict[str, Any]

    @property
    def is_result(self) -> bool:
        return self.kind == CONFIG


def judge(folder: Path, failures: int, reported: BaseException | None) -> Verdict:
    """`failures`: attempts that failed (Ray's count, retries included); `reported`: the exception Ray reported
    for the last one (the worker's own exception, or Ray's word that the worker died), or None."""
    attempts = read_attempts(folder)
    last = attempts[-1] if attempts else {}
    where = {k: v for k, v in last.items() if k not in _FACTS}
    if last.get("type") == STALLED:
        return Verdict(INFRASTRUCTURE, last.get("error", "stalled"),
                       "a fault of the machine (a hung read, a deadlock, a device that stopped answering), not of the "
                       "trial's config", where)
    memory = memory_faults.config_verdict(attempts, failures)
    if memory is not None:
        return Verdict(CONFIG, *memory, where)
    if reported is not None and kind_of(reported) == INFRASTRUCTURE:
        return Verdict(INFRASTRUCTURE, describe(reported), "a fault of the machine, not of the trial's config", where)
    if any(a.get("kind") == INFRASTRUCTURE for a in attempts):
        a = next(a for a in reversed(attempts) if a.get("kind") == INFRASTRUCTURE)
        return Verdict(INFRASTRUCTURE, a.get("error", "?"), "a fault of the machine, not of the trial's config", where)
    if len(attempts) < failures:
        cause = describe(reported) if reported is not None else "the worker died"
        return Verdict(INFRASTRUCTURE, cause, "its worker died without a word (killed, out of memory, node lost)",
                       where)
    if len({(a.get("type"), a.get("error")) for a in attempts}) > 1:
        return Verdict(INFRASTRUCTURE, last.get("error", "?"),
                       "its attempts failed differently, so the failure is not the config's", where)
    again = "raised again on each retry" if failures > 1 else "raised with no retry allowed"
    return Verdict(CONFIG, last.get("error", "?"), f"a property of the config ({again})", where)


def error_metrics(trial_id: str, verdict: Verdict) -> dict[str, Any]:
    """What metrics.json records of a trial whose failure is a result."""
    return {"trial_id": trial_id, "status": "error", "error": verdict.cause, **verdict.where}
