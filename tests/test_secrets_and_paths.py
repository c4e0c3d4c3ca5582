"""Secrets stay secret and paths stay in their folder (issue 18, part 2): no storage password reaches the manifest
(and from it report.html) or a message, and every path component made from spec text (the study's name, arm
names, grid values) is a slug that stays inside its parent. A real study in PostgreSQL with a password in its URL,
grepped file by file, is in test_postgres.py."""
import json
import sys

import pytest
import yaml

from ablate.messages import one_line
from ablate.messages import mask_text, mask_url
from ablate.slug import MAX_LENGTH, child, slug
from ablate.spec.study_spec import parse_study

SECRET = "hunter2secret"
SPEC = {"description": "x", "base": {"family": "cifar", "depth": 20, "dataset": "digits", "train_size": 64,
                                     "dev_size": 32, "test_size": 32, "epochs": 1},
        "factors": {"residual": {"values": [True, False]}}, "seeds": [0]}

URLS = [  # (URL, what it shows)
    (f"postgresql://user:{SECRET}@db.example:5432/ablate", "postgresql://user:***@db.example:5432/ablate"),
    (f"postgresql://:{SECRET}@db.example/ablate", "postgresql://:***@db.example/ablate"),
    (f"postgresql://user@db.example/ablate?password={SECRET}", "postgresql://user@db.example/ablate?password=***"),
    (f"postgresql://user@db.example/ablate?sslmode=require&password={SECRET}&connect_timeout=5",
     "postgresql://user@db.example/ablate?sslmode=require&password=***&connect_timeout=5"),
    (f"postgresql://user@db.example/ablate?sslpassword={SECRET}", "postgresql://user@db.example/ablate?sslpassword=***"),
    (f"postgresql+psycopg://user:{SECRET}@db.example/ablate", "postgresql+psycopg://user:***@db.example/ablate"),
    (f"postgresql://user:{SECRET}@at@db.example/ablate", "postgresql://user:***@db.example/ablate"),  # an @ in it
    (f"postgresql://user:a/{SECRET}@db.example/ablate", "postgresql://user:***@db.example/ablate"),  # a / in it
    (f"postgresql://user:a {SECRET}@db.example/ablate", "postgresql://user:***@db.example/ablate"),  # a blank
    (f"mysql://user:{SECRET}@db.example/ablate;Password={SECRET}", "mysql://user:***@db.example/ablate;Password=***"),
    (f"--storage=postgresql://user:{SECRET}@db.example/ablate", "--storage=postgresql://user:***@db.example/ablate"),
    ("postgresql://user@db.example/ablate", "postgresql://user@db.example/ablate"),  # nothing to hide
    ("sqlite:////runs/ra/optuna.db", "sqlite:////runs/ra/optuna.db"),
    ("residual-ablation", "residual-ablation"),
]


@pytest.mark.parametrize("url, shown", URLS)
def test_mask_url_hides_every_form_of_password(url, shown):
    assert mask_url(url) == shown
    assert SECRET not in mask_url(url)


def test_messages_and_tracebacks_lose_the_passwords_of_every_url_in_them():
    text = (f"keeps its studies in 'postgresql://u:{SECRET}@h1/db', not postgresql://v:{SECRET}@h2/db?password="
            f"{SECRET}\n  File \"x.py\", line 3, in open: postgresql://:{SECRET}@h3")
    masked = mask_text(text)
    assert SECRET not in masked
    assert "'postgresql://u:***@h1/db'" in masked and "postgresql://v:***@h2/db" in masked  # each URL its own host
    line = one_line(f"error: {text}\x1b[2J\u2028end")
    assert SECRET not in line and len(line.splitlines()) == 1 and "\x1b" not in line and line.endswith("\\u2028end")


def test_the_manifest_command_shows_no_password(monkeypatch):
    """The manifest's command (the raw argv) reaches report.html, the file meant to be sent."""
    from ablate import __version__
    from ablate.engine.manifest import run_manifest as manifest

    url = f"postgresql://user:{SECRET}@db.example/ablate?password={SECRET}"
    monkeypatch.setattr(sys, "argv", ["/usr/bin/ablate", "study", "spec.yaml", "--storage", url,
                                      f"--storage={url}"])
    study = parse_study(SPEC)
    record = manifest(study, "digits", {"storage": mask_url(url)})
    text = json.dumps(record)
    assert SECRET not in text
    assert record["command"] == ["ablate", "study", "spec.yaml", "--storage", mask_url(url), f"--storage={mask_url(url)}"]
    assert record["packages"]["ablate"] == __version__  # this copy, whatever holds the name `ablate` on the index


