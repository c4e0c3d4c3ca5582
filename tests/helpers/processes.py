"""Studies as real processes, for the kill-and-resume tests: start, watch the run folder, kill the whole
process tree."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablate.run_folder.registry import read_registry
from helpers import background


ROOT = Path(__file__).resolve().parents[2]
CLI = str(ROOT / "cli.py")


def start(*args, log=None):
    """A study process. With `log` (a path) its output goes to that file: a process nobody reads while it
    runs must not block on a full pipe; `output(proc)` reads it either way."""
    out = open(log, "w") if log else subprocess.PIPE
    proc = subprocess.Popen([sys.executable, CLI, "study", *map(str, args)], cwd=ROOT,
                            env={**background.environ(), "PYTHONUNBUFFERED": "1"},
                            stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    proc.log = log
    return proc


def output(proc):
    return Path(proc.log).read_text()[-3000:] if proc.log else proc.stdout.read()[-3000:]


def descendants(pid):
    """Every process below pid (the product's own walk of /proc)."""
    from ablate.engine.interrupts import descendants as walk

    return walk(pid)


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_tree(proc):
    """SIGKILL the study and every process it started, as a machine crash would."""
    pids = [proc.pid, *descendants(proc.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    deadline = time.time() + 20
    while any(Path(f"/proc/{p}").exists() and "zombie" not in Path(f"/proc/{p}/status").read_text(errors="ignore").lower()
              for p in pids if Path(f"/proc/{p}/status").exists()) and time.time() < deadline:
        time.sleep(0.1)


def raw_registry_lines(run_dir):
    path = run_dir / "trials.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def wait_until(proc, run_dir, predicate, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = read_registry(run_dir) if (run_dir / "spec.yaml").exists() else []
        if predicate(rows):
            return rows
        if proc.poll() is not None:
            pytest.fail(f"study ended before the kill point: {proc.stdout.read()[-2000:]}")
        time.sleep(0.05)
    pytest.fail("kill point not reached in time")


def finished_trials(run_dir):
    out = {}
    for path in (run_dir / "trials").glob("*/metrics.json"):
        text = path.read_text()
        if json.loads(text).get("status") in ("ok", "diverged"):
            out[path.parent.name] = text
    return out


def listening_sockets(pids):
    """(address, port, pid) of every listening TCP socket owned by `pids`, from /proc."""
    inodes = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*") if Path(f"/proc/{pid}/fd").exists() else []:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes[target[8:-1]] = pid
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] != "0A" or parts[9] not in inodes:  # 0A = LISTEN
                continue
            hex_addr, hex_port = parts[1].split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc stores each 32-bit word in host (little-endian) order
            words = [raw[i:i + 4][::-1] for i in range(0, len(raw), 4)]
            addr = b"".join(words)
            if width == 8:
                text = ".".join(str(b) for b in addr)
            else:
                text = "::ffff:" + ".".join(str(b) for b in addr[12:]) if addr[:12] == b"\0" * 10 + b"\xff\xff" else addr.hex()
            found.append((text, int(hex_port, 16), inodes[parts[9]]))
    return found


LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "00000000000000000000000000000001"}
