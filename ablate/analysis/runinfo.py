"""Facts about how a run was made, read from its folder: spec, budget, versions, commit, machine, devices,
wall time, parameter counts. Shared by methods.md and report.html; nothing here is a hard-coded number."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .context import recorded
from .load import Run
from ablate.engine import package_versions
from ablate.errors import AblateError
from ablate.run_folder import read_spec_bytes

ANALYSIS_PACKAGES = ("scipy", "seaborn", "matplotlib", "markdown-it-py")
PACKAGE_NAMES = {"ablate": "ablate", "torch": "PyTorch", "torchvision": "torchvision", "ray": "Ray",
                 "optuna": "Optuna", "numpy": "NumPy", "pandas": "pandas", "scikit-learn": "scikit-learn",
                 "scipy": "SciPy", "seaborn": "seaborn", "matplotlib": "matplotlib", "markdown-it-py": "markdown-it-py"}


@dataclass
class RunFacts:
    spec_text: str
    sessions: list[float]                 # start times (epoch s) of the launch and each resume
    wall_seconds: float | None            # summed over sessions: start to the last trial that ended in it
    trial_seconds: float | None           # the registered trials' run times, summed
    trials: int                           # registry rows (tuning proposals and final-stage trials)
    devices: dict[str, int]               # device the trials recorded -> number of trials
    machines: list[str]                   # the distinct hosts the trials recorded (else those of the launch and
                                          # resumes): machines, not Ray node ids, which change with every Ray start
    manifest: dict[str, Any] = field(default_factory=dict)
    analysis_packages: dict[str, str | None] = field(default_factory=dict)

    @property
    def packages(self) -> dict[str, str | None]:
        return dict(self.manifest.get("packages") or {})


def _epoch(stamp: Any) -> float | None:
    """A manifest's started_at ('2026-01-01T10:00:00+0000') in seconds since the epoch."""
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(str(stamp), fmt).timestamp()
        except ValueError:
            continue
    return None


def _column(run: Run, name: str) -> list[float]:
    if name not in run.trials:
        return []
    values = [float(v) for v in run.trials[name] if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return [v for v in values if math.isfinite(v)]


def wall_time(sessions: list[float], ends: list[float]) -> float | None:
    """Sum over sessions of (last trial end in the session - session start); None when nothing is known."""
    if not sessions or not ends:
        return None
    order = sorted(sessions)
    total, counted = 0.0, False
    for i, start in enumerate(order):
        stop = order[i + 1] if i + 1 < len(order) else math.inf
        inside = [e for e in ends if start <= e < stop]
        if inside:
            total += max(inside) - start
            counted = True
    return total if counted else None


def facts(run: Run) -> RunFacts:
    try:
        spec_text = read_spec_bytes(run.run_dir).decode("utf-8")
    except (AblateError, UnicodeDecodeError):
        spec_text = run.study.resolved_yaml()
    sessions = [t for t in (_epoch(m.get("started_at")) for m in [run.manifest, *run.resumes]) if t is not None]
    devices = run.trials["device"].dropna().astype(str).value_counts() if "device" in run.trials else {}
    trial_times = _column(run, "total_seconds")
    analysis = package_versions(ANALYSIS_PACKAGES)
    hosts = sorted({str(h) for h in run.trials["host"].dropna()}) if "host" in run.trials else []
    hosts = hosts or sorted({str(m["host"]) for m in [run.manifest, *run.resumes] if m.get("host")})
    return RunFacts(spec_text, sessions, wall_time(sessions, _column(run, "ended_at")),
                    sum(trial_times) if trial_times else None, len(run.trials),
                    {str(k): int(v) for k, v in dict(devices).items()}, hosts, dict(run.manifest), analysis)


def duration(seconds: float | None) -> str:
    """'48 s', '3 min 5 s', '2 h 4 min'; 'not recorded' for None."""
    if seconds is None or not math.isfinite(seconds):
        return "not recorded"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def param_counts(run: Run) -> dict[str, int | None]:
    """Parameters of each arm's model (the config its reported trials recorded: Run.reported_config), built on the
    meta device (no memory, no time) with the input channels and classes the trials recorded; None for an arm
    whose model cannot be built."""
    import torch

    from ablate.models import build_trial_model

    channels, classes = recorded(run, "in_channels") or 1, recorded(run, "num_classes") or 10
    out: dict[str, int | None] = {}
    for arm in run.study.arms:
        try:
            cfg = run.reported_config(arm.name)
            with torch.device("meta"):
                model = build_trial_model(cfg, channels, classes, announce=True)
            out[arm.name] = sum(p.numel() for p in model.parameters())
        except (AblateError, TypeError, ValueError):
            out[arm.name] = None
    return out


def versions_text(f: RunFacts) -> str:
    """'Python 3.11.7, PyTorch 2.14.1, ...' as the manifest recorded them at launch."""
    parts = [f"Python {f.manifest['python']}"] if f.manifest.get("python") else []
    parts += [f"{PACKAGE_NAMES.get(k, k)} {v}" for k, v in f.packages.items() if v and k != "ablate"]
    return ", ".join(parts)


def analysis_versions_text(f: RunFacts) -> str:
    return ", ".join(f"{PACKAGE_NAMES.get(k, k)} {v}" for k, v in f.analysis_packages.items() if v)
