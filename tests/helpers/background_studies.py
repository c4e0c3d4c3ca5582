"""The real studies that tests read, declared here and nowhere else (a pytest plugin, loaded by conftest.py's
`pytest_plugins`). A test reads one by naming its fixture; no test module registers or starts anything.

| fixture | what it is | made by |
|---|---|---|
| `tuned_study` | residual vs plain, lr tuned, 3 seeds (helpers.studies.TUNED) | helpers.studies.tuned |
| `diagnostics_study` | plain vs residual on digits, 2 seeds, weights kept (helpers.studies.DIAGNOSTICS) | helpers.studies.diagnostics |
| `depth_and_grid_runs` | a depth study and an lr-grid study, side by side | helpers.studies.depth_and_grid |
| `faulted` | a study faulted, killed and resumed, beside its uninterrupted twin | helpers.fault_runs.fault_runs |
| `postgres_runs` | a study in PostgreSQL killed and resumed, and a second one | helpers.postgres.killed_resumed_and_second |
| `user_model_example` | examples/residual_mlp at its smoke budget, analysed and exported | helpers.user_model_runs.mlp_example |
| `vit_example` | examples/vit at its smoke budget, analysed | helpers.user_model_runs.vit_example |

(`tuned_analysis` is `analyze(tuned_study)`, once per session: read it, never write into it.)

**When they run.** When the session starts, the studies that the selected tests read start in the background,
one after another in the order of `STUDIES` (helpers.background), and a study no selected test reads never runs:
`pytest tests/test_x.py` starts only what that module reads. So that they run while the other tests do, **a test
module that reads a background study runs after every module that reads none**: whole modules move, never single
tests, so a module's tests run in the order written. Among those modules, the ones whose studies finish first (in
`STUDIES` order, by the last study a module reads) run first.

**The slow rule.** A test is slow when it starts Ray, a CLI subprocess or torch.compile, or takes a second or
more of 2 cores (training, figures, simulations), and a slow test says so itself: `@pytest.mark.slow` on the test function (or, for one case of a parametrized
test, `pytest.param(..., marks=pytest.mark.slow)`), nothing else. No module-level `pytestmark`, no class mark,
no mark added from a hook. `pytest -m "not slow"` (the fast lane) leaves them out.
At collection this plugin refuses (a usage error naming the tests) a `slow` mark that is not on the test itself,
and a test that reads a background study (its fixture closure holds one of `STUDIES`) without the mark.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from helpers import background
from helpers.fault_runs import fault_runs
from helpers.postgres import killed_resumed_and_second
from helpers.studies import depth_and_grid, diagnostics, tuned
from helpers.user_model_runs import mlp_example, vit_example

# Every background study: its fixture's name -> what makes it, given a fresh folder. Run in this order.
STUDIES: dict[str, Callable[[Path], Any]] = {
    "tuned_study": tuned,
    "diagnostics_study": diagnostics,
    "user_model_example": mlp_example,
    "vit_example": vit_example,
    "depth_and_grid_runs": depth_and_grid,
    "faulted": fault_runs,
    "postgres_runs": killed_resumed_and_second,
}


def studies_read(item) -> list[str]:
    """The background studies a collected test reads, in `STUDIES` order."""
    names = set(getattr(item, "fixturenames", ()))
    return [name for name in STUDIES if name in names]


def slow_rule_broken(items) -> list[str]:
    """Each test that breaks the slow rule, with why."""
    broken = []
    for item in items:
        own = any(mark.name == "slow" for mark in getattr(item, "own_markers", ()))
        if item.get_closest_marker("slow") is not None and not own:
            broken.append(f"{item.nodeid}: marked slow by its module or class; mark the test itself")
        elif studies_read(item) and not own:
            broken.append(f"{item.nodeid}: reads {', '.join(studies_read(item))} (a background study) "
                          "without @pytest.mark.slow")
    return broken


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the rule holds for every test, selected or not
def pytest_collection_modifyitems(config, items):
    broken = slow_rule_broken(items)
    if broken:
        raise pytest.UsageError("the slow rule (tests/helpers/background_studies.py):\n  " + "\n  ".join(broken))
    # Whole modules that read a background study run last, those whose studies finish first first.
    order = {name: i for i, name in enumerate(STUDIES)}
    last_read: dict[Any, int] = {}
    for item in items:
        for name in studies_read(item):
            last_read[item.module] = max(last_read.get(item.module, -1), order[name])
    position = {id(item): (last_read.get(item.module, -1), i) for i, item in enumerate(items)}
    items.sort(key=lambda item: position[id(item)])


@pytest.fixture(scope="session", autouse=True)
def background_studies(request, tmp_path_factory):
    """Starts the studies that the selected tests read, before the first test runs."""
    background.snapshot()
    needed = {name for item in request.session.items for name in studies_read(item)}
    background.start({name: make for name, make in STUDIES.items() if name in needed}, tmp_path_factory.mktemp)
    yield
    background.finish()


def _result(name: str, tmp_path_factory) -> Any:
    return background.result(name, STUDIES[name], tmp_path_factory.mktemp)


@pytest.fixture(scope="session")
def tuned_study(tmp_path_factory) -> Path:
    """A real tiny study (helpers.studies.TUNED: residual vs plain, lr tuned, 3 seeds)."""
    return _result("tuned_study", tmp_path_factory)


@pytest.fixture(scope="session")
def tuned_analysis(tuned_study):
    """`analyze` of `tuned_study` into its analysis/ folder: read it, never write into it."""
    from ablate.analysis import analyze

    return analyze(tuned_study)


@pytest.fixture(scope="session")
def user_model_example(tmp_path_factory) -> dict:
    """{"tmp", "folder", "out", "study", "cli"}: examples/residual_mlp copied to "folder", its smoke study in "out"
    (analysed, its confirm trials exported to tmp/exported), the study's CompletedProcess, the command line."""
    return _result("user_model_example", tmp_path_factory)


@pytest.fixture(scope="session")
def vit_example(tmp_path_factory) -> dict:
    """{"tmp", "folder", "out", "study", "cli"}: examples/vit copied to "folder", its smoke study in "out" (analysed),
    the study's CompletedProcess, the command line."""
    return _result("vit_example", tmp_path_factory)


@pytest.fixture(scope="session")
def diagnostics_study(tmp_path_factory) -> Path:
    """The run folder of helpers.studies.DIAGNOSTICS: test_diagnostics_run analyses it (in place)."""
    return _result("diagnostics_study", tmp_path_factory)


@pytest.fixture(scope="session")
def depth_and_grid_runs(tmp_path_factory) -> dict:
    """{"tmp", "depth", "grid"}: a depth study (depth 20/32 x residual) and an lr-grid study, their run folders."""
    return _result("depth_and_grid_runs", tmp_path_factory)


@pytest.fixture(scope="session")
def faulted(tmp_path_factory) -> dict:
    """The fault runs of helpers.fault_runs: what each fault did, and the trials.csv of each run."""
    return _result("faulted", tmp_path_factory)


@pytest.fixture(scope="session")
def postgres_runs(tmp_path_factory) -> dict:
    """The PostgreSQL runs of helpers.postgres; skipped, saying why, where PostgreSQL cannot run here."""
    made = _result("postgres_runs", tmp_path_factory)
    if "skip" in made:
        pytest.skip(made["skip"])
    return made
