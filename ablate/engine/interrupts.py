"""Ctrl-C and SIGTERM stop a study the same way: KeyboardInterrupt in the main thread, then the run folder is
left as it is (what finished is kept) and the command says how to resume. SIGTERM gets a handler of ablate's
because Ray's would end the process with exit code 15 while Ray starts, or in a C++ stack dump after; SIGINT
gets one too, because a study started in the background of a script (`ablate study ... &`) inherits SIGINT
ignored, and Python then leaves it ignored: Ctrl-C and `kill -INT` did nothing.

Once a study is stopping (`stopping`), a further SIGINT or SIGTERM is noted, not raised, so that its cleanup
(Ray's shutdown, trials.csv) is not cut short; and unless the cleanup ends (`stopped`) within `GRACE` seconds,
a watchdog thread ends the process whatever still blocks it (its own Ray processes killed, the resume line
printed), so that a study always stops within seconds of the signal."""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt."""

    signum = signal.SIGTERM


GRACE = 20.0  # seconds a stopping study may take before the watchdog ends it
_TERMINATED: list[bool] = []  # set by the handler: Ray re-raises an interrupt as a plain KeyboardInterrupt
_STOPPING: list[int] = []  # the signal that stopped the study, once it is stopping
_STOPPED = threading.Event()  # the cleanup ended: the watchdog stands down
_SAVED: dict[int, object] = {}  # the handlers in place before `stopping`


def _handler(signum, frame):
    _TERMINATED.append(True)
    raise Terminated()


def _quiet(signum, frame):
    """A signal while the study is stopping: it is stopping already."""


def terminate_like_ctrl_c() -> None:
    """Make SIGTERM raise Terminated and SIGINT KeyboardInterrupt in the main thread (set again after Ray has
    started: it sets its own)."""
    if threading.current_thread() is threading.main_thread() and not _STOPPING:
        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def interrupt_signal(exc: BaseException) -> int:
    """The signal behind a KeyboardInterrupt: SIGTERM when one came, else SIGINT (Ctrl-C)."""
    return getattr(exc, "signum", None) or (signal.SIGTERM if _TERMINATED else signal.SIGINT)


def interrupt_behind(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The interrupt (Ctrl-C, SIGTERM) that `exc` was raised while handling, if any: an interrupt's cleanup that
    fails because of the interrupt itself (a line written to a pipe whose reader, `| tee`, the same Ctrl-C ended)
    stopped the study no more than the interrupt did."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__context__
    return None


def stopping(signum: int, last_words: Callable[[], str], grace: float = GRACE) -> None:
    """The study is stopping after `signum`: further signals are quiet, and unless the process has ended
    `grace` seconds from now, the watchdog kills the processes it started (Ray's), prints `last_words()` and
    exits with 128 + signum. Called once; later calls do nothing."""
    if _STOPPING:
        return
    _STOPPING.append(signum)
    _STOPPED.clear()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            _SAVED[sig] = signal.signal(sig, _quiet)
    threading.Thread(target=_watchdog, args=(signum, last_words, grace), name="ablate-stop-watchdog",
                     daemon=True).start()


def stopped() -> None:
    """The stopping study's cleanup ended: the watchdog stands down and the handlers are as they were (the
    process may go on, as a test's does)."""
    if not _STOPPING:
        return
    _STOPPED.set()
    _STOPPING.clear()
    if threading.current_thread() is threading.main_thread():
        for sig, handler in _SAVED.items():
            signal.signal(sig, handler)
    _SAVED.clear()


def _watchdog(signum: int, last_words: Callable[[], str], grace: float) -> None:
    if _STOPPED.wait(grace):
        return
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        line = last_words()
    except Exception:  # noqa: BLE001  the exit must not depend on it
        line = "stopped"
    try:
        sys.stderr.write(f"{line} (it had not stopped {grace:.0f} s after the signal: ended by force)\n")
        sys.stderr.flush()
    finally:
        os._exit(128 + signum)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (none where there is no /proc)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out
