"""A wheel built from the checkout and installed into a fresh virtual environment carries every shipped study.

The heavy dependencies come from this interpreter's site-packages; ablate itself must come from the wheel (an
editable install of the checkout may sit in those site-packages too, so the test checks which copy is imported).
Nothing is written into the checkout and nothing is fetched from the network."""
import importlib.util
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.stem for p in (ROOT / "studies").glob("*.yaml"))
SOURCES = ("pyproject.toml", "README.md", "ablate", "studies")


def _cannot_build() -> str | None:
    """Why this interpreter cannot build the wheel offline (--no-build-isolation needs the backend here), or None."""
    for module in ("pip", "setuptools"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    have = tuple(int(n) for n in re.findall(r"\d+", version("setuptools"))[:2])
    if have < (61, 0):
        return f"setuptools {version('setuptools')} is older than the 61 that pyproject.toml requires"
    if have < (70, 1) and importlib.util.find_spec("wheel") is None:
        return f"setuptools {version('setuptools')} needs the 'wheel' package to build wheels"
    return None


def _env():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # PYTHONPATH would import the checkout's copy
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    return env


def _run(args, cwd, timeout=120):
    return subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    reason = _cannot_build()
    if reason:
        pytest.skip(f"cannot build a wheel offline with this interpreter: {reason}")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy, so that setuptools' build/ and *.egg-info never land in the checkout
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                  "-w", tmp / "dist", src], cwd=tmp)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp / "dist").glob("ablate_residuals-*.whl")  # the distribution's name (pyproject.toml)

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    if sys.prefix != sys.base_prefix:  # run from a venv: its packages are not the base interpreter's, add them
        purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp)
        lines = [f"import site; site.addsitedir({p!r})\n" for p in site.getsitepackages()]
        (Path(purelib.stdout.strip()) / "_outer_site.pth").write_text("".join(lines))
    install = _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", wheel], cwd=tmp)
    assert install.returncode == 0, install.stdout + install.stderr
    outside = tmp / "elsewhere"  # not the checkout, so no studies/ folder is in reach by accident
    outside.mkdir()
    return wheel, venv, outside


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_every_shipped_spec(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ablate").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= names, f"missing from the wheel (add the package to pyproject.toml): {sorted(modules - names)}"
    assert SHIPPED and {f"ablate/studies/{n}.yaml" for n in SHIPPED} <= names


@pytest.mark.slow
def test_the_installed_package_lists_every_shipped_study_and_dry_runs_from_its_own_files(installed):
    _, venv, outside = installed
    where = _run([venv / "bin" / "python", "-c", "import ablate; print(ablate.__file__)"], cwd=outside)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve()), where.stdout

    listed = _run([venv / "bin" / "ablate", "study"], cwd=outside)
    assert listed.returncode == 0, listed.stderr
    assert sorted(line.split()[0] for line in listed.stdout.splitlines() if line.strip()) == SHIPPED
    # Two dry runs (each times a training step per architecture; tests/test_study.py loads every shipped study
    # under every budget in this process). The smoke budgets: he2016's others need CIFAR-sized subsets.
    dry_runs = {name: subprocess.Popen([str(venv / "bin" / "ablate"), "study", name, "--dry-run", "--dataset", "digits",
                                        "--budget", "smoke"],
                                       cwd=outside, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for name in ("residual-ablation", "he2016")}  # side by side: each spends seconds importing torch
    for name, proc in dry_runs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stdout + stderr
        assert stdout.startswith(f"study {name} ") and "digits" in stdout, stdout
    assert not any(outside.iterdir()), "a dry run wrote files"


@pytest.mark.slow
def test_python_dash_m_ablate_runs_the_cli(installed):
    _, venv, outside = installed
    result = _run([venv / "bin" / "python", "-m", "ablate", "--help"], cwd=outside)
    assert result.returncode == 0, result.stderr
    assert "Usage: python -m ablate" in result.stdout and "study" in result.stdout
