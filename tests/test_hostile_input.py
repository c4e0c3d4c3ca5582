"""Hostile or careless input (issue 18, part 3): sizes far past any good-faith study, devices ablate cannot train
on, output paths it cannot write, YAML with repeated keys, alias bombs or control characters, storage URLs
carrying a password; and (issue 25) a batch larger than the training subset, numbers written as text, a trial no
machine can hold, paths SQLite or the operating system cannot take, decompression bombs. Every case ends in one line on stderr, exit code 2, no traceback, no new file, within
seconds (cases that used to hang run under an alarm) and with no password in the output."""
import re
import signal
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ablate.cli.app import app
from ablate.spec import limits
from ablate.spec.trial_config import TrialConfig

pytestmark = pytest.mark.usefixtures("fake_mnist_env")  # `auto` reads the tests' own MNIST-format files, offline
SMALL = ["--dataset", "digits", "--train-size", "64", "--dev-size", "32", "--test-size", "32", "--epochs", "1"]
SECRET = "hunter2secret"
SPEC = {"description": "x", "base": {"family": "cifar", "depth": 20, "dataset": "digits", "train_size": 64,
                                     "dev_size": 32, "test_size": 32, "epochs": 1},
        "factors": {"residual": {"values": [True, False]}}, "seeds": [0, 1]}
TUNED = {**SPEC, "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.001, "high": 0.3}}, "trials": 2}}
HUGE = 10 ** 26  # train_size: 1e26 of the issue (YAML reads 1e26 without a point as text)


def spec(base=None, **over) -> str:
    return yaml.safe_dump({**SPEC, "base": {**SPEC["base"], **(base or {})}, **over})


# "billion laughs": a few hundred bytes whose alias i stands for 10^9 x's
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n"
                                                          for p, c in zip("abcdefgh", "bcdefghi"))
# name -> text of the files the cases read (written once into the inputs folder)
FILES = {
    "spec-train-size.yaml": spec({"train_size": HUGE}),
    "spec-epochs.yaml": spec({"epochs": 10 ** 12}),
    "spec-steps.yaml": spec({"epochs": 10 ** 7, "batch_size": 2}),
    "spec-threads.yaml": spec({"threads": 100_000}),
    "spec-image-size.yaml": spec({"image_size": 100_000}),
    "spec-lr.yaml": spec({"lr": 1e300}),
    "spec-trials.yaml": yaml.safe_dump({**TUNED, "search": {**TUNED["search"], "trials": 10 ** 11}}),
    "spec-startup.yaml": yaml.safe_dump({**TUNED, "search": {**TUNED["search"], "startup": 10 ** 11}}),
    "spec-seed-rule.yaml": spec(seeds={"min": 3, "max": 10 ** 12, "half_width": 1.0}),
    "spec-seed-start.yaml": spec(seeds={"min": 3, "max": 10, "half_width": 1.0, "start": 2 ** 63 - 5}),
    "spec-seed-int64.yaml": spec(seeds=[0, 2 ** 64]),
    "spec-seed-negative.yaml": spec(seeds=[0, -1]),
    "spec-seed-count.yaml": spec(seeds=list(range(1001))),
    "spec-arms.yaml": spec(factors={"seed": {"values": list(range(1001))}}),
    "spec-arm-list.yaml": spec(factors=None, arms=[{"name": f"a{i}", "seed": i} for i in range(1001)]),
    "spec-grid.yaml": spec(grid={"lr": [0.01 * (i + 1) for i in range(101)], "momentum": [i / 100 for i in range(100)]}),
    "spec-total.yaml": yaml.safe_dump({**TUNED, "factors": {"data_seed": {"values": list(range(20))}},
                                       "search": {**TUNED["search"], "trials": 100_000}}),
    "spec-duplicate.yaml": "description: x\nseeds: [0]\nseeds: [1, 2]\n",
    "spec-newline-key.yaml": yaml.safe_dump({**SPEC, "na\nme\x1b[31m": 1}),
    "spec-bomb.yaml": BOMB + "description: *i\n",
    "spec-deep.yaml": "description: " + "[" * 5000 + "]" * 5000 + "\n",
    "spec-large.yaml": "description: x\n" + "#" * (limits.MAX_SPEC_BYTES + 10) + "\n",
    "config-duplicate.yaml": "lr: 0.1\nepochs: 1\nlr: 0.2\n",
    "config-image-size.yaml": "image_size: 100000\n",
    "config-bomb.yaml": BOMB,
    "new\nline.yaml": "lr: 0.1\nlr: 0.2\n",
    "a-file": "not a folder\n",
    # issue 25: a batch larger than the training subset, numbers given as text, a trial no machine can hold
    "spec-batch.yaml": spec({"batch_size": 1_000_000}),
    "config-batch.yaml": "batch_size: 1000000\ntrain_size: 64\n",
    "config-lr-text.yaml": 'lr: "0.1"\n',
    "config-factor-text.yaml": "milestone_factor: '0.5'\n",
    "spec-momentum-text.yaml": spec({"momentum": "0.9"}),
    "spec-factor-text.yaml": spec(factors={"lr": {"values": [0.1, "0.01"]}}),
    "spec-data.yaml": spec({"dataset": "cifar10", "image_size": 1024, "train_size": 49_000, "dev_size": 500}),
    "config-memory.yaml": "dataset: digits\nimage_size: 1024\ntrain_size: 1024\nbatch_size: 1024\ndev_size: 32\n"
                          "test_size: 32\nepochs: 1\n",
}
LONG = "/".join(["p" * 200] * 3)  # a run folder path of 600+ bytes: past SQLite's 512


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    for name, text in FILES.items():
        (d / name).write_text(text, encoding="utf-8")
    (d / "lonely").mkdir()  # a trial config with no recorded result beside it
    (d / "lonely" / "config.yaml").write_text(TrialConfig().to_yaml())
    return d


