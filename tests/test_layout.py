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


def _private_imports(path: Path, module: str) -> list[str]:
    """Where the module `module` (at `path`) takes a private name (one leading underscore) of another ablate
    module: `from ablate.x.y import _name`, the relative forms (`from . import _name`, `from .y import _name`),
    a private module (`ablate.x._y`), or `_name` read off a module imported whole (`import ablate.x.y as y`,
    then `y._name`). Dunder names (`__version__`) are public; what a package's `__init__` takes from itself is a
    submodule."""
    import ast

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, modules = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[:len(module.split(".")) - node.level + is_package]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "ablate":
                continue
            names = [alias.name for alias in node.names]
            if any(private(part) for part in source.split(".")) or (
                    (source != module or is_package) and any(private(name) for name in names)):
                found.append(f"{path}:{node.lineno}: from {source} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ablate":
                    if any(private(part) for part in alias.name.split(".")):
                        found.append(f"{path}:{node.lineno}: import {alias.name}")
                    modules[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            owner = node.value
            dotted = []
            while isinstance(owner, ast.Attribute):
                dotted.insert(0, owner.attr)
                owner = owner.value
            target = ".".join([owner.id] + dotted) if isinstance(owner, ast.Name) else None
            if target in modules and modules[target] != module:
                found.append(f"{path}:{node.lineno}: {modules[target]}.{node.attr}")
    return found


def test_no_module_of_ablate_imports_another_modules_private_name(tmp_path):
    """A name with a leading underscore belongs to its module: what another module uses is public (named without
    one, and exported by its package where another package uses it). Tests may reach in; ablate/ may not."""
    found = []
    for path in sorted((ROOT / "ablate").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        found += _private_imports(path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert not found, "private names imported across modules:\n" + "\n".join(found)
    # the check finds each form it looks for, and lets public names, dunders and a module's own names be
    probe = tmp_path / "probe.py"
    probe.write_text("from ablate.spec.limits import _a\nfrom . import _b\nfrom .other import c, _d\n"
                     "from ..engine._hidden import e\nimport ablate.spec.reading as reading\nx = reading._f\n"
                     "import ablate.models.registry\ny = ablate.models.registry._g\n"
                     "from ablate import __version__\nfrom ablate.spec.limits import check_seed as _check_seed\n"
                     "from ablate.pkg.probe import _own\nz = reading.public\nimport os\nw = os._exit\n")
    hits = _private_imports(probe, "ablate.pkg.probe")
    assert sorted(int(hit.split(":")[1]) for hit in hits) == [1, 2, 3, 4, 6, 8], hits
    assert any("from ablate.pkg import _b" in hit for hit in hits) and any("ablate.pkg.other" in hit for hit in hits)
    package = tmp_path / "__init__.py"
    package.write_text("from . import _h\nfrom .mod import _i\n")
    assert [hit.split(": ", 1)[1] for hit in _private_imports(package, "ablate.pkg")] == [
        "from ablate.pkg import _h", "from ablate.pkg.mod import _i"]


def _packages() -> list[str]:
    """Every package of ablate/, innermost first when one holds another."""
    return sorted({".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ablate").rglob("__init__.py")},
                  key=len, reverse=True)


def _package_of(module: str, packages: list[str]) -> str:
    return next(p for p in packages if module == p or module.startswith(p + "."))


def _reaches_into(path: Path, module: str, packages: list[str]) -> list[str]:
    """Where the module `module` (at `path`) imports names from a module inside another package instead of from
    that package (`from ablate.run_folder.layout import trial_dir` rather than `from ablate.run_folder import
    trial_dir`). The modules at the top of ablate/ (errors, messages, ...) belong to no subpackage and are imported
    as they are."""
    import ast

    mine = module if path.name == "__init__.py" else _package_of(module, packages)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("ablate."):
            owner = _package_of(node.module, packages)
            if owner not in ("ablate", node.module, mine):
                found.append(f"{path}:{node.lineno}: from {node.module} import ... (import it from {owner})")
    return found


def test_other_packages_use_a_package_through_what_its_init_exports(tmp_path):
    """Each subpackage's __init__ exports (in __all__) what other packages use, and they import it from there:
    the modules inside a package are its own business. Every exported name resolves (the torch-using ones are
    loaded when first used, ablate.lazy_names) and none is also the name of one of its package's modules, which
    `import ablate.x.y` would then shadow."""
    import importlib
    import pkgutil

    packages = _packages()
    found = []
    for path in sorted((ROOT / "ablate").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        found += _reaches_into(path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts), packages)
    assert not found, "imports that reach into another package's modules:\n" + "\n".join(found)
    for name in packages:
        if name == "ablate":
            continue
        package = importlib.import_module(name)
        modules = {info.name for info in pkgutil.iter_modules(package.__path__)}
        exported = package.__all__
        assert len(set(exported)) == len(exported) and not set(exported) & modules, (name, set(exported) & modules)
        for attr in exported:
            value = getattr(package, attr)
            home = sys.modules[getattr(value, "__module__", None) or name]
            assert home.__name__.startswith(name + ".") or home is package, (name, attr, home)
    # the check finds an import that reaches in, and lets a package's own modules, the top modules and a package's
    # exports be
    probe = tmp_path / "probe.py"
    probe.write_text("from ablate.run_folder.layout import trial_dir\nfrom ablate.engine.planner import Planner\n"
                     "from ablate.engine.ray_adapter.session import start_ray\nfrom ablate.run_folder import METRICS\n"
                     "from ablate.errors import AblateError\nfrom ablate.engine.selection import FAILED\n")
    hits = _reaches_into(probe, "ablate.engine.probe", packages)
    assert sorted(int(hit.split(":")[1]) for hit in hits) == [1, 3], hits
    assert "import it from ablate.engine.ray_adapter" in hits[1]
    assert [int(hit.split(":")[1]) for hit in _reaches_into(probe, "ablate.cli.probe", packages)] == [1, 2, 3, 6]


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
