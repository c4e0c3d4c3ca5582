"""How the `ablate` command line fails: bad input of any kind ends in one line on stderr and exit code 2,
with nothing written; a failure of ablate's own ends in one line and exit code 1, its traceback written to
a file the line names (the command's output folder when it has one); Ctrl-C ends in exit code 130."""
from __future__ import annotations

import functools
import sys
import tempfile
import time
import traceback
from pathlib import Path

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from ablate.engine import interrupt_behind
from ablate.messages import mask_text, one_line, write_line
from ablate.errors import AblateError
from ablate.run_folder import ERROR_TEXT


class OneLineErrors(TyperGroup):
    """Bad flags become one line on stderr and exit 2, under the console script and Typer's test runner alike."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except TyperException as exc:
            if isinstance(exc, (typer.Exit, typer.Abort)) or not hasattr(exc, "format_message"):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":
                typer.echo(exc.format_message())
                return 0 if not standalone_mode else sys.exit(0)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            typer.echo(one_line(f"error: {exc.format_message()}{hint}"), err=True)
            rv = 2
        except typer.Abort:
            typer.echo("aborted", err=True)
            rv = 130
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)



def fail(message: str) -> None:
    typer.echo(one_line(f"error: {message}"), err=True)
    raise typer.Exit(2)


class _Crash:
    """Where the traceback of an unexpected failure goes: set by a command once it has an output folder."""

    folder: Path | None = None


def error_folder(folder: Path) -> None:
    _Crash.folder = Path(folder)


def save_traceback(exc: BaseException) -> str:
    """Write the traceback (passwords masked) to error.txt in the command's output folder (else a temporary
    file); says where."""
    text = mask_text("".join(traceback.format_exception(exc)))
    folder = _Crash.folder if _Crash.folder is not None and _Crash.folder.is_dir() else None
    target = folder / ERROR_TEXT if folder else Path(tempfile.gettempdir()) / f"ablate-error-{timestamp()}.txt"
    try:
        target.write_text(text, encoding="utf-8")
        return f"the full traceback is in {target}"
    except OSError:
        return "the traceback could not be written"


def _crash(exc: BaseException) -> None:
    where = save_traceback(exc)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    typer.echo(one_line(f"error: {type(exc).__name__}{': ' + first if first else ''} (a failure inside ablate, not "
                        f"of your input; {where})"), err=True)
    raise typer.Exit(1)


def say(line: str) -> None:
    """A command's last line, on stderr: dropped where its reader has gone (`2>&1 | tee`, ended by the Ctrl-C that
    this line reports), so that the exit code stays the one the line would explain."""
    write_line(sys.stderr, line)


def interrupted(exc: KeyboardInterrupt) -> None:
    """Ctrl-C (exit 130) or SIGTERM (143), said in one word."""
    signum = getattr(exc, "signum", 2)
    say("terminated" if signum == 15 else "interrupted")
    raise typer.Exit(128 + signum)


def handles_errors(func):
    """The toolkit's own errors: one line, exit 2. Anything else: one line, exit 1, traceback in a file."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        _Crash.folder = None
        try:
            return func(*args, **kwargs)
        except AblateError as exc:
            fail(str(exc))
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM where a command turns it into one (exit 143)
            interrupted(exc)
        except Exception as exc:  # noqa: BLE001  every other failure still ends in one line
            interrupt = interrupt_behind(exc)
            if interrupt is not None:  # its cleanup failed, e.g. a progress line on a pipe the Ctrl-C closed
                interrupted(interrupt)
            _crash(exc)

    return wrapper


def timestamp() -> str:
    """The local time as YYYYmmdd-HHMMSS, for a new folder's or file's name."""
    return time.strftime("%Y%m%d-%H%M%S")