# (arguments, separated by single spaces, with {d} = the inputs folder; a fragment the one line must contain)
CASES = [
    # sizes past their bounds (ablate/spec/limits.py)
    (f"train --train-size {HUGE}", "train_size must be at most 2,000,000"),
    ("train --epochs 1000000000000", "epochs must be at most 10,000,000"),
    ("train --epochs 9000000 --train-size 1000 --batch-size 2", "more than 10,000,000 steps"),
    ("train --batch-size 100000000", "batch_size must be at most 2,000,000"),
    ("train --eval-every 100000000000", "eval_every must be at most 10,000,000"),
    ("train --threads 100000", "threads must be at most 1,024"),
    ("train --seed 9223372036854775808", "seed must be from 0 to 2^63 - 1"),
    ("train --seed -1", "seed must be from 0 to 2^63 - 1"),
    ("train --data-seed 100000000000000000000", "data_seed must be from 0 to 2^63 - 1"),
    ("train --lr 1e300", "lr must be at most 1e+06, got 1e+300"),
    ("train --weight-decay 5", "weight_decay must be at most 1"),
    ("train --config {d}/config-image-size.yaml", "image_size must be at most 1,024"),
    ("summary --input-size 100000", "--input-size must be at most 1,024"),
    ("summary --in-channels 100000", "--in-channels must be at most 64"),
    ("summary --num-classes 1000000000", "--num-classes must be at most 100,000"),
    ("verify-torchvision --seed 99999999999999999999", "--seed must be from 0 to 2^63 - 1"),
    ("study residual-ablation --dry-run --sampler-seed -1", "--sampler-seed must be from 0 to 1,000,000, got -1"),
    ("study residual-ablation --dry-run --sampler-seed 99999999999999999999", "--sampler-seed must be from 0 to 1,000,000"),
    ("study {d}/spec-train-size.yaml", "train_size must be at most 2,000,000"),
    ("study {d}/spec-epochs.yaml", "epochs must be at most 10,000,000"),
    ("study {d}/spec-steps.yaml", "more than 10,000,000 steps"),
    ("study {d}/spec-threads.yaml", "threads must be at most 1,024"),
    ("study {d}/spec-image-size.yaml", "image_size must be at most 1,024"),
    ("study {d}/spec-lr.yaml", "lr must be at most 1e+06, got 1e+300"),
    ("study {d}/spec-trials.yaml", "search.trials must be a positive integer of at most 100,000"),
    ("study {d}/spec-startup.yaml", "search.startup (random trials before TPE) must be an integer from 0 to 100,000"),
    ("study {d}/spec-seed-rule.yaml", "seeds.max must be an integer from seeds.min (3) to 1000"),
    ("study {d}/spec-seed-start.yaml", "seeds.start must be an integer from 0 to 2^63 - seeds.max"),
    ("study {d}/spec-seed-int64.yaml", "seed must be from 0 to 2^63 - 1, got 18446744073709551616"),
    ("study {d}/spec-seed-negative.yaml", "seed must be from 0 to 2^63 - 1, got -1"),
    ("study {d}/spec-seed-count.yaml", "1,001 seeds, more than 1000"),
    ("study {d}/spec-arms.yaml", "the factors give more than 1,000 arms"),
    ("study {d}/spec-arm-list.yaml", "1,001 arms, more than 1,000"),
    ("study {d}/spec-grid.yaml", "the grid has 10,100 points, more than 10,000"),
    ("study {d}/spec-total.yaml", "the study would run up to 2,000,040 trials, more than 1,000,000"),
    ("study residual-ablation --retries 1000", "--retries must be at most 100"),
    # devices ablate cannot train on, output folders it cannot make
    ("train --device meta", "unknown device 'meta'; use cpu, cuda or cuda:N"),
    ("train --device xla", "unknown device 'xla'"),
    ("train --device mps", "unknown device 'mps'"),
    ("train --device ipu", "unknown device 'ipu'"),
    ("reproduce {d}/lonely/config.yaml --device meta", "unknown device 'meta'"),
    ("train --out {d}/a-file", "a-file is a file; pass a folder for --out"),
    ("train --out {d}/a-file/run", "cannot create {d}/a-file/run: Not a directory"),
    ("train --out /proc/x/run", "cannot create /proc/x/run"),
    # YAML: repeated keys, bombs, depth, size, control characters in keys and paths
    ("train --config {d}/config-duplicate.yaml", "found duplicate key 'lr'"),
    ("study {d}/spec-duplicate.yaml", "spec-duplicate.yaml, line 3: found duplicate key 'seeds'"),
    ("train --config {d}/config-bomb.yaml", "more than 100,000 values (counting each use of an alias)"),
    ("study {d}/spec-bomb.yaml", "more than 100,000 values (counting each use of an alias)"),
    ("study {d}/spec-deep.yaml", "nested more than 50 levels deep"),
    ("study {d}/spec-large.yaml", "larger than 1,048,576 bytes"),
    ("study {d}/spec-newline-key.yaml", "unknown spec key(s) na\\nme\\x1b[31m"),
    ("train --config {d}/new\nline.yaml", "new\\nline.yaml line 2: found duplicate key 'lr'"),
    ("study {d}/new\nline.yaml", "new\\nline.yaml, line 2: found duplicate key 'lr'"),
    ("train --config {d}/missing\n\x1b[2Jfile.yaml", "missing\\n\\x1b[2Jfile.yaml"),
    # issue 25: a batch larger than the training subset is refused, not trained full-batch under a false name
    ("train --batch-size 1000000", "batch_size 1,000,000 is more than train_size 64"),
    ("train --config {d}/config-batch.yaml", "batch_size 1,000,000 is more than train_size 64: a batch cannot hold"),
    ("study {d}/spec-batch.yaml", "batch_size 1,000,000 is more than train_size 64"),
    # numbers given as text
    ("train --config {d}/config-lr-text.yaml", "lr must be a number, got the text '0.1'"),
    ("train --config {d}/config-factor-text.yaml", "milestone_factor must be a number, got the text '0.5'"),
    ("study {d}/spec-momentum-text.yaml", "momentum must be a number, got the text '0.9'"),
    ("study {d}/spec-factor-text.yaml", "lr must be a number, got the text '0.01'"),
    # a trial no machine can hold (about 600 GB at its peak), refused before any data is loaded
    ("train --config {d}/config-memory.yaml", "of memory at its peak (estimated within 30%"),
    ("study {d}/spec-data.yaml", "the data alone need 580.6 GB of memory (580.5 GB for the train, dev and test subsets"),
    # paths the operating system or SQLite cannot take (ablate/execute/path_limits.py)
    (f"study residual-ablation --out {{d}}/{LONG}", "SQLite opens none over 504 bytes"),
    (f"study residual-ablation --storage sqlite:///{{d}}/{LONG}/optuna.db", "--storage: the Optuna database"),
    (f"study residual-ablation --out {{d}}/{'n' * 250}", "use a name of at most 245 bytes"),
    (f"train --out {{d}}/{'n' * 256}", "is 256 bytes long, more than the 255 bytes a file name may have here (NAME_MAX)"),
    (f"train --out {{d}}/{'/'.join(['q' * 250] * 17)}", "(PATH_MAX)"),
    # storage URLs carrying a password: refused, and the password is in no message
    (f"study residual-ablation --storage postgresql://u:{SECRET}@127.0.0.1:1/db",
     "cannot open Optuna storage 'postgresql://u:***@127.0.0.1:1/db'"),
    (f"study residual-ablation --storage postgresql://:{SECRET}@127.0.0.1:1/db",
     "cannot open Optuna storage 'postgresql://:***@127.0.0.1:1/db'"),
    (f"study residual-ablation --storage postgresql://u@127.0.0.1:1/db?password={SECRET}",
     "cannot open Optuna storage 'postgresql://u@127.0.0.1:1/db?password=***'"),
    (f"study residual-ablation --storage postgresql://u:{SECRET}@127.0.0.1:port/db", "cannot open Optuna storage"),
    (f"study residual-ablation --storage postgresql://u:{SECRET}@h@127.0.0.1:1/db", "cannot open Optuna storage"),
]
SECONDS = 60  # a case that used to hang (or grow memory at 150 MB/s) fails here instead


