"""A run's manifest: what launched it and on what (command, host, hardware, package versions, git commit)."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from ablate.messages import mask_url
from ablate.spec.study_spec import Study


PACKAGES = ("ablate", "torch", "torchvision", "ray", "optuna", "numpy", "pandas", "scikit-learn")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).resolve().parent,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware(gpus: int = 0) -> dict[str, Any]:
    """The machine the study was launched on, for a methods section: CPU model, logical CPUs, memory, and the
    names of the visible GPUs (only asked of torch when there are some)."""
    cpu = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
    except OSError:
        pass
    memory = None
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (AttributeError, OSError, ValueError):
        pass
    names: list[str] = []
    if gpus:
        try:
            import torch

            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:  # noqa: BLE001  a description of the machine must never stop a study
            names = []
    return {"cpu": cpu or platform.processor() or None, "logical_cpus": os.cpu_count(), "memory_gib": memory,
            "gpus": names}


def package_versions(names) -> dict[str, str | None]:
    """Installed version of each package (None where it is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def manifest(study: Study, dataset: str, resources: dict[str, Any]) -> dict[str, Any]:
    from ablate import __version__

    # This copy's version: the distribution is named ablate-residuals (pyproject.toml), and the name `ablate` on
    # the package index belongs to another project, whose version would be reported if it were installed.
    versions = {**package_versions(PACKAGES), "ablate": __version__}
    return {
        "study": study.name, "budget": study.budget, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # without the password of a --storage URL (the command reaches report.html, which is meant to be sent)
        "command": [Path(sys.argv[0]).name, *map(mask_url, sys.argv[1:])], "host": socket.gethostname(),
        "platform": platform.platform(), "python": platform.python_version(), "packages": versions,
        "git_commit": git_commit(), "dataset": dataset, "resources": resources,
        "hardware": hardware(int(resources.get("gpus") or 0)),
    }
