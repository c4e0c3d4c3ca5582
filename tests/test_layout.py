"""The house's layout holds: what reads specs, plans studies and analyses run folders needs no torch, and one
module names the run folder's files."""
from __future__ import annotations

import os
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
    for package in ("ablate.spec", "ablate.run_folder", "ablate.engine", "ablate.analysis"):
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
            try:
                importlib.import_module(info.name)
            except Exception as exc:
                failed.append(f"{info.name}: {exc!r}")
    for module in ("ablate.models.registry", "ablate.data.registry", "ablate.cli.errors"):
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


def _bare_run_folder_names(path: Path, files: set[str], folders: set[str], prefixes: tuple[str, ...]) -> list[str]:
    """Where a module spells a run-folder file's name itself: a string (or a part of an f-string) that is the name,
    a path made of it ('*/spec.yaml'), the start of a resume manifest's name, or a folder of the run joined as
    `path / "trials"`. Prose (a string with a space: docstrings, messages) may mention the files."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or any(c.isspace() for c in node.value):
            continue
        text, parent = node.value, parents.get(node)
        bare = (bool(files & set(text.split("/"))) or text.startswith(prefixes)
                or (text in folders and isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div)))
        if bare:
            found.append(f"{path}:{node.lineno}: {text!r}")
    return found


def test_every_run_folder_file_is_named_in_one_module(tmp_path):
    """ablate.run_folder.layout names every file and folder of a run folder and of a trial folder; every other
    module uses its names (and ablate.run_folder's readers and writers), so that the format has one owner."""
    from ablate.run_folder import layout

    names = {k: v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)}
    folders = {layout.TRIALS, layout.TENSORBOARD, layout.ANALYSIS}
    files = {v for k, v in names.items() if v not in folders and k not in ("FORMAT_KEY", "RESUME_MANIFEST_PREFIX",
                                                                               "RESUME_MANIFEST_SUFFIX")}
    assert {"metrics.json", "config.yaml", "curves.csv", "grad_norms.csv", "predictions.csv", "weights.pt",
            "error.txt", "failure.json", "heartbeat.json", "paused.json", "resume.pt", "trials.jsonl", "trials.csv",
            "manifest.json", "spec.yaml", "optuna.db", ".ray_tmp", ".lock", "curves.png"} <= files
    owner = ROOT / "ablate" / "run_folder" / "layout.py"
    found = [hit for path in sorted((ROOT / "ablate").rglob("*.py")) if path != owner
             for hit in _bare_run_folder_names(path, files, folders, (layout.RESUME_MANIFEST_PREFIX,))]
    assert not found, "run-folder names spelt outside ablate/run_folder/layout.py:\n" + "\n".join(found)
    # the check finds what it looks for, and lets prose be
    probe = tmp_path / "probe.py"
    probe.write_text("a = folder / 'metrics.json'\nb = f'sqlite:///{run / \"optuna.db\"}'\nc = run / 'trials'\n"
                     "d = run.glob('*/spec.yaml')\ne = f'manifest-resume-{stamp}.json'\n"
                     "f = 'delete its metrics.json and resume'\ng = search.get('trials')\n")
    hits = _bare_run_folder_names(probe, files, folders, (layout.RESUME_MANIFEST_PREFIX,))
    assert sorted(int(hit.split(":")[1]) for hit in hits) == [1, 2, 3, 4, 5], hits


def test_pyproject_lists_every_package_of_ablate():
    """The wheel takes the packages pyproject.toml lists (a mapped folder needs an explicit list): a new folder of
    ablate/ missing from it installs without its modules. Checked here in the fast lane; tests/test_wheel.py checks
    the wheel itself."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ablate").rglob("__init__.py")
               if "__pycache__" not in p.parts}
    assert folders <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(folders - listed)}"


SLOW_RULE = {  # test files of a throwaway session, and what the slow rule says of each
    "test_reader.py": ("def test_reads(tuned_study):\n    pass\n",
                       "test_reader.py::test_reads: reads tuned_study (a background study) without @pytest.mark.slow"),
    "test_module_mark.py": ("import pytest\n\npytestmark = pytest.mark.slow\n\n\ndef test_x():\n    pass\n",
                            "test_module_mark.py::test_x: marked slow by its module or class; mark the test itself"),
    "test_fine.py": ("import pytest\n\n\n@pytest.mark.slow\ndef test_reads(faulted):\n    pass\n\n\n"
                     "def test_fast():\n    pass\n", None),
}


@pytest.mark.slow
def test_the_slow_rule_is_checked_when_tests_are_collected(tmp_path):
    """helpers.background_studies refuses a test that reads a background study without @pytest.mark.slow, and a
    slow mark that is not the test's own; a module that keeps the rule collects."""
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["helpers.background_studies"]\n')
    for name, (text, _) in SLOW_RULE.items():
        (tmp_path / name).write_text(text)
    path = os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])

    def collect(*files):
        return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                               "--rootdir", str(tmp_path), *files], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONPATH": path})

    refused = collect(*SLOW_RULE)
    assert refused.returncode == pytest.ExitCode.USAGE_ERROR, refused.stdout + refused.stderr
    named = [line.strip() for line in refused.stderr.splitlines()[1:] if line.startswith("  ")]
    assert named == [why for _, why in SLOW_RULE.values() if why], refused.stderr
    kept = collect("test_fine.py")
    assert kept.returncode == 0 and "2 tests collected" in kept.stdout, kept.stdout + kept.stderr
