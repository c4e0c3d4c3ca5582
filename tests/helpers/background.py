"""Real studies that a test module needs, started in the background when the test session starts, so that they
run (mostly starting Ray and its workers, one core each) while the unit tests do; the tests that read them
run last (conftest.py orders them so).

A module declares a job with `register(fixture, make)`: when a selected test uses `fixture`, `make(tmp)` runs
from the session's start, given a fresh temporary folder, and the fixture takes its result with
`result(fixture, mktemp)` (which re-raises what failed in it). A job hands `on_exit` what must wait for the
session's end (e.g. unmounting a disk the tests read from). Jobs run one after another on one background
thread, in the order registered, so that no more Ray sessions start at once than one job starts itself; a job
nobody selected never runs. A job's processes get the environment as it was
when the session started (`environ()`), never what a unit test on the main thread has just set (a test fault,
a data folder).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

_REGISTERED: dict[str, Callable[[Path], Any]] = {}
_STARTED: dict[str, Future] = {}
_CLEANUPS: list[Callable[[], None]] = []
_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
_ENVIRON: dict[str, str] = {}


def environ() -> dict[str, str]:
    """The environment for a study process: as the session started, once `snapshot()` has been called."""
    return dict(_ENVIRON or os.environ)


def snapshot() -> None:
    if not _ENVIRON:
        _ENVIRON.update(os.environ)


def register(fixture: str, make: Callable[[Path], Any]) -> None:
    _REGISTERED.setdefault(fixture, make)


def fixtures() -> set[str]:
    return set(_REGISTERED)


def on_exit(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` when the session ends (after every test has read what the job made)."""
    with _LOCK:
        _CLEANUPS.append(cleanup)


def start(needed: set[str], mktemp: Callable[[str], Path]) -> None:
    global _POOL
    names = [name for name in _REGISTERED if name in needed and name not in _STARTED]
    if not names:
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(1, thread_name_prefix="background-study")
    for name in names:
        _STARTED[name] = _POOL.submit(_REGISTERED[name], mktemp(name))


def result(fixture: str, mktemp: Callable[[str], Path]) -> Any:
    """The job's result: started in the background, or made now (a test run on its own, e.g. by -k)."""
    if fixture not in _STARTED:
        start({fixture}, mktemp)
    return _STARTED[fixture].result()


def finish() -> None:
    """Wait for what still runs and clean up after every job."""
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(wait=True)
        _POOL = None
    while _CLEANUPS:
        _CLEANUPS.pop()()
