"""What a study may use of the machine (CPUs, GPUs, a cluster address), and how many trials that runs at once."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resources:
    cpus: int
    gpus: int = 0
    gpus_per_trial: float | None = None
    address: str | None = None
    threads: int = 1  # per trial: the spec's, never the machine's
    trial_cpus: int | None = None  # CPUs Ray reserves per trial when it is more than threads (ablate.execute.gpu_plan)

    def gpu_share(self) -> float:
        """Trials share a GPU (4 to a GPU unless ablate.execute.gpu_plan measured or was told otherwise): small models
        leave most of one idle."""
        return 0.0 if self.gpus <= 0 else (self.gpus_per_trial or 0.25)

    def cpus_per_trial(self) -> int:
        """CPUs Ray reserves for a trial: its threads (or the cores the GPU plan gives each trial), or the whole
        machine when it has fewer cores (the trial still runs its threads, so its numbers do not depend on the
        machine)."""
        return max(1, min(max(self.threads, self.trial_cpus or 0), self.cpus))

    def concurrency(self) -> int:
        """Trials at once: as many as the CPUs allow at `threads` each, and no more than the GPU slots."""
        by_cpu = max(1, self.cpus // self.cpus_per_trial())
        if self.gpus > 0:
            return max(1, min(by_cpu, int(self.gpus / self.gpu_share() + 1e-9)))
        return by_cpu
