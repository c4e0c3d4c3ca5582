"""Trial workers killed with retries left, loopback-only Ray, a trial that raises, and a real two-node Ray cluster
(real studies, subprocesses); the study itself killed and resumed is in tests/test_faults.py."""
import json
import subprocess
import sys
import time

import pytest
import yaml

from ablate.run_folder.registry import read_registry
from helpers import background
from helpers.processes import kill_tree, start


TINY = {"family": "cifar", "depth": 20, "dataset": "digits", "image_size": 16, "train_size": 128, "dev_size": 64,
        "test_size": 64, "batch_size": 32, "epochs": 2, "eval_every": 2, "seed": 100}


def write_spec(path, trials=3, seeds=(0, 1), halving=True):
    path.write_text(yaml.safe_dump({
        "description": "hardening", "base": dict(TINY), "factors": {"residual": {"values": [True, False]}},
        "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.3}},
                   "trials": trials, "round": min(2, trials), "sampler_seed": 0, "halving": {"eta": 2} if halving is True else halving},
        "seeds": list(seeds)}))
    return path


@pytest.mark.slow
def test_a_trial_that_raises_is_recorded_with_its_error(tmp_path):
    from ablate.engine.trial_plan import TrialPlan
    from ablate.spec.trial_config import TrialConfig
    from ablate.engine.run_work import run_work

    cfg = TrialConfig(dataset="mnist", train_size=64, dev_size=32, test_size=32, epochs=1)
    empty = tmp_path / "no-data"
    empty.mkdir()
    with pytest.raises(Exception, match="MNIST"):
        run_work(TrialPlan("tune", "a", cfg, {}), tmp_path / "run", str(empty))
    folder = tmp_path / "run" / "trials" / cfg.trial_id()
    # The worker records the attempt; whether it is the trial's result is the engine's to judge once the
    # retries are spent (tests/test_faults.py), so no metrics.json yet.
    [attempt] = json.loads((folder / "failure.json").read_text())["attempts"]
    assert attempt["kind"] == "config" and "MNIST" in attempt["error"] and attempt["device"] == "cpu"
    assert "Traceback" in (folder / "error.txt").read_text() and not (folder / "metrics.json").exists()


CLUSTER = """
import os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # the nodes stay on 127.0.0.1
os.makedirs("/tmp/ray", exist_ok=True)  # the harness records the cluster address there
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()  # until the test closes our stdin
cluster.shutdown()
"""


@pytest.mark.slow
def test_study_on_a_real_two_node_ray_cluster(tmp_path):
    t0 = time.time()
    env = {**background.environ(), "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    cluster = subprocess.Popen([sys.executable, "-c", CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env=env, start_new_session=True)
    try:
        address = cluster.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), address
        spec = write_spec(tmp_path / "spec.yaml", trials=2, seeds=(0, 1), halving=False)
        run_dir = tmp_path / "run"
        proc = start(spec, "--out", run_dir, "--address", address)
        try:
            assert proc.wait(timeout=400) == 0, proc.stdout.read()[-3000:]
        finally:
            if proc.poll() is None:
                kill_tree(proc)
    finally:
        cluster.stdin.close()
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            kill_tree(cluster)
    rows = read_registry(run_dir)
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    nodes = {r["node"] for r in rows}
    assert len(nodes) == 2, f"trials ran on {len(nodes)} node(s)"
    assert all((run_dir / "trials" / r["trial_id"] / "metrics.json").exists() for r in rows)
    print(f"two-node study: {len(rows)} trials on {len(nodes)} nodes in {time.time() - t0:.0f} s")
