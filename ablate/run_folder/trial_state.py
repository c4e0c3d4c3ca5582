"""A trial folder's files that say where a trial is, not what it found: a paused segment's checkpoint
(resume.pt, then paused.json), the heartbeat of a running attempt (heartbeat.json), and the failed attempts
(failure.json, error.txt). Their one writer and one reader each; what they mean is decided elsewhere
(ablate.engine.planner, ablate.engine.liveness, ablate.engine.trial_failures).

- resume.pt: torch.save of the segment's checkpoint (model, optimiser and data-order state, the curves so far).
- paused.json: written after resume.pt: the trial id, the metrics so far, `evaluations`, `dev_acc` (the dev curve);
  its presence says the checkpoint is complete. Both go once the trial is final.
- heartbeat.json: attempt token, pid, host, node, phase, step, total, ticks, trained, slowest; rewritten at most
  every few seconds (no fsync), removed when the attempt ends.
- failure.json: {"attempts": [{kind, type, error, device, where it ran, memory facts ...}, ...]}, one per failed
  attempt; error.txt: the last failed attempt's traceback. Both are cleared when the trial is handed out anew and
  when it succeeds.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from ablate.atomic_files import atomic_write_bytes, atomic_write_text
from ablate.run_folder.layout import CANCEL, CHECKPOINT, ERROR_TEXT, FAILURE, HEARTBEAT, PAUSED, trials_dir
from ablate.run_folder.trial_records import json_safe


# --- a paused segment: resume.pt and paused.json --------------------------------------------------------------------
def write_paused(folder: str | os.PathLike, checkpoint: bytes, state: dict[str, Any],
                 more: Callable[[], dict[str, Any]] | None = None) -> None:
    """The checkpoint first, then paused.json (`state`, and what `more()` gives once the checkpoint is written): a
    reader that sees paused.json sees a whole checkpoint."""
    folder = Path(folder)
    atomic_write_bytes(folder / CHECKPOINT, checkpoint)
    state = {**state, **(more() if more is not None else {})}
    atomic_write_text(folder / PAUSED, json.dumps({k: json_safe(v) for k, v in state.items()}, indent=2) + "\n")


def read_paused(folder: str | os.PathLike) -> dict[str, Any] | None:
    """paused.json of a trial whose checkpoint is there, else None (not paused, or its checkpoint is gone)."""
    folder = Path(folder)
    try:
        state = json.loads((folder / PAUSED).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) and (folder / CHECKPOINT).is_file() else None


def read_checkpoint(folder: str | os.PathLike) -> dict[str, Any] | None:
    """A paused trial's checkpoint, or None when there is none (or it cannot be read: the segment reruns)."""
    path = Path(folder) / CHECKPOINT
    if not path.is_file() or not (Path(folder) / PAUSED).is_file():
        return None
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  a damaged checkpoint only costs a rerun of the segment
        return None


def remove_paused(folder: str | os.PathLike) -> None:
    """The trial is final: its checkpoint is dead weight."""
    (Path(folder) / CHECKPOINT).unlink(missing_ok=True)
    (Path(folder) / PAUSED).unlink(missing_ok=True)


def checkpointed(run_dir: str | os.PathLike) -> Iterator[Path]:
    """The trial folders of a run that hold a checkpoint."""
    for path in trials_dir(run_dir).glob(f"*/{CHECKPOINT}"):
        yield path.parent


# --- heartbeat.json -------------------------------------------------------------------------------------------------
def write_heartbeat(folder: str | os.PathLike, record: dict[str, Any]) -> None:
    """Replaces the heartbeat (readers see the old beat or the new one); no fsync: it is only a beat. A write that
    fails (a full disk) is skipped: the trial's own writes will say why."""
    path = Path(folder) / HEARTBEAT
    tmp = path.with_name(f".{HEARTBEAT}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def read_heartbeat(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The trial's heartbeat, or None when there is none (not started, ended) or it cannot be read."""
    try:
        data = json.loads((Path(folder) / HEARTBEAT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("ticks"), int) or not isinstance(data.get("attempt"), str):
        return None
    return data


def remove_heartbeat(folder: str | os.PathLike) -> None:
    try:
        (Path(folder) / HEARTBEAT).unlink(missing_ok=True)
    except OSError:
        pass


# --- cancel: the study asks a running attempt to stop -----------------------------------------------------------------
def cancel_path(folder: str | os.PathLike) -> Path:
    """The file whose presence asks the attempt running in `folder` to stop (its heartbeat looks before each write)."""
    return Path(folder) / CANCEL


def request_cancel(folder: str | os.PathLike) -> None:
    """Ask the attempt of `folder` to stop, made before the attempt starts if it has not yet (the folder is made)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        cancel_path(folder).touch()
    except OSError:
        pass  # the trial then runs to its end, and its folder is removed with the seeds the rule did not ask for


def withdraw_cancel(folder: str | os.PathLike) -> None:
    """A trial handed out (again) runs: a request left by an earlier session (a crash after it) no longer holds."""
    try:
        cancel_path(folder).unlink(missing_ok=True)
    except OSError:
        pass


# --- failure.json and error.txt -------------------------------------------------------------------------------------
def read_attempts(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The failed attempts failure.json records, oldest first ([] when none, or it cannot be read)."""
    try:
        data = json.loads((Path(folder) / FAILURE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    attempts = data.get("attempts") if isinstance(data, dict) else None
    return [a for a in attempts if isinstance(a, dict)] if isinstance(attempts, list) else []


def add_attempt(folder: str | os.PathLike, attempt: dict[str, Any]) -> None:
    """One more failed attempt in failure.json (OSError when it cannot be written)."""
    attempts = [*read_attempts(folder), attempt]
    atomic_write_text(Path(folder) / FAILURE, json.dumps({"attempts": attempts}, indent=2) + "\n")


def error_text_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / ERROR_TEXT


def write_error_text(folder: str | os.PathLike, text: str) -> Path:
    """error.txt: a failed attempt's whole traceback (OSError when it cannot be written)."""
    path = error_text_path(folder)
    atomic_write_text(path, text)
    return path


def clear_failures(folder: str | os.PathLike) -> None:
    for name in (FAILURE, ERROR_TEXT):
        (Path(folder) / name).unlink(missing_ok=True)
