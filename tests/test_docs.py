"""The README is a front door and the documentation site holds the rest: the README is short, names no internal
issue and no test file, its quick start's commands and flags exist, every link and every repository path that
the README and the pages name exist, the run-folder page names every file and field a real run folder holds,
and the site builds with `mkdocs build --strict` without fetching anything from the network."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from ablate.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
QUICKSTART = DOCS / "quickstart.md"


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def links(markdown: str) -> list[str]:
    """The targets of Markdown links `[text](target)` outside code."""
    prose = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    return re.findall(r"\]\(([^)\s]+)\)", prose)


def quick_start(markdown: str) -> list[str]:
    """The commands of the first bash block that runs `python cli.py study`: one per line, comments dropped."""
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL):
        if "python cli.py study" in block:
            return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    raise AssertionError("no quick start block (a bash block that runs `python cli.py study`)")


# --- the README ---------------------------------------------------------------------------------------------
def test_the_readme_is_a_front_door_of_at_most_150_lines():
    lines = text(README).splitlines()
    assert len(lines) <= 150, len(lines)
    for needed in ("pip install", "python -m pytest", "## Quick start"):
        assert needed in text(README), needed


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_names_an_internal_issue_number(path):
    assert not re.search(r"issue\s+#?\d+", text(path), flags=re.IGNORECASE)


def test_the_readme_names_no_test_file():
    found = re.findall(r"tests/\S*|test_\w+\.py", text(README))
    assert not found, found


def test_only_the_testing_and_faults_pages_name_test_files():
    allowed = {DOCS / "testing.md", DOCS / "faults.md"}
    naming = [p.name for p in PAGES if p not in allowed and re.search(r"tests/\S+|test_\w+\.py", text(p))]
    assert not naming, naming


# --- links and paths ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_that_exists(path):
    targets = [t for t in links(text(path)) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    missing = [t for t in targets if not (path.parent / t.split("#")[0]).exists()]
    assert not missing, missing
    if path == README:
        assert len(targets) >= 10  # the README links to the pages


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_a_page_names_exists(path):
    """`ablate/...`, `benchmarks/...`, `studies/...`, `tests/...` in code spans: a file that moved fails here."""
    named = re.findall(r"`((?:ablate|benchmarks|studies|tests|docs)/[\w/.-]*\.(?:py|sh|yaml|md))[`:]", text(path))
    missing = [p for p in named if not (ROOT / p).exists()]
    assert not missing, missing


def test_the_site_has_a_page_for_every_file_in_docs():
    nav = text(ROOT / "mkdocs.yml")
    for page in PAGES:
        assert str(page.relative_to(DOCS)) in nav, page


# --- the quick start ----------------------------------------------------------------------------------------
def test_the_quick_start_is_at_most_6_commands_and_the_same_in_the_readme_and_the_site():
    commands = quick_start(text(README))
    assert 3 <= len(commands) <= 6, commands
    assert quick_start(text(QUICKSTART)) == commands
    assert commands[0].startswith("pip install") and any(c.startswith("export ABLATE_DATA_DIR=") for c in commands)


def test_every_quick_start_command_and_flag_exists():
    from ablate.analysis import FORMATS
    from ablate.spec.study_spec import BUDGETS, list_studies

    cli = typer.main.get_command(app)
    studies = {name for name, _ in list_studies()}
    ran = set()
    for command in quick_start(text(README)):
        words = shlex.split(command)
        if words[:2] != ["python", "cli.py"]:
            continue
        sub = cli.commands.get(words[2])
        assert sub is not None, command
        options = {name: param for param in sub.params for name in getattr(param, "opts", [])}
        arguments = [p for p in sub.params if not getattr(p, "opts", [None])[0].startswith("-")]
        rest, positional = words[3:], []
        while rest:
            word = rest.pop(0)
            if word.startswith("-"):
                assert word in options, (command, word)
                if not options[word].is_flag:
                    value = rest.pop(0)
                    if word == "--budget":
                        assert value in BUDGETS, command
                    if word == "--format":
                        assert value in FORMATS, command
            else:
                positional.append(word)
        assert len(positional) <= len(arguments), command
        if words[2] == "study":
            assert positional[0] in studies, command
        ran.add(words[2])
    assert ran == {"study", "analyze", "export"}, ran


def test_the_command_table_of_the_quick_start_page_names_every_command_and_study_has_out():
    page = text(QUICKSTART)
    cli = typer.main.get_command(app)
    for name in cli.commands:
        assert re.search(rf"^\| `{re.escape(name)}\b", page, flags=re.MULTILINE), name
    study_row = next(line for line in page.splitlines() if line.startswith("| `study NAME"))
    assert "--out" in study_row


# --- the run folder, as the page describes it ----------------------------------------------------------------
def named(page: str) -> set[str]:
    """Everything a page writes in code spans, and each word of them."""
    spans = re.findall(r"`([^`\n]+)`", page)
    return set(spans) | {w for s in spans for w in re.split(r"[\s,:/{}\[\]()]+", s) if w}


@pytest.mark.slow
def test_the_run_folder_page_names_every_file_and_field_of_a_real_run(tuned_study, tuned_analysis):
    page = text(DOCS / "run-folder.md")
    words = named(page)
    files = {p.name for p in tuned_study.iterdir() if p.name != "analysis"}
    files |= {p.name for folder in (tuned_study / "trials").iterdir() for p in folder.iterdir()}
    files = {re.sub(r"^manifest-resume-.*\.json$", "manifest-resume-<time>.json", f) for f in files}
    missing = sorted(f for f in files if f not in words and f not in page)
    assert not missing, missing

    manifest = json.loads(text(tuned_study / "manifest.json"))
    keys = set(manifest) | {k for part in ("resources", "hardware", "fuse", "gpu_plan") for k in manifest.get(part) or {}}
    rows = [json.loads(line) for line in text(tuned_study / "trials.jsonl").splitlines() if line.strip()]
    keys |= {k for row in rows for k in row}
    keys |= set(text(tuned_study / "trials.csv").splitlines()[0].split(",")) - {"lr", "residual"}  # varied params
    metrics = json.loads(text(next((tuned_study / "trials").iterdir()) / "metrics.json"))
    keys |= set(metrics)
    missing = sorted(k for k in keys if k not in words)
    assert not missing, missing

    reports = named(text(DOCS / "reports.md"))
    written = {p.name for p in tuned_analysis.out_dir.iterdir()}
    missing = sorted(f for f in written if f not in reports and f"{f}/*.png" not in reports and f"{f}/" not in reports)
    assert not missing, missing


# --- the site -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_site_builds_strictly_offline_with_the_cli_and_api_generated_from_the_code(tmp_path):
    pytest.importorskip("mkdocs", reason="MkDocs is not installed: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="Material for MkDocs is not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed: pip install -e '.[docs]'")
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env={**_env(), "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr

    cli = (site / "reference" / "cli.html").read_text(encoding="utf-8")
    for name, command in typer.main.get_command(app).commands.items():
        assert f"ablate {name}" in cli, name
        for param in command.params:
            for opt in getattr(param, "opts", []):
                assert not opt.startswith("--") or opt in cli, (name, opt)
    api = (site / "reference" / "api.html").read_text(encoding="utf-8")
    for name in ("analyze", "load_run", "export_configs", "load_study", "parse_study", "paired_diff", "stein_pairs"):
        assert f'id="{name}"' in api or f".{name}\"" in api or f">{name}<" in api, name
    # nothing is fetched when a page is viewed: no script, stylesheet, font or image from another host
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        remote = re.findall(r"<(?:script|img|iframe)[^>]*\ssrc=\"(?:https?:)?//[^\"]+\"|<link[^>]*\shref=\"(?:https?:)?//[^\"]+\"",
                            html)
        assert not remote, (page.name, remote)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}
