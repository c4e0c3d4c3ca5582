"""Peak resident memory of a study's processes: each Ray trial worker, the study process, and one `train` of the
study's first trial config alone.

Runs `ablate study NAME --budget B` into a temporary folder while a poller reads /proc every 0.25 s (VmRSS of
the study itself and every process it started whose command line is a Ray trial worker, `ray::ImplicitFunc...`: other
programs on the machine may run Ray too; the registry's rows say how many trials each worker's pid ran), then one
`ablate train` of the same trial config, whose peak the kernel reports (ru_maxrss of os.wait4). Prints each
worker's peak (and its anonymous, file-backed and shared parts at that moment), the study's, the train's, and each
against the 1 GB target. Linux only (reads /proc).

    python benchmarks/worker_memory.py [--study residual-ablation] [--budget smoke] [--keep RUN_DIR]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from ablate.run_folder.registry import read_registry

ROOT = Path(__file__).resolve().parent.parent
GB = 10 ** 9  # the 1 GB, in bytes (954 MiB): the stricter reading of the target


PARTS = ("RssAnon", "RssFile", "RssShmem")  # what VmRSS is the sum of (/proc/PID/status, Linux 4.5 on)


def _rss(pid: str) -> tuple[int, dict[str, int]] | None:
    """VmRSS in bytes and its parts: anonymous memory (the process's own heap and stacks), file-backed pages (the
    code of the shared libraries it loaded, torch's CUDA libraries among them: the same pages in every process that
    maps them) and shared memory."""
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = {k: int(v.split()[0]) * 1024 for k, _, v in (line.partition(":") for line in status)
                      if k in ("VmRSS", *PARTS)}
        return fields.pop("VmRSS"), fields
    except (OSError, KeyError, ValueError, IndexError):
        return None


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state; the name may hold spaces or ")"


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        pid = _parent(pid)
        if pid == ancestor:
            return True
    return False


def _role(pid: str, study_pid: int) -> str | None:
    """"study", "worker" (a Ray trial worker the study started: other programs on this machine may run Ray too), or
    None."""
    if int(pid) == study_pid:
        return "study"
    try:
        first = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return None
    return "worker" if first.startswith("ray::ImplicitFunc") and _descends(int(pid), study_pid) else None


def _torch_build() -> str:
    """The torch every process here ran (the study's and train's are this interpreter's): its version and whether it
    is a CUDA build, which loads its CUDA libraries (cuBLAS among them) into every process, on a CPU too."""
    import torch

    kind = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    return f"{torch.__version__} ({kind}), Python at {sys.executable}"


def poll(study_pid: int, peaks: dict[str, tuple[str, int, dict[str, int]]], stop: threading.Event) -> None:
    """Each process's highest VmRSS seen, with its parts at that moment."""
    while not stop.is_set():
        for pid in filter(str.isdigit, os.listdir("/proc")):
            role = _role(pid, study_pid)
            seen = _rss(pid) if role else None
            if seen is not None and seen[0] > peaks.get(pid, (role, 0, {}))[1]:
                peaks[pid] = (role, *seen)
        time.sleep(0.25)


def _parts(parts: dict[str, int]) -> str:
    return ", ".join(f"{name[3:].lower()} {parts[name] / 2**20:.0f}" for name in PARTS if name in parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="residual-ablation")
    parser.add_argument("--budget", default="smoke")
    parser.add_argument("--keep", type=Path, help="run the study into this new folder and keep it (to read its "
                        "timelines with study_efficiency.py --run)")
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists():
        print(f"error: --keep {args.keep}: that folder exists; name a new one", file=sys.stderr)
        sys.exit(2)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory(prefix="ablate-memory-") as tmp:
        run = args.keep.resolve() if args.keep is not None else Path(tmp) / "run"
        peaks: dict[str, tuple[str, int, dict[str, int]]] = {}
        stop = threading.Event()
        study = subprocess.Popen([sys.executable, "-m", "ablate", "study", args.study, "--budget", args.budget,
                                  "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        poller = threading.Thread(target=poll, args=(study.pid, peaks, stop), daemon=True)
        poller.start()
        _, err = study.communicate()
        stop.set()
        poller.join()
        if study.returncode != 0:
            sys.exit(f"the study failed (exit {study.returncode}): {err.decode(errors='replace')[-1000:]}")
        trials = Counter(str(row["pid"]) for row in read_registry(run))
        config = next((run / "trials").glob("*/config.yaml"))
        train = subprocess.Popen([sys.executable, "-m", "ablate", "train", "--config", str(config), "--out",
                                  str(Path(tmp) / "train")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=env, cwd=ROOT)
        _, status, usage = os.wait4(train.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit("the train of the study's first trial config failed")
    workers = sorted(((rss, pid, parts) for pid, (role, rss, parts) in peaks.items() if role == "worker"), reverse=True)
    study_peak = max((rss for role, rss, _ in peaks.values() if role == "study"), default=0)
    train_peak = usage.ru_maxrss * 1024
    ran = sum(1 for _, pid, _ in workers if trials[pid])
    print(f"study {args.study} ({args.budget}): {len(workers)} Ray trial worker process(es), {ran} of them named by the "
          f"registry as where its {sum(trials.values())} trials ran")
    print(f"torch {_torch_build()}")
    for rss, pid, parts in workers:
        print(f"worker pid {pid}: peak RSS {rss / 2**20:7.0f} MiB ({rss / GB:.3f} x the 1 GB target), "
              f"{trials[pid]} trial(s) in the registry; at the peak, MiB: {_parts(parts)}")
    print(f"study process: peak RSS {study_peak / 2**20:7.0f} MiB")
    print(f"train alone (first trial's config): peak RSS {train_peak / 2**20:7.0f} MiB ({train_peak / GB:.3f} x the 1 GB target)")


if __name__ == "__main__":
    main()
