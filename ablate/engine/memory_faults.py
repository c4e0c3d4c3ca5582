"""Out of memory: the machine's fault, or the config's?

A trial that runs out of memory may have met a machine that other processes had filled (a fault of the machine:
`--resume` later runs it again), or a config that cannot fit (a result: running it again fails again, forever).
When an attempt fails out of memory (MemoryError, torch's OutOfMemoryError, or an allocator's "cannot allocate
memory"), the worker records what the machine could tell at that moment (`facts`): where the attempt was (its
heartbeat's phase and step), the bytes it asked for when the message says (torch says), and on its device the
memory in all, the memory free and the memory the trial's own process held (its RSS on a CPU; what torch
reserved on a GPU). Other processes held `total - free - own`.

The failure is the config's (`config_verdict`) when every attempt of the trial ran out of memory, all at the same
place (phase and step), and at each of them the machine was not short of memory: other processes held at most
half of it (`SHORT_FRACTION`), or the trial asked for more than the device has in all. With one attempt only
(`--retries 0`), it must have asked for more than the device has in all. Anything else (the machine short at
some attempt, attempts out of memory at different places, a worker killed by the kernel's OOM killer, which can
record nothing) stays a fault of the machine. Imports torch only to read a GPU's memory.
"""
from __future__ import annotations

import json
import re
from typing import Any

SHORT_FRACTION = 0.5  # other processes holding more than this share of the memory: the machine was short of it
_MESSAGES = ("out of memory", "cannot allocate memory", "can't allocate memory", "failed to allocate memory")
_UNITS = {"b": 1, "kib": 2**10, "kb": 2**10, "mib": 2**20, "mb": 2**20, "gib": 2**30, "gb": 2**30,
          "tib": 2**40, "tb": 2**40}


def is_out_of_memory(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError) or any(c.__name__ == "OutOfMemoryError" for c in type(exc).__mro__):
            return True
        if any(text in str(exc).lower() for text in _MESSAGES):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def requested_bytes(message: str) -> int | None:
    """The allocation an out-of-memory message names: torch's CPU allocator ('you tried to allocate 123 bytes')
    or CUDA's ('Tried to allocate 2.00 GiB')."""
    found = re.search(r"tried to allocate (\d+) bytes", message, re.IGNORECASE)
    if found:
        return int(found[1])
    found = re.search(r"tried to allocate ([\d.]+) ?([KMGT]i?B|B)\b", message, re.IGNORECASE)
    if found:
        return int(float(found[1]) * _UNITS[found[2].lower()])
    return None


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[name] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def _own_rss() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_memory(device: str) -> dict[str, Any]:
    """The device's memory now: total, free, and what this process holds of it (bytes; None where unknown)."""
    if device.startswith("cuda"):
        try:
            import torch

            free, total = torch.cuda.mem_get_info()
            return {"total": int(total), "free": int(free), "own": int(torch.cuda.memory_reserved())}
        except Exception:  # noqa: BLE001  a GPU that cannot answer tells nothing
            return {"total": None, "free": None, "own": None}
    info = _meminfo()
    return {"total": info.get("MemTotal"), "free": info.get("MemAvailable"), "own": _own_rss()}


def facts(exc: BaseException, device: str, place: dict[str, Any]) -> dict[str, Any]:
    """What a failed attempt records of memory: {} unless it ran out of memory."""
    if not is_out_of_memory(exc):
        return {}
    text, cause = str(exc), exc
    while cause is not None and requested_bytes(text) is None:
        cause = cause.__cause__ or cause.__context__
        text = str(cause) if cause is not None else text
    return {"memory": {"device": device.split(":")[0], "place": place, "requested": requested_bytes(text),
                       **machine_memory(device)}}


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def _never_fits(m: dict[str, Any]) -> bool:
    return m.get("requested") is not None and m.get("total") is not None and m["requested"] > m["total"]


def _not_short(m: dict[str, Any]) -> bool:
    total, free, own = m.get("total"), m.get("free"), m.get("own")
    if total is None or free is None:
        return False
    others = total - free - (own or 0)
    return others <= SHORT_FRACTION * total


def config_verdict(attempts: list[dict[str, Any]], failures: int) -> tuple[str, str] | None:
    """(cause, why) when the trial's running out of memory is its config's (see the module's docstring), else
    None. `attempts`: the trial's failure records, `failures`: the attempts Ray counted."""
    records = [a.get("memory") for a in attempts]
    if not attempts or len(attempts) < failures or not all(isinstance(m, dict) for m in records):
        return None
    places = {json.dumps(m.get("place"), sort_keys=True) for m in records}  # phase and step
    if len(places) != 1:
        return None
    if not all(_never_fits(m) or _not_short(m) for m in records):
        return None
    if len(records) < 2 and not _never_fits(records[0]):
        return None
    # The cause is the trial's recorded error (metrics.json, trials.csv): nothing in it may change from run to run
    # (free memory does), so that trials.csv stays comparable; what the machine held goes in the line said.
    last = records[-1]
    place, device, total = last.get("place") or {}, last.get("device", "cpu"), last.get("total")
    asked = f"asked for {_gib(last['requested'])} of" if last.get("requested") is not None else "on"
    cause = (f"out of memory at step {place.get('step')} ({place.get('phase')}) on every attempt ({asked} the "
             f"{device}'s {_gib(total)})")
    others = max((m["total"] - m["free"] - (m.get("own") or 0) for m in records
                  if m.get("total") is not None and m.get("free") is not None), default=None)
    again = "on each of its attempts" if len(records) > 1 else "on its one attempt (--retries 0)"
    why = (f"a property of the config: it ran out of memory at the same place {again} while the machine was not "
           f"short of memory (at each, other processes held at most {_gib(others)}, at most {SHORT_FRACTION:.0%} of "
           "it; or it asked for more than the machine has in all)")
    return cause, why