class TookTooLong(Exception):
    pass


def _alarm(signum, frame):
    raise TookTooLong(f"still running after {SECONDS} s")


def tree(*roots):
    return {p for root in roots for p in Path(root).rglob("*")}


def _case_id(command: str) -> str:
    """The command as a test id, a long run of one character shortened (nnnnnnnn... -> n*250)."""
    return re.sub(r"(.)\1{9,}", lambda m: f"{m.group(1)}*{len(m.group(0))}", command.replace("\n", "\\n"))


@pytest.mark.parametrize("command, fragment", CASES, ids=[_case_id(c) for c, _ in CASES])
def test_hostile_input(command, fragment, inputs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default run folders would land here
    args = command.format(d=inputs).split(" ")
    if args[0] == "train" and "--config" not in args:
        args = [args[0], *SMALL, *args[1:]]  # the case's own flags come last and win
    before = tree(inputs, tmp_path)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS)
    t0 = time.perf_counter()
    try:
        result = CliRunner().invoke(app, args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not isinstance(result.exception, TookTooLong), f"{command!r} ran past {SECONDS} s"
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    expected = fragment.format(d=inputs).replace("\n", "\\n")
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.output and SECRET not in result.output
    assert tree(inputs, tmp_path) == before, "hostile input left files behind"
    print(f"{time.perf_counter() - t0:.2f} s: {lines[0][:120]}")


def test_the_bounds_themselves_are_accepted():
    """Each bound is a bound, not an off-by-one: the largest allowed value gives a valid config."""
    top = TrialConfig(train_size=limits.MAX_IMAGES, batch_size=limits.MAX_IMAGES, threads=limits.MAX_THREADS,
                      image_size=limits.MAX_IMAGE_SIZE, seed=limits.SEED_LIMIT - 1, data_seed=0, lr=limits.MAX_LR,
                      weight_decay=limits.MAX_WEIGHT_DECAY, epochs=limits.MAX_STEPS, eval_every=limits.MAX_STEPS)
    assert top.total_steps() == limits.MAX_STEPS


@pytest.mark.parametrize("train_size, batch_size", [(2, 2), (3, 2), (64, 64), (65, 64), (66, 64), (128, 64),
                                                    (129, 64), (130, 64), (1000, 7), (1001, 1000), (9, 8)])
def test_total_steps_counts_the_batches_it_no_longer_lists(train_size, batch_size):
    config = TrialConfig(train_size=train_size, batch_size=batch_size, epochs=3)
    assert config.total_steps() == len(config.batches()) * 3


# --- issue 25: paths, decompression bombs ---------------------------------------------------------------------
def _one_line_refusal(result) -> str:
    lines = result.output.splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_a_study_started_in_a_very_deep_folder_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """The default run folder runs/<study>/<time> lies in the working directory: deep enough, its optuna.db would
    be past SQLite's 512 bytes (it used to fail inside ablate, 'unable to open database file', leaving a half-made
    run folder)."""
    deep = tmp_path.joinpath(*["d" * 200] * 2, "e" * max(1, 470 - len(str(tmp_path)) - 402))
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    line = _one_line_refusal(CliRunner().invoke(app, ["study", "residual-ablation", "--dataset", "digits"]))
    assert "the run folder in this directory: the Optuna database" in line and "over 504 bytes" in line, line
    assert not (deep / "runs").exists()


def test_a_run_folder_moved_too_deep_is_refused_on_resume(tmp_path):
    from ablate.spec.study_spec import load_study

    run = tmp_path.joinpath(*["r" * 200] * 2, "run" + "n" * 100)
    run.mkdir(parents=True)
    (run / "spec.yaml").write_text(load_study("residual-ablation", "smoke").resolved_yaml())
    before = tree(tmp_path)
    line = _one_line_refusal(CliRunner().invoke(app, ["study", "--resume", str(run)]))
    assert line.startswith("error: --resume: the Optuna database") and "over 504 bytes" in line, line
    assert tree(tmp_path) == before


def bomb_png(path: Path, width: int, height: int) -> None:
    """A real PNG of width x height black 1-bit pixels: a few kilobytes that decode to width x height pixels
    (PIL's decompression-bomb limit counts those), its rows compressed as they are made."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height", [(10_000, 10_000), (20_000, 10_000)],
                         ids=["above PIL's limit (it warns)", "above twice PIL's limit (it refuses)"])
def test_a_decompression_bomb_is_named_for_what_it_is(width, height, tmp_path, monkeypatch):
    """A PNG declaring 100 or 200 million pixels in a folder dataset: refused unread, naming the file, the pixels it
    declares and the limit (it used to be called "truncated or corrupt", or, between PIL's limit and twice it,
    decoded after a warning)."""
    from PIL import Image

    folder = tmp_path / "pics"
    bomb_png(folder / "train" / "a" / "bomb.png", width, height)
    for part, name in (("train", "b"), ("test", "a")):
        (folder / part / name).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16)).save(folder / part / name / "ok.png")
    assert (folder / "train" / "a" / "bomb.png").stat().st_size < 100_000
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    result = CliRunner().invoke(app, ["train", "--dataset", f"folder:{folder}", "--train-size", "2", "--batch-size", "2",
                                      "--dev-size", "1", "--test-size", "1", "--epochs", "1"])
    line = _one_line_refusal(result)
    assert f"image {folder / 'train' / 'a' / 'bomb.png'} declares {width * height:,} pixels, more than the " \
           f"{Image.MAX_IMAGE_PIXELS:,}" in line and "decompression bomb" in line and "corrupt" not in line, line
    assert tree(tmp_path) == before


@pytest.mark.slow  # two Python processes importing matplotlib
def test_an_unwritable_home_gets_no_matplotlib_warning(tmp_path):
    """HOME is a file (as root, the one way a folder cannot be made there): matplotlib alone writes its multi-line
    warning about a temporary cache folder; imported through ablate it writes nothing, and its cache lives in a
    private folder that the next run reuses."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.write_text("not a folder\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), PYTHONPATH=str(Path(__file__).resolve().parents[1]), TMPDIR=str(tmp_path))
    code = "import {first}, matplotlib.figure, os; print(os.environ.get('MPLCONFIGDIR'))"
    alone = subprocess.run([sys.executable, "-c", code.format(first="os")], env=env, capture_output=True, text=True)
    assert "Matplotlib created a temporary cache directory" in alone.stderr, alone.stderr  # the fault, shown
    for _ in range(2):
        through = subprocess.run([sys.executable, "-c", code.format(first="ablate.analysis.figures")], env=env,
                                 capture_output=True, text=True)
        assert through.returncode == 0 and through.stderr == "", through.stderr
        folder = Path(through.stdout.strip())
        assert folder == tmp_path / f"ablate-matplotlib-{os.getuid()}" and folder.is_dir()
        assert (folder.stat().st_mode & 0o777) == 0o700


def test_an_exponent_without_a_point_reads_as_a_number_and_quoted_text_does_not(tmp_path):
    """YAML 1.1 (PyYAML) reads 1e-3 as text; ablate's specs and configs read it as the number it is (YAML 1.2, JSON),
    and refuse a number given as quoted text instead of reading it as one."""
    (tmp_path / "c.yaml").write_text("lr: 1e-3\nweight_decay: 5E-4\nmomentum: 0.9\n")
    cfg = TrialConfig.from_yaml_file(tmp_path / "c.yaml")
    assert (cfg.lr, cfg.weight_decay, cfg.momentum) == (0.001, 0.0005, 0.9)
    assert yaml.safe_load("lr: 1e-3") == {"lr": "1e-3"}  # what plain PyYAML does, unchanged for everyone else
    (tmp_path / "q.yaml").write_text('lr: "1e-3"\n')
    with pytest.raises(Exception, match="lr must be a number, got the text '1e-3'"):
        TrialConfig.from_yaml_file(tmp_path / "q.yaml")
