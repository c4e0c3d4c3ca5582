"""Liveness of a running trial: the worker's heartbeat, and when the study declares a trial stalled.

The worker (ablate.engine.run_work) writes `heartbeat.json` in the trial folder while an attempt runs: who runs it
(host, Ray node, pid, an attempt token), where it is (phase: starting, loading data, building the model,
training, evaluating on dev, scoring on test, writing the trial folder...; the step and the steps in all), how
many progress ticks it has made, and the slowest interval between two ticks so far. The training loop ticks
after every training step and every evaluation batch (ablate.train.loop, `beat`); a tick costs a clock read, and
the file is written when the phase changes (a few times before the first step, twice per dev evaluation, a few
times at the end) and otherwise at most every `WRITE_EVERY` seconds, never with an fsync: a training step does
no I/O of its own. Each write first looks for the folder's cancel file (the study's request to stop a seed run
ahead of its seed rule), so a cancelled attempt stops within WRITE_EVERY seconds. The file is gone once the
attempt ends.

The study (ablate.engine.ray_adapter.liveness) reads the heartbeats of its running trials and declares one
stalled when its tick count has not moved for longer than its bound, measured on the study's own clock:
  - before its first training step (the worker starting, data loading, building the model, a torch.compile):
    `FIRST_STEP_FACTOR` x S (30 minutes by default), where S is `study --stall-seconds` (default 300);
  - from its first training step on: max(S, `SLOWEST_FACTOR` x the slowest interval between two ticks that
    this attempt has measured so far: a training step or an evaluation batch), so that a trial whose steps are
    slow (a big model, a loaded machine: on 2 cores with 8 processes beside it a step takes ~4x as long) gets a
    bound 20 times its slowest step, and never less than S.
A stalled trial's worker is killed (SIGKILL), the stall is recorded as a failed attempt that is a fault of the
machine (ablate.engine.trial_failures: never told to Optuna or halving), and Ray retries it as `--retries`
says; the study prints one line naming the trial and where it stalled. Knows nothing of Ray or torch.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.run_folder import cancel_path, remove_heartbeat, write_heartbeat

WRITE_EVERY = 2.0  # seconds between two writes of the heartbeat, at most one write per interval
DEFAULT_STALL_SECONDS = 300
MIN_STALL_SECONDS, MAX_STALL_SECONDS = 1, 7 * 24 * 3600
FIRST_STEP_FACTOR = 6  # the bound before the first training step, in units of --stall-seconds
SLOWEST_FACTOR = 20  # the bound after it, in units of the slowest interval between two ticks seen


def check_stall_seconds(seconds: int) -> int:
    """`--stall-seconds`, checked before anything is written."""
    if not MIN_STALL_SECONDS <= seconds <= MAX_STALL_SECONDS:
        raise AblateError(f"--stall-seconds must be from {MIN_STALL_SECONDS} to {MAX_STALL_SECONDS:,} (a week), "
                          f"got {seconds}")
    return seconds


class TrialCancelled(Exception):
    """The study asked this attempt to stop (ablate.run_folder's cancel file): a seed run ahead of the seed rule's
    decision that the rule did not ask for. Not a failure: the attempt's folder is removed."""


class Heartbeat:
    """The worker's side: `beat(phase, step)` at every tick; written to `folder/heartbeat.json` at most every
    WRITE_EVERY seconds. A write that fails (a full disk) is skipped: the trial's own writes will say why. Before
    each write it looks for the folder's cancel file and raises TrialCancelled when it is there."""

    def __init__(self, folder: Path, where: dict[str, Any], total: int = 0, every: float = WRITE_EVERY):
        self.folder = Path(folder)
        self.every, self.total = every, total
        self.record: dict[str, Any] = {"attempt": uuid.uuid4().hex[:12], "pid": os.getpid(),
                                       **{k: where[k] for k in ("host", "node") if k in where},
                                       "phase": "starting", "step": 0, "total": total, "ticks": 0, "trained": False,
                                       "slowest": 0.0}
        self.last_tick: float | None = None
        self.last_write = 0.0
        self.cancel = str(cancel_path(self.folder))
        self._write()

    def __call__(self, phase: str, step: int) -> None:
        now = time.monotonic()
        rec = self.record
        first = phase == "training" and not rec["trained"]
        if rec["trained"] and self.last_tick is not None:
            gap = now - self.last_tick
            if gap > rec["slowest"]:
                rec["slowest"] = gap
        if first:
            rec["trained"] = True
        self.last_tick = now
        rec["ticks"] += 1
        changed = phase != rec["phase"]
        rec["phase"], rec["step"] = phase, step
        if first or changed or now - self.last_write >= self.every:
            if os.path.exists(self.cancel):  # with the write: no I/O of its own at a training step
                raise TrialCancelled(f"cancelled by the study at step {step} ({phase})")
            self._write(now)

    def place(self) -> dict[str, Any]:
        """Where the attempt is now: its phase and step."""
        return {"phase": self.record["phase"], "step": self.record["step"]}

    def _write(self, now: float | None = None) -> None:
        self.last_write = time.monotonic() if now is None else now
        write_heartbeat(self.folder, self.record)

    def close(self) -> None:
        """The attempt ended (well or not): its heartbeat goes."""
        remove_heartbeat(self.folder)


@dataclass(frozen=True)
class Bound:
    seconds: float
    why: str  # how it was derived, for the user


def bound(beat: dict[str, Any] | None, stall_seconds: float) -> Bound:
    """How long the trial may go without a tick (see the module's docstring)."""
    if not beat or not beat.get("trained"):
        return Bound(FIRST_STEP_FACTOR * stall_seconds,
                     f"{FIRST_STEP_FACTOR} x --stall-seconds {stall_seconds:g}, before a first step")
    slowest = float(beat.get("slowest") or 0.0)
    derived = SLOWEST_FACTOR * slowest
    if derived > stall_seconds:
        return Bound(derived, f"{SLOWEST_FACTOR} x its slowest step so far ({slowest:.2f} s)")
    return Bound(float(stall_seconds), f"--stall-seconds {stall_seconds:g}, more than {SLOWEST_FACTOR} x its "
                                       f"slowest step so far ({slowest:.2f} s)")


def where_text(beat: dict[str, Any] | None) -> str:
    """Where a trial was, from its last heartbeat: 'at step 12 of 16 (training) on host h, pid 123'."""
    if not beat:
        return "before its worker wrote a heartbeat (the worker starting)"
    step, total, phase = beat.get("step", 0), beat.get("total") or 0, beat.get("phase", "?")
    at = f"at step {step} of {total}" if total else f"at step {step}"
    on = f" on {beat['host']}, pid {beat.get('pid')}" if beat.get("host") else f" (pid {beat.get('pid')})"
    first = "" if beat.get("trained") else ", before its first training step"
    return f"{at} ({phase}{first}){on}"
