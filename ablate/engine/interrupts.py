"""Ctrl-C and SIGTERM stop a study the same way: KeyboardInterrupt in the main thread, then the run folder is
left as it is (what finished is kept) and the command says how to resume. SIGTERM gets a handler of ablate's
because Ray's would end the process with exit code 15 while Ray starts, or in a C++ stack dump after."""
from __future__ import annotations

import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt."""

    signum = signal.SIGTERM


_TERMINATED: list[bool] = []  # set by the handler: Ray re-raises an interrupt as a plain KeyboardInterrupt


def _handler(signum, frame):
    _TERMINATED.append(True)
    raise Terminated()


def terminate_like_ctrl_c() -> None:
    """Make SIGTERM raise Terminated in the main thread (set again after Ray has started: it sets its own)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _handler)


def interrupt_signal(exc: BaseException) -> int:
    """The signal behind a KeyboardInterrupt: SIGTERM when one came, else SIGINT (Ctrl-C)."""
    return getattr(exc, "signum", None) or (signal.SIGTERM if _TERMINATED else signal.SIGINT)
