"""A PostgreSQL server on loopback and the runs in it that tests/test_postgres.py reads (the `postgres_runs`
background study of helpers.background_studies): a study killed and resumed, and a second run in the same
database whose URL carries a password."""
from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from helpers import background

ROOT = Path(__file__).resolve().parents[2]
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
