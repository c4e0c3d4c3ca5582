"""How much memory this process can have: the machine's RAM, a container's (cgroup) limit, `ulimit -v` / `-d`, and
how much is free now; and whether a failure is memory running out. Imports no torch.

A trial whose estimated peak (ablate.execute.estimate.trial_memory) is above the smallest of these limits can never
run here, whatever else the machine is doing: that is the config's problem (exit 2). One below it that still runs out
of memory ran out because of what else held memory at the time: the machine's state (exit 3, run it again).

A ulimit counts something else than resident memory: `-v` the address space (thread stacks and allocator arenas
reserved, not used), `-d` private writable mappings (not the library pages a trial touches as it runs). Comparing
the estimate's resident growth with the room they leave is therefore approximate, and on the safe side under
`ulimit -d`: two trials estimated to grow by 1.4 and 2.5 GB ran to their end under a data limit leaving 0.8 times
that (AMD EPYC, torch 2.14.1 CPU).
"""
from __future__ import annotations

import os
import re
import resource
from dataclasses import dataclass
from pathlib import Path

_UNLIMITED = 1 << 60  # cgroup v1 writes 9223372036854771712 for "no limit"


@dataclass(frozen=True)
class MemoryLimits:
    """What this process can be given, in bytes, as the kernel says when read."""

    total: int  # physical RAM (MemTotal)
    available: int  # free now (MemAvailable, or what is left under the cgroup's limit when that is less)
    resident: int  # this process's resident memory when read (VmRSS)
    cgroup: int | None = None  # the container's memory limit, where it is below the RAM
    rlimits: tuple[tuple[int, int, str], ...] = ()  # (limit, this process's use of it when read, its name)

    def room(self) -> tuple[int, str]:
        """(the most this process could ever grow by, whatever else runs: the tightest limit less what the process
        already holds of it; that limit, in words)."""
        found = [(self.total - self.resident, f"this machine's {size_text(self.total)} of RAM")]
        if self.cgroup is not None:
            found.append((self.cgroup - self.resident, f"this container's memory limit (cgroup) of "
                                                       f"{size_text(self.cgroup)}"))
        found += [(limit - used, f"this process's {name} of {size_text(limit)}") for limit, used, name in self.rlimits]
        return min(found)

    def free(self) -> int:
        """How much more this process can have now."""
        return self.available


@dataclass(frozen=True)
class GpuMemory:
    """A CUDA device's memory (torch.cuda.mem_get_info), in bytes."""

    total: int
    available: int
    name: str
    index: int = 0

    def room(self) -> tuple[int, str]:
        return self.total, f"{self.name}'s {size_text(self.total)}"

    def free(self) -> int:
        return self.available


def _meminfo(path: Path) -> dict[str, int]:
    """A /proc/meminfo or /proc/self/status file's "Key: N kB" lines, in bytes."""
    out = {}
    try:
        for line in path.read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    except OSError:
        pass
    return out


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) < _UNLIMITED else None


def memory_limits(proc: Path = Path("/proc"), cgroup: Path = Path("/sys/fs/cgroup")) -> MemoryLimits:
    """This process's memory limits as the kernel states them (the paths are parameters for tests)."""
    info, status = _meminfo(proc / "meminfo"), _meminfo(proc / "self" / "status")
    total = info.get("MemTotal") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = info.get("MemAvailable", info.get("MemFree", total))
    resident = status.get("VmRSS") or resident_bytes()
    limit = None
    for limit_file, used_file in (("memory.max", "memory.current"),  # cgroup v2
                                  ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):  # v1
        limit = _read_int(cgroup / limit_file)
        if limit is not None:
            if limit < total:
                available = min(available, max(0, limit - (_read_int(cgroup / used_file) or 0)))
            break
    rlimits = []
    for which, name, used in ((resource.RLIMIT_AS, "virtual memory limit (ulimit -v)", status.get("VmSize", 0)),
                              (resource.RLIMIT_DATA, "data limit (ulimit -d)", status.get("VmData", 0))):
        soft = resource.getrlimit(which)[0]
        if soft != resource.RLIM_INFINITY:
            rlimits.append((soft, used, name))
            available = min(available, max(0, soft - used))
    return MemoryLimits(total=total, available=available, resident=resident,
                        cgroup=limit if limit is not None and limit < total else None, rlimits=tuple(rlimits))


def resident_bytes() -> int:
    """This process's resident memory now (VmRSS), else the most it has had."""
    for line in _lines(Path("/proc/self/status")):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


# What torch, Python and the C library say when an allocation fails (CPU and CUDA).
_OOM_TEXT = ("can't allocate memory", "cannot allocate memory", "out of memory", "not enough memory")
_REQUEST = (re.compile(r"tried to allocate (\d+) bytes", re.I),
            re.compile(r"tried to allocate ([\d.]+) (KiB|MiB|GiB|TiB)", re.I))
_UNITS = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError, or an allocator's RuntimeError saying memory ran out."""
    if isinstance(exc, MemoryError) or any(c.__name__ == "OutOfMemoryError" for c in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc).lower() for t in _OOM_TEXT)


def requested_bytes(exc: BaseException) -> int:
    """The size of the allocation that failed, where the message says it (else 0)."""
    text = str(exc)
    match = _REQUEST[0].search(text)
    if match:
        return int(match.group(1))
    match = _REQUEST[1].search(text)
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()]) if match else 0


def size_text(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MB"


def gpu_memory(index: int) -> GpuMemory:
    """CUDA device `index`'s total and free memory now (torch.cuda.mem_get_info)."""
    import torch

    free, total = torch.cuda.mem_get_info(index)
    return GpuMemory(total=total, available=free, name=f"GPU {index} ({torch.cuda.get_device_name(index)})",
                     index=index)
