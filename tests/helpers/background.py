"""The machinery that runs real studies in the background of a test session, one after another on one thread, so
that they run (mostly starting Ray and its workers, one core each) while the unit tests do. Which studies there
are, their fixtures, and the order of the tests that read them: helpers.background_studies, the one place that
declares them.

`start(jobs, mktemp)` submits each job `make(tmp)` with a fresh temporary folder; `result(name, make, mktemp)`
waits for it (or starts it now, for a test run on its own) and re-raises what failed in it. A job hands
`on_exit` what must wait for the session's end (e.g. unmounting a disk the tests read from). One thread, so that
no more Ray sessions start at once than one job starts itself. A job's processes get the environment as it was
when the session started (`environ()`), never what a unit test on the main thread has just set (a test fault,
a data folder).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

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


def on_exit(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` when the session ends (after every test has read what the job made)."""
    with _LOCK:
        _CLEANUPS.append(cleanup)


def start(jobs: dict[str, Callable[[Path], Any]], mktemp: Callable[[str], Path]) -> None:
    """Submit each job not yet started, in the order given."""
    global _POOL
    names = [name for name in jobs if name not in _STARTED]
    if not names:
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(1, thread_name_prefix="background-study")
    for name in names:
        _STARTED[name] = _POOL.submit(jobs[name], mktemp(name))


def result(name: str, make: Callable[[Path], Any], mktemp: Callable[[str], Path]) -> Any:
    """The job's result: started in the background, or made now (a test run on its own, e.g. by -k)."""
    start({name: make}, mktemp)
    return _STARTED[name].result()


def finish() -> None:
    """Wait for what still runs and clean up after every job."""
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(wait=True)
        _POOL = None
    while _CLEANUPS:
        _CLEANUPS.pop()()
