"""The bad-input catalogue: every case ends in one line on stderr, exit code 2, no traceback, no new files."""
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ablate.cli.app import app
from ablate.spec.study_spec import load_study
from ablate.spec.trial_config import TrialConfig

pytestmark = pytest.mark.usefixtures("fake_mnist_env")  # `auto` and `--dataset mnist` find MNIST-format files, offline
SMALL = ["--train-size", "64", "--dev-size", "32", "--test-size", "32", "--epochs", "1"]
GOOD_SPEC = {
    "description": "x", "base": {"family": "imagenet", "depth": 18, "train_size": 64, "dev_size": 32, "test_size": 32},
    "factors": {"residual": {"values": [True, False]}},
    "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.001, "high": 0.3}}, "trials": 2},
    "seeds": [0, 1],
}


def spec_with(**over):
    return yaml.safe_dump({**GOOD_SPEC, **over})


def mnist_copy(root: Path, source: Path, damage) -> Path:
    """A data root whose MNIST has one damaged file; the others link to those of the source root."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (source / "MNIST" / "raw").iterdir():
        (raw / f.name).symlink_to(f)
    damage(raw)
    return root


def truncate_images(raw: Path):
    data = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte").unlink()
    (raw / "train-images-idx3-ubyte").write_bytes(data[: len(data) // 2])


def bad_magic(raw: Path):
    data = bytearray((raw / "t10k-labels-idx1-ubyte").read_bytes())
    data[2:4] = b"\x0d\x0d"
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(data))


def empty_file(raw: Path):
    (raw / "train-labels-idx1-ubyte").unlink()
    (raw / "train-labels-idx1-ubyte").write_bytes(b"")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, fake_mnist):
    """Bad input files, made once; the tests check that nothing new appears beside them."""
    d = tmp_path_factory.mktemp("inputs")
    files = {
        "malformed.yaml": "lr: [0.1\n", "unknown-key.yaml": "lr: 0.1\nwarmup: 5\n", "wrong-type.yaml": "epochs: five\n",
        "newer.yaml": "schema: 99\n", "list.yaml": "- 1\n- 2\n", "binary.yaml": None,
        "spec-factor.yaml": spec_with(factors={"residuals": {"values": [True]}}),
        "spec-requires.yaml": spec_with(factors={"residual": {"values": [True]}, "shortcut": {"values": ["identity"], "requires": {"plain": True}}}),
        "spec-bounds.yaml": spec_with(search={"space": {"lr": {"distribution": "loguniform", "low": 0.1, "high": 0.01}}, "trials": 2}),
        "spec-seeds.yaml": spec_with(seeds=[]), "spec-param.yaml": spec_with(search={"space": {"learning_rate": {"distribution": "uniform", "low": 0, "high": 1}}, "trials": 2}),
        "spec-malformed.yaml": "description: x\nseeds: [0, 1\n", "spec-list.yaml": "- a\n",
        "spec-distribution.yaml": spec_with(search={"space": {"lr": {"distribution": "gamma", "low": 0.1, "high": 1}}, "trials": 2}),
        "spec-trials.yaml": spec_with(search={"space": {"lr": {"distribution": "uniform", "low": 0.1, "high": 1}}, "trials": 0}),
        "spec-depth.yaml": spec_with(factors={"depth": {"values": [18, 19]}}),
        "spec-budget.yaml": spec_with(budgets={"tiny": {}}),
    }
    for name, text in files.items():
        if text is None:
            (d / name).write_bytes(b"\xff\xfe\x00binary")
        else:
            (d / name).write_text(text)
    (d / "not-a-run").mkdir()
    (d / "not-a-run" / "notes.txt").write_text("x")
    (d / "full").mkdir()
    (d / "full" / "keep.txt").write_text("x")
    (d / "empty-data").mkdir()
    (d / "empty-run").mkdir()  # a study that was started but finished nothing
    (d / "empty-run" / "spec.yaml").write_text(load_study("residual-ablation", "smoke").resolved_yaml())
    (d / "lonely").mkdir()  # a trial config with no recorded result beside it
    (d / "lonely" / "config.yaml").write_text(TrialConfig().to_yaml())
    mnist_copy(d / "truncated", fake_mnist, truncate_images)
    mnist_copy(d / "bad-magic", fake_mnist, bad_magic)
    mnist_copy(d / "empty-labels", fake_mnist, empty_file)
    readonly = d / "readonly"
    readonly.mkdir()
    if subprocess.run(["chattr", "+i", str(readonly)], capture_output=True).returncode != 0:
        readonly.rmdir()
        readonly = Path("/sys")  # read-only for everyone, root included
    yield d, readonly
    subprocess.run(["chattr", "-i", str(readonly)], capture_output=True)


# (command line with {d} = inputs folder and {ro} = a read-only folder, a fragment the one-line error must contain)
CASES = [
    ("train --family vgg", "unknown family 'vgg'"),
    ("train --depth 19", "valid depths: 10, 18, 34"),
    ("train --family cifar --depth 18", "valid depths: 20, 32, 44, 56, 110"),
    ("train --lr 0", "lr must be a positive number"),
    ("train --lr -0.5", "lr must be a positive number"),
    ("train --batch-size 0", "batch_size must be positive"),
    ("train --epochs 0", "epochs must be positive"),
    ("train --eval-every -3", "eval_every must be positive"),
    ("train --dataset imagenet", "unknown dataset 'imagenet'"),
    ("train --shortcut dense", "unknown shortcut 'dense'"),
    ("train --momentum 1.5", "momentum must be in [0, 1)"),
    ("train --dataset digits --train-size 5000", "train"),
    ("train --dataset mnist --test-size 20000", "test"),
    ("train --epochs many", "Invalid value for '--epochs'"),
    ("train --no-such-flag", "No such option"),
    ("train --device cuda", "no CUDA GPU is available"),
    ("train --device tpu9", "unknown device"),
    ("train --config {d}/missing.yaml", "cannot read config"),
    ("train --config {d}/malformed.yaml", "malformed YAML"),
    ("train --config {d}/unknown-key.yaml", "unknown setting(s) warmup"),
    ("train --config {d}/wrong-type.yaml", "epochs must be int"),
    ("train --config {d}/newer.yaml", "newer than this toolkit"),
    ("train --config {d}/list.yaml", "expected a mapping"),
    ("train --config {d}/binary.yaml", "{d}/binary.yaml"),
    ("train --dataset mnist --data-dir {d}/empty-data", "MNIST was not found"),
    ("train --dataset mnist --data-dir {d}/truncated", "train-images-idx3-ubyte"),
    ("train --dataset mnist --data-dir {d}/bad-magic", "t10k-labels-idx1-ubyte"),
    ("train --dataset mnist --data-dir {d}/empty-labels", "train-labels-idx1-ubyte"),
    ("train --out {d}/full", "exists and is not empty"),
    ("summary --depth 19", "valid depths"),
    ("summary --shortcut dense", "unknown shortcut"),
    ("summary --input-size 4", "--input-size must be at least 8"),
    ("summary --num-classes 1", "num_classes"),
    ("study nope", "unknown study 'nope'; valid studies:"),
    ("study residual-ablation --budget huge", "unknown budget 'huge'"),
    ("study residual-ablation --dataset cifar-10", "unknown dataset 'cifar-10'"),
    ("study {d}/spec-factor.yaml", "unknown factor(s) residuals"),
    ("study {d}/spec-requires.yaml", "requires 'plain', which is not a factor"),
    ("study {d}/spec-bounds.yaml", "empty range"),
    ("study {d}/spec-seeds.yaml", "seeds must be a non-empty list"),
    ("study {d}/spec-param.yaml", "unknown search parameter(s) learning_rate"),
    ("study {d}/spec-malformed.yaml", "spec-malformed.yaml, line "),
    ("study {d}/spec-list.yaml", "must be a mapping"),
    ("study {d}/spec-distribution.yaml", "unknown distribution 'gamma'"),
    ("study {d}/spec-trials.yaml", "search.trials must be a positive integer"),
    ("study {d}/spec-depth.yaml", "valid depths"),
    ("study {d}/spec-budget.yaml", "unknown budget key(s) tiny"),
    ("study {d}/missing.yaml", "not found"),
    ("study residual-ablation --address 127.0.0.1:1", "cannot reach a Ray cluster at 127.0.0.1:1"),
    ("study residual-ablation --address nonsense", "is not HOST:PORT"),
    ("study residual-ablation --cpus 0", "--cpus must be at least 1"),
    ("study residual-ablation --gpus-per-trial 2", "--gpus-per-trial must be in (0, 1]"),
    ("study residual-ablation --retries -1", "--retries must be >= 0"),
    ("study residual-ablation --storage nosuchdb://x", "cannot open Optuna storage"),
    ("study residual-ablation --dataset mnist --data-dir {d}/truncated", "train-images-idx3-ubyte"),
    ("study residual-ablation --out {d}/full", "exists and is not empty"),
    ("study residual-ablation --out {ro}/run", "cannot create run folder"),
    ("study --resume {d}/not-a-run", "is not a study run folder"),
    ("study --resume {d}/nowhere", "is not a study run folder"),
    ("study residual-ablation --resume {d}/not-a-run", "is not a study run folder"),
    ("analyze {d}/not-a-run", "is not a study run folder"),
    ("analyze {d}/empty-run", "has no finished confirm-stage trials yet"),
    ("analyze", "no study run folders under runs/"),
    ("export {d}/not-a-run", "is not a study run folder"),
    ("export {d}/empty-run --format pdf", "unknown export format 'pdf'"),
    ("export", "Missing argument"),
    ("reproduce {d}/missing.yaml", "no config at"),
    ("reproduce {d}/newer.yaml", "newer than this toolkit"),
    ("reproduce {d}/lonely/config.yaml", "no recorded metrics"),
    ("reproduce {d}/malformed.yaml", "malformed YAML"),
    ("reproduce {d}/lonely/config.yaml --device cuda", "no CUDA GPU is available"),
]


def tree(*roots):
    return {p for root in roots for p in Path(root).rglob("*")}


@pytest.mark.parametrize("command, fragment", CASES, ids=[c for c, _ in CASES])
def test_bad_input(command, fragment, inputs, tmp_path, monkeypatch):
    d, ro = inputs
    monkeypatch.chdir(tmp_path)  # default run folders would land here
    args = command.format(d=d, ro=ro).split()
    if args[0] == "train" and "--out" not in args:
        args = [args[0], *SMALL, *args[1:]]  # the case's own flags come last and win
    before = tree(d, tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and fragment.format(d=d) in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert tree(d, tmp_path) == before, "bad input left files behind"


def test_the_catalogue_is_large():
    assert len(CASES) >= 30
