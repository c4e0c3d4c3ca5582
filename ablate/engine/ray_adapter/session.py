"""The Ray session of a study: its environment (loopback only, no telemetry, no logs of Ray's own), a short
private folder for its sockets, and starting and stopping it (or attaching to a cluster).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

from ablate.errors import AblateError
from ablate.engine import Resources, Terminated, terminate_like_ctrl_c
from ablate.run_folder import read_ray_tmp, write_ray_tmp


def check_address(address: str, timeout: float = 3.0) -> None:
    """Fail fast, before any folder exists, when nobody listens at a Ray cluster address."""
    if address == "auto":
        return
    host, _, port = address.replace("ray://", "").rpartition(":")
    if not host or not port.isdigit():
        raise AblateError(f"--address {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise AblateError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with 'ray start --head' or drop --address") from None


def _ray_env(address: str | None) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # No C++ handler of fatal signals in the driver: it took SIGTERM for a crash (a stack dump, exit 134).
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    # Ctrl-C reaches ablate, which stops Ray and says how to resume (Ray's own handler would suggest
    # Tuner.restore, which is not how a study resumes).
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # A failed trial gets one line of ablate's (ray_adapter.searcher), not Ray's traceback under Ray's trial id.
    os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "0"
    # Ray's own per-trial CSV/JSON/TensorBoard logs would duplicate curves.csv.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000000")
    host = (address or "").replace("ray://", "").rpartition(":")[0]
    if address is None or host.startswith("127.") or host == "localhost":
        # Keeps a local Ray (or this driver on a loopback cluster) on 127.0.0.1 instead of the
        # machine's network address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def ray_temp_dir(run_dir: Path) -> Path:
    """A short private folder for Ray's session files and sockets (their paths must stay under 107
    bytes, which a run folder's path cannot promise), recorded in the run folder so that one left by a
    crash is removed when the run resumes."""
    stale = read_ray_tmp(run_dir)
    if stale is not None and stale.name.startswith("ablate-ray-"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix="ablate-ray-", dir="/tmp" if os.path.isdir("/tmp") else None))
    write_ray_tmp(run_dir, tmp)
    return tmp


def start_ray(resources: Resources, temp_dir: Path) -> None:
    _ray_env(resources.address)  # before Ray's first import: it reads these when imported
    import ray

    try:
        if resources.address:
            ray.init(address=resources.address, logging_level="WARNING", log_to_driver=False)
        else:
            # Every Ray server binds the node address; 127.0.0.1 keeps them all off the network interfaces.
            ray.init(num_cpus=resources.cpus, num_gpus=resources.gpus, include_dashboard=False,
                     _node_ip_address="127.0.0.1", _temp_dir=str(temp_dir), logging_level="WARNING",
                     log_to_driver=False)
    except SystemExit as exc:  # Ray's own SIGTERM handler, set while it starts
        if exc.code == signal.SIGTERM:
            raise Terminated() from None
        raise
    terminate_like_ctrl_c()  # ablate's again, in place of Ray's


def stop_ray() -> None:
    ray = sys.modules.get("ray")  # not imported again: an interrupt may have cut its import short
    if ray is not None and hasattr(ray, "is_initialized") and ray.is_initialized():
        ray.shutdown()