HOSTILE_NAMES = ["../../x", "..", ".", "/abs/path", "/", "a/../../b", "-rf", ".hidden", "",
                 "résidus d'été", "残差", "a\nb", "tab\there", "x" * 500, "con", "a\\..\\b", "\x00nul", "dataset=folder:../../.."]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_a_slug_is_one_folder_inside_its_parent(name, tmp_path):
    s = slug(name)
    assert s and len(s) <= MAX_LENGTH and "/" not in s and "\\" not in s and s[0] not in ".-"
    assert s.isascii() and s.isprintable()
    path = child(tmp_path, name)
    assert path.parent == tmp_path and path.resolve().parent == tmp_path.resolve()
    path.mkdir()  # the file system takes it as one folder
    assert [p.name for p in tmp_path.iterdir()] == [s]


def test_slugs_keep_good_names_and_tell_different_names_apart():
    for good in ("residual-ablation", "residual=true,shortcut=identity", "lr=0.01-seed0", "he2016", "r0-i1"):
        assert slug(good) == good
    texts = HOSTILE_NAMES + ["../../y", "a\nc", "x" * 501, "resiDus d'ete", "résidus d’été"]
    assert len({slug(t) for t in texts}) == len(texts)


@pytest.mark.parametrize("name", ["../../x", "/abs/path", "残差", "a\nb", "..", "x" * 500])
def test_the_run_folder_stays_under_runs_whatever_the_study_name(name, tmp_path, monkeypatch):
    from ablate.run_folder.run_files import create_run_dir

    monkeypatch.chdir(tmp_path)
    study = parse_study({**SPEC, "name": name})
    assert study.name == name  # the name itself is kept (reports quote it); only the folder is a slug
    run_dir = create_run_dir(study, None, study.resolved_yaml(), {}, "")
    assert run_dir.resolve().parent.parent == (tmp_path / "runs").resolve()
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("spec.yaml")] == [run_dir / "spec.yaml"]
    assert yaml.safe_load((run_dir / "spec.yaml").read_text())["name"] == name


def test_tensorboard_folders_from_arms_and_grid_values_stay_in_the_run(tmp_path):
    pytest.importorskip("tensorboard")
    from ablate.engine.tensorboard import write_trial
    from ablate.run_folder.layout import TENSORBOARD as FOLDER

    run_dir = tmp_path / "run"
    (run_dir / "trials").mkdir(parents=True)
    value = "folder:../../../../../../outside"
    # Where that grid value once led (grid/<arm>/dataset=<value>-seed0): an event file that is not ablate's,
    # which a trial registered again would have deleted as its own.
    outside = (run_dir / FOLDER / "grid" / "a" / f"dataset={value}-seed0").resolve()
    assert not outside.is_relative_to(run_dir)
    outside.mkdir(parents=True)
    (outside / "events.out.tfevents.keep").write_text("not ablate's")
    rows = [{"trial_id": "a1", "stage": "grid", "arm": "a", "params": {"dataset": value}, "seed": 0},
            {"trial_id": "a2", "stage": "confirm", "arm": "../../../outside", "params": {}, "seed": 0},
            {"trial_id": "a3", "stage": "grid", "arm": "/etc", "params": {"dataset": "/etc/passwd"}, "seed": 0},
            {"trial_id": "a4", "stage": "grid", "arm": "残差\n", "params": {"lr": 0.01}, "seed": 1}]
    for _ in range(2):  # registered twice: the second time replaces its own events only
        for row in rows:
            dest = write_trial(run_dir, row, {"lr": 0.01})
            assert dest.resolve().is_relative_to((run_dir / FOLDER).resolve()), dest
    assert (outside / "events.out.tfevents.keep").read_text() == "not ablate's"
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != outside]
    assert all(p.is_relative_to(run_dir / FOLDER) for p in written), written
    runs = {p.parent.relative_to(run_dir / FOLDER) for p in written}
    assert len(runs) == len(rows) and all(len(r.parts) == 3 for r in runs), runs
