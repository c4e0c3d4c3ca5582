"""The cluster recipe's database: a study keeps its Optuna studies in a real PostgreSQL server on loopback,
survives a kill, resumes from the same database, and a second run on that database stays apart.

The test starts its own server (initdb into a temporary folder, then pg_ctl) and skips, saying why,
where PostgreSQL's server programs or the psycopg driver are not installed. The server and the runs are
helpers.postgres's, made in the background (the `postgres_runs` study of helpers.background_studies).
"""
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from ablate.run_folder.registry import read_registry
from helpers.postgres import SECRET

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def postgres(postgres_runs):
    return postgres_runs["url"]


@pytest.mark.slow
def test_a_study_in_postgresql_is_killed_resumed_kept_apart_from_a_second_run_and_no_password_leaks(postgres_runs):
    made = postgres_runs
    first, second, missing = made["first"], made["second"], made["missing"]
    assert missing.returncode == 2 and "pass --storage" in missing.stderr, missing.stderr
    # the killed and resumed run has the uninterrupted run's trials, and neither saw the other's
    assert (first / "trials.csv").read_text() == (second / "trials.csv").read_text()
    assert not (first / "optuna.db").exists() and not (second / "optuna.db").exists()

    url = made["url"].replace("postgresql://", "postgresql+psycopg://")
    names = optuna.get_all_study_names(url)
    assert len(names) == 4  # two runs x two arms, each run's studies named by its run id
    for name in names:
        trials = optuna.load_study(study_name=name, storage=url).trials
        done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
        assert len(done) == 4, (name, [t.state.name for t in trials])  # one run's 4 proposals, nothing mixed in
    manifest = (first / "manifest.json").read_text()
    assert "postgresql://postgres@127.0.0.1" in manifest
    print(f"PostgreSQL studies: {sorted(names)}; {len(read_registry(first))} trials in the resumed run")

    # The password reaches no file of the second run or its analysis (report.html is meant to be mailed), and
    # nothing that either printed.
    code, analysed_out, analysed_err = made["analysed"]
    assert code == 0, analysed_err[-3000:]
    files = [p for p in second.rglob("*") if p.is_file()]
    assert (second / "analysis" / "report.html") in files and (second / "manifest.json") in files
    leaks = [str(p.relative_to(second)) for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaks, leaks
    for out in (made["second_log"], analysed_out, analysed_err):
        assert SECRET not in out
    command = json.loads((second / "manifest.json").read_text())["command"]
    assert made["with_password"].replace(SECRET, "***") in command  # the URL is still there to read, without its password
    assert "postgres:***@127.0.0.1" in (second / "analysis" / "report.html").read_text()


@pytest.mark.slow
def test_studies_opening_a_fresh_database_at_once_all_get_in(postgres):
    # Each creates Optuna's tables; without a retry, the slower ones fail on what the fastest just made.
    fresh = postgres.rsplit("/", 1)[0] + "/race"
    url = postgres.replace("postgresql://", "postgresql+psycopg://")
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("CREATE DATABASE race"))
    engine.dispose()
    code = f"from ablate.engine.storage import check_storage; check_storage({fresh!r}); print('opened')"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 and "opened" in out for p, out in zip(procs, outputs)), outputs
