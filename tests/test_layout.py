"""The house's layout holds: what reads specs, plans studies and analyses run folders needs no torch."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers.runs import build_run

ROOT = Path(__file__).resolve().parents[1]

NO_TORCH = textwrap.dedent('''
    import importlib, importlib.abc, pkgutil, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        """torch and torchvision cannot be imported, as on a machine without them."""
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                raise ModuleNotFoundError(f"No module named {name!r} (made unavailable by the test)")

    sys.meta_path.insert(0, NoTorch())
    failed = []
    for package in ("ablate.spec", "ablate.engine", "ablate.analysis"):
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
            try:
                importlib.import_module(info.name)
            except Exception as exc:
                failed.append(f"{info.name}: {exc!r}")
    for module in ("ablate.models.registry", "ablate.data.registry", "ablate.train.folder_layout", "ablate.cli.errors"):
        importlib.import_module(module)
    assert not failed, failed

    from pathlib import Path
    from ablate.analysis.load import load_run
    from ablate.engine.planner import Planner
    from ablate.engine.seed_decisions import remaining
    run = load_run(Path(sys.argv[1]))
    assert len(run.reported) == 6, run.reported
    planner = Planner(run.study, Path(sys.argv[1]))
    planner.refresh()
    assert planner.done and remaining(run.study, list(planner.rows.values())) == {"confirm": 0}
    assert not [m for m in sys.modules if m.split(".")[0] == "torch"]
    print("loaded without torch")
''')


@pytest.mark.slow
def test_spec_engine_and_analysis_load_and_plan_a_run_folder_without_torch(tmp_path):
    run = build_run(tmp_path / "run", [{"arm": arm, "seed": s, "test_acc": 0.9}
                                       for arm in ("residual=true", "residual=false") for s in (0, 1, 2)],
                    doc=None)
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(run)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "loaded without torch" in out.stdout, out.stderr[-3000:]
