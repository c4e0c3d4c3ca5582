"""How a message reaches the user: on one line, and with no secret in it. Every error line, manifest field and
report text that may hold a storage URL or a name from a file goes through here. Imports nothing of ablate."""
from __future__ import annotations

import os
import re
from typing import TextIO


def _patterns(stop: str) -> tuple[re.Pattern, re.Pattern]:
    """scheme://user:PASSWORD@ (user may be empty; the password runs to the last @, as it may hold an unescaped
    @ or /) and a query parameter naming a secret (?password=, &sslpassword=, ;token= ...); `stop`: characters a
    URL cannot hold where it sits (none in a string that is one URL; blanks and quotes in a message)."""
    anything = f"[^{stop}]" if stop else "."
    userinfo = re.compile(rf"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@{stop}]*):{anything}*@", re.DOTALL)
    query = re.compile(rf"(?P<head>[?&;][^=&#{stop}]*(?:pass|pwd|secret|token)[^=&#{stop}]*=)[^&#{stop}]*",
                       re.IGNORECASE | re.DOTALL)
    return userinfo, query


IN_URL = _patterns("")
IN_TEXT = _patterns("\\s'\"")


def _mask(text: str, patterns: tuple[re.Pattern, re.Pattern]) -> str:
    userinfo, query = patterns
    return query.sub(r"\g<head>***", userinfo.sub(r"\g<head>:***@", text))


def mask_url(url: str) -> str:
    """A storage URL (or one command-line argument) with every password shown as ***: user:PASSWORD@,
    :PASSWORD@, and any query parameter naming a pass, pwd, secret or token (?password=PASSWORD). Fit for a
    manifest or a report."""
    return _mask(url, IN_URL)


def mask_text(text: str) -> str:
    """A message or a traceback with the password of every URL in it shown as *** (a URL ends at a blank or a
    quote here)."""
    return _mask(text, IN_TEXT)


def one_line(message: str) -> str:
    """A message as one line of plain text: a newline, a terminal escape or any other control character from a
    file name or a spec key is shown escaped, and a storage password in a URL as ***."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in mask_text(message))


def write_line(stream: TextIO, line: str) -> bool:
    """Write one line to `stream` (stderr, stdout); False when its reader has gone: a pipe into `tee` that the same
    Ctrl-C ended. The stream is then pointed at /dev/null (Python's advice for a broken pipe), so that neither a
    later line nor the interpreter's flush at exit fails and turns an interruption into a crash."""
    try:
        stream.write(line + "\n")
        stream.flush()
        return True
    except BrokenPipeError:
        closed_output(stream)
        return False


def closed_output(stream: TextIO) -> None:
    """`stream`'s reader has gone (writing raised BrokenPipeError): what is still written to it goes to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's captured stream): nothing to do
        pass
