"""The install installs this project (issue 18, part 4): the name `ablate` on PyPI belongs to an unrelated
project, so the distribution is `ablate-residuals`, and no install line in the README or in a message of ablate's
names `ablate` from an index. Each extra an install line names exists, and pip resolves `-e '.[extra]'` from the
checkout to this distribution (offline, a dry run on a copy, nothing written into the checkout). Whether the
name is free on PyPI cannot be checked offline: it was, when chosen (README, Set up)."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
NAME = "ablate-residuals"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def install_lines() -> list[tuple[str, str]]:
    """(file, `pip install ...` up to the end of its code span or line) in the README and ablate's messages."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "ablate").rglob("*.py"))]:
        for match in re.finditer(r"pip install[^`\n\"]*", path.read_text(encoding="utf-8")):
            found.append((path.relative_to(ROOT).as_posix(), match.group(0)))
    return found


def test_the_distribution_has_a_name_of_its_own():
    assert PYPROJECT["project"]["name"] == NAME
    assert PYPROJECT["project"]["scripts"]["ablate"] == "ablate.cli:main"  # the command stays `ablate`


def test_no_install_line_fetches_the_other_ablate():
    lines = install_lines()
    assert len(lines) >= 5, lines
    wrong = [(f, line) for f, line in lines if re.search(r"pip install\s+(-\S+\s+)*['\"]?ablate(\[|['\"\s]|$)", line)]
    assert not wrong, wrong
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    named = {x for _, line in lines for group in re.findall(r"\.\[([^\]]+)\]", line) for x in group.split(",")}
    assert named and named <= extras, (named, extras)


@pytest.mark.parametrize("extra", ["postgres", "tensorboard"])
def test_pip_resolves_the_checkout_with_an_extra_to_this_distribution(extra, tmp_path):
    if shutil.which("pip") is None and subprocess.run([sys.executable, "-m", "pip", "--version"]).returncode:
        pytest.skip("pip is not installed")
    src = tmp_path / "src"  # a copy: pip's build writes *.egg-info beside pyproject.toml
    for name in ("pyproject.toml", "README.md"):
        src.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    for name in ("ablate", "studies"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index",
                             "--no-build-isolation", "--quiet", "--report", str(report), "-e", f"{src}[{extra}]"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (item,) = json.loads(report.read_text())["install"]
    assert item["metadata"]["name"] == NAME and item["requested_extras"] == [extra]
    assert item["download_info"]["url"] == src.as_uri()
