"""The cluster recipe's database: a study keeps its Optuna studies in a real PostgreSQL server on loopback,
survives a kill, resumes from the same database, and a second run on that database stays apart.

The test starts its own server (initdb into a temporary folder, then pg_ctl) and skips, saying why,
where PostgreSQL's server programs or the psycopg driver are not installed.
"""
import glob
import json
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import yaml

from ablate.run_folder.registry import read_registry
from helpers import background

pytestmark = pytest.mark.slow  # real studies on Ray, CLI subprocesses or an installed wheel

ROOT = Path(__file__).resolve().parent.parent
CLI = str(ROOT / "cli.py")
SPEC = {"description": "postgres storage", "base": {"family": "cifar", "depth": 20, "dataset": "digits",
                                                    "train_size": 96, "dev_size": 48, "test_size": 48,
                                                    "batch_size": 32, "epochs": 2, "eval_every": 1,
                                                    "image_size": 16, "seed": 100},
        "factors": {"residual": {"values": [True, False]}},
        "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.5}},
                   "trials": 4, "round": 2, "startup": 2, "halving": {"eta": 2}},
        "seeds": [0]}


def _bindir() -> Path | None:
    for candidate in [os.environ.get("ABLATE_PG_BINDIR"), *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        if candidate and (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[str | None, str | None]:
    """A PostgreSQL server on loopback with a database `ablate`: (its URL, None), or (None, why it cannot run
    here); stopped when the session ends."""
    bindir = _bindir()
    if bindir is None:
        return None, "PostgreSQL's server programs (initdb, pg_ctl) are not installed; apt-get install postgresql"
    if importlib.util.find_spec("psycopg") is None:
        return None, "the psycopg driver is not installed; pip install 'ablate[postgres]'"
    # PostgreSQL refuses to run as root: as root, the server runs as the 'postgres' user.
    as_user = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            return None, "running as root without a 'postgres' user (or runuser) to start PostgreSQL as"
        as_user = ["runuser", "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="ablate-pg-"))
    home.chmod(0o755)
    data = home / "data"
    if as_user:
        shutil.chown(home, "postgres")

    def stop():
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)

    background.on_exit(stop)
    port = _free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-w", "start", "-o",
                    f"-p {port} -k {home} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                    "ablate"], check=True, capture_output=True)
    return f"postgresql://postgres@127.0.0.1:{port}/ablate", None


def study(*args, timeout=600):
    return subprocess.run([sys.executable, CLI, "study", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**background.environ(), "PYTHONUNBUFFERED": "1"})


SECRET = "Hunter2-pg-secret"


def killed_resumed_and_second(tmp_path: Path) -> dict:
    """Made in the background from the session's start (helpers.background): side by side (each spends most of
    its time starting Ray), an uninterrupted second run in the same PostgreSQL database, its URL carrying a
    password (the server trusts loopback and ignores it; ablate must keep it out of every file and message),
    and the run that is killed and resumed; the second run is analysed while the first one finishes."""
    from helpers.processes import kill_tree, output, start, wait_until

    url, why = start_server()
    if url is None:
        return {"skip": why}
    spec = tmp_path / "pg.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    with_password = url.replace("postgres@", f"postgres:{SECRET}@")
    first, second = tmp_path / "first", tmp_path / "second"
    other = start(spec, "--out", second, "--storage", with_password, log=tmp_path / "second.log")
    proc = start(spec, "--out", first, "--storage", url)
    started = [other, proc]
    try:
        wait_until(proc, first, lambda rows: sum(r["stage"] == "tune" for r in rows) >= 2)
        kill_tree(proc)
        missing = study("--resume", first)  # the storage is not optional when resuming
        resumed = start("--resume", first, "--storage", url, log=tmp_path / "resumed.log")
        started.append(resumed)
        assert other.wait(timeout=600) == 0, output(other)
        analysing = subprocess.Popen([sys.executable, CLI, "analyze", str(second)], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=background.environ())
        started.append(analysing)
        assert resumed.wait(timeout=600) == 0, output(resumed)
        analysed = analysing.communicate(timeout=600)
    finally:
        for p in started:  # what a failed assertion left running
            if p.poll() is None:
                kill_tree(p)
    return {"url": url, "with_password": with_password, "first": first, "second": second, "missing": missing,
            "analysed": (analysing.returncode, *analysed), "second_log": (tmp_path / "second.log").read_text()}


background.register("postgres_runs", killed_resumed_and_second)


@pytest.fixture(scope="module")
def postgres_runs(tmp_path_factory):
    made = background.result("postgres_runs", tmp_path_factory.mktemp)
    if "skip" in made:
        pytest.skip(made["skip"])
    return made


@pytest.fixture(scope="module")
def postgres(postgres_runs):
    return postgres_runs["url"]


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
