"""Data the user brings (docs/your-own-network.md, "Your own data"): a loader named as the dataset (a spec's
base.dataset, --dataset of `study` and `train`), its file hashed at parse and imported (announced) at launch, its
return value checked against the contract (refused in one line naming what was expected), drawn, split, resampled
and scaled as a shipped dataset is, recorded (hash in every trial config, a copy in the run folder, the manifest),
and refused on resume and by reproduce once its source changed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from ablate.cli.app import app
from ablate.data import load_splits
from ablate.errors import AblateError
from ablate.spec import TrialConfig, file_sha256, load_study, parse_study

# Three classes of 10x10 colour images, each class its own mean colour; 150 training and 60 test images.
LOADER = '''
import torch


def _part(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    colour = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=torch.float32)[labels]
    images = colour.view(n, 3, 1, 1) + 30 * torch.randn(n, 3, 10, 10, generator=g)
    return images.clamp(0, 255).to(torch.uint8), labels


def load():
    return {"train": _part(150, 0), "test": _part(60, 1)}


def floats():
    (x, y), (tx, ty) = _part(150, 0), _part(60, 1)
    return {"train": (x[:, :1].float() / 255, y), "test": (tx[:, :1].float() / 255, ty), "classes": 5}


def not_a_dict():
    return _part(150, 0)


def float_labels():
    (x, y), test = _part(150, 0), _part(60, 1)
    return {"train": (x, y.float()), "test": test}


def three_d():
    (x, y), test = _part(150, 0), _part(60, 1)
    return {"train": (x[:, 0], y), "test": test}


def labels_above_classes():
    return {"train": _part(150, 0), "test": _part(60, 1), "classes": 2}


class Items(torch.utils.data.Dataset):
    """A map-style Dataset of (image, label) items, labels as ints or as one-value tensors."""

    def __init__(self, n, seed, tensor_labels=False):
        self.x, self.y = _part(n, seed)
        self.tensor_labels = tensor_labels

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], (self.y[i] if self.tensor_labels else int(self.y[i]))


def datasets():
    return {"train": Items(150, 0), "test": Items(60, 1, tensor_labels=True)}


def iterable_dataset():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(zip(*_part(150, 0)))
    return {"train": Stream(), "test": _part(60, 1)}


def dataset_of_triples():
    class Triples(Items):
        def __getitem__(self, i):
            return self.x[i], int(self.y[i]), i
    return {"train": Triples(150, 0), "test": Items(60, 1)}
'''

TINY = {"image_size": 8, "train_size": 48, "dev_size": 24, "test_size": 24, "batch_size": 24, "epochs": 1,
        "eval_every": 2, "lr": 0.05, "family": "cifar", "depth": 20}
SPEC = {"name": "mydata", "base": {"dataset": "./mydata.py:load", **TINY},
        "factors": {"residual": {"values": [True, False]}}, "seeds": [0, 1], "resample_data": True}


def _write(tmp_path: Path, spec: dict = SPEC) -> Path:
    (tmp_path / "mydata.py").write_text(LOADER)
    path = tmp_path / "mydata.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _splits(tmp_path: Path, name: str = "load", **kwargs):
    (tmp_path / "mydata.py").write_text(LOADER)
    file = tmp_path / "mydata.py"
    sizes = {"train_size": 48, "dev_size": 24, "test_size": 24, "image_size": 8, **kwargs}
    return load_splits(f"./mydata.py:{name}", None, **sizes, data_file=str(file), data_sha256=file_sha256(file))


def test_a_spec_records_the_loaders_file_and_hash_and_every_trial_config_names_them(tmp_path):
    study = load_study(_write(tmp_path))
    source = tmp_path / "mydata.py"
    assert study.data.reference == "./mydata.py:load" and study.data.file == str(source.resolve())
    cfg = study.trial_config(study.arms[0], {}, seed=1)
    assert (cfg.dataset, cfg.data_file, cfg.data_sha256) == ("./mydata.py:load", str(source.resolve()),
                                                               file_sha256(source))
    assert cfg.data_seed == 1  # resample_data: each seed its own draw, as with a shipped dataset
    again = TrialConfig.from_yaml_file(_dump(tmp_path, cfg.to_yaml()))
    assert again == cfg and again.trial_id() == cfg.trial_id()
    # where this machine keeps the file is not part of the trial id; the source's hash is
    assert cfg.replace(data_file="/elsewhere/mydata.py").trial_id() == cfg.trial_id()
    assert cfg.replace(data_sha256="0" * 64).trial_id() != cfg.trial_id()
    resolved = yaml.safe_load(study.resolved_yaml())
    assert resolved["base"]["dataset"] == {"reference": "./mydata.py:load", "file": cfg.data_file,
                                           "sha256": cfg.data_sha256}
    assert parse_study(resolved, source="spec.yaml").trial_config(study.arms[0], {}, seed=1) == cfg


def _dump(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_a_loader_without_its_recorded_source_or_as_an_arms_value_is_refused(tmp_path):
    with pytest.raises(AblateError, match="a data loader: it needs data_file and data_sha256"):
        TrialConfig(dataset="./mydata.py:load")
    spec = {**SPEC, "base": {**TINY, "dataset": "digits"},
            "factors": {"dataset": {"values": ["digits", "./mydata.py:load"]}}}
    with pytest.raises(AblateError, match="cannot be an arm's, a factor's or a search's value"):
        load_study(_write(tmp_path, spec))
    with pytest.raises(AblateError, match="dataset ./other.py:load: no file"):
        load_study(_write(tmp_path, {**SPEC, "base": {**SPEC["base"], "dataset": "./other.py:load"}}))
    with pytest.raises(AblateError, match="data_file"):
        load_study(_write(tmp_path, {**SPEC, "base": {**SPEC["base"], "data_file": "x.py"}}))


def test_a_loader_may_return_torch_datasets_and_gets_the_subsets_its_tensors_would(tmp_path):
    from_tensors, from_datasets = _splits(tmp_path), _splits(tmp_path, "datasets")
    for part in ("train", "dev", "test"):
        assert torch.equal(getattr(from_datasets, part).x, getattr(from_tensors, part).x)
        assert torch.equal(getattr(from_datasets, part).y, getattr(from_tensors, part).y)
    assert (from_datasets.num_classes, from_datasets.mean) == (from_tensors.num_classes, from_tensors.mean)
    with pytest.raises(AblateError, match=r"returned train item 0 as a tuple, not a pair \(image, label\); expected"):
        _splits(tmp_path, "dataset_of_triples")


def test_the_subsets_are_drawn_split_and_scaled_per_channel_as_a_shipped_datasets(tmp_path):
    splits = _splits(tmp_path)
    assert splits.dataset == "./mydata.py:load" and (splits.num_classes, splits.in_channels) == (3, 3)
    assert splits.train.x.shape == (48, 3, 8, 8) and splits.dev.x.shape == (24, 3, 8, 8)
    assert splits.test.x.shape == (24, 3, 8, 8) and splits.train.y.dtype == torch.int64
    # per-channel scaling by the training subset's statistics: the training subset has mean 0, std 1 per channel
    assert torch.allclose(splits.train.x.double().mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(splits.train.x.double().std(dim=(0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64),
                          atol=1e-4)
    assert len(splits.mean) == 3 and all(0 < m < 1 for m in splits.mean)  # in units of the pixels' full range
    # the dev subset is drawn from the training part, disjoint from the training subset; another seed draws others
    train = {tuple(x.flatten().tolist()) for x in splits.train.x}
    assert not train & {tuple(x.flatten().tolist()) for x in splits.dev.x}
    other = _splits(tmp_path, seed=1)
    assert not torch.equal(other.train.x, splits.train.x) and other.mean != splits.mean
    # float images in [0, 1] with one channel and declared classes: [-1, 1], as greyscale datasets are
    grey = _splits(tmp_path, "floats")
    assert (grey.in_channels, grey.num_classes, grey.mean, grey.std) == (1, 5, (0.5,), (0.5,))
    assert grey.train.x.min() >= -1 and grey.train.x.max() <= 1


@pytest.mark.parametrize("name, problem", [
    ("not_a_dict", "a tuple"),
    ("float_labels", "train labels of dtype torch.float32, not an integer tensor"),
    ("three_d", "train images of shape (150, 10, 10), not a non-empty tensor (N, C, H, W)"),
    ("labels_above_classes", "labels from 0 to 2, not from 0 to 1"),
    ("iterable_dataset", "train as a Stream without a length (an iterable Dataset)"),
])
def test_a_bad_return_value_is_refused_in_one_line_naming_what_was_expected(tmp_path, name, problem):
    with pytest.raises(AblateError) as caught:
        _splits(tmp_path, name)
    message = str(caught.value)
    assert f"data loader ./mydata.py:{name} returned {problem}" in message and "\n" not in message
    assert 'expected {"train": (images, labels), "test": (images, labels)}' in message


@pytest.mark.slow
def test_train_refuses_a_bad_loader_in_one_line_exit_2(tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text(LOADER)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "--dataset", "./mydata.py:float_labels", "--out", str(tmp_path / "t")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0] == f"importing data loader ./mydata.py:float_labels from {(tmp_path / 'mydata.py').resolve()}"
    assert len(lines) == 2 and "not an integer tensor; expected {" in lines[1]
    assert not (tmp_path / "t").exists()


@pytest.mark.slow
def test_train_runs_a_loader_named_by_dataset(tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text(LOADER)
    monkeypatch.chdir(tmp_path)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    result = CliRunner().invoke(app, ["train", "--dataset", "./mydata.py:load", *flags, "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert "importing data loader ./mydata.py:load" in result.output
    cfg = TrialConfig.from_yaml_file(tmp_path / "t" / "config.yaml")
    assert cfg.dataset == "./mydata.py:load" and cfg.data_sha256 == file_sha256(tmp_path / "mydata.py")
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["dataset"] == "./mydata.py:load" and len(metrics["channel_mean"]) == 3
    assert metrics["num_classes"] == 3 and metrics["in_channels"] == 3


@pytest.mark.slow
def test_a_study_on_the_users_data_records_it_and_a_changed_source_is_refused(tmp_path):
    spec = _write(tmp_path)
    source = tmp_path / "mydata.py"
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, ["study", str(spec), "--out", str(out), "--cpus", "1"])
    assert result.exit_code == 0, result.output
    assert f"importing data loader ./mydata.py:load from {source.resolve()}" in result.output
    recorded = file_sha256(source)
    assert (out / "data_source.py").read_bytes() == source.read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"] == {"reference": "./mydata.py:load", "file": str(source.resolve()), "sha256": recorded,
                                "package": None, "version": None}
    trials = sorted((out / "trials").iterdir())
    assert len(trials) == 4  # 2 arms x 2 seeds
    metrics = [json.loads((t / "metrics.json").read_text()) for t in trials]
    configs = [TrialConfig.from_yaml_file(t / "config.yaml") for t in trials]
    assert {c.data_sha256 for c in configs} == {recorded} and {c.data_seed for c in configs} == {0, 1}
    assert {m["dataset"] for m in metrics} == {"./mydata.py:load"}
    # resample_data: each seed its own draw, so its own per-channel statistics, recorded in metrics.json
    assert len({tuple(m["channel_mean"]) for m in metrics}) == 2 and all(len(m["channel_std"]) == 3 for m in metrics)
    same = runner.invoke(app, ["reproduce", str(trials[0])])  # a trial on the user's data reruns bit for bit
    assert same.exit_code == 0 and "identical" in same.output, same.output
    analysed = runner.invoke(app, ["analyze", str(out)])
    assert analysed.exit_code == 0, analysed.output
    assert "./mydata.py:load" in (out / "analysis" / "report.md").read_text()
    for name in ("report.md", "methods.md"):  # named with its source's hash, as a user's model is
        assert f"loader ./mydata.py:load (source SHA-256 {recorded[:12]})" in (out / "analysis" / name).read_text(), name

    with open(source, "a") as f:
        f.write("\n# an edit after the run\n")
    now = file_sha256(source)
    resumed = runner.invoke(app, ["study", "--resume", str(out)])
    assert resumed.exit_code == 2, resumed.output
    line = resumed.output.strip().splitlines()[-1]
    assert str(source.resolve()) in line and recorded in line and now in line
    refused = runner.invoke(app, ["reproduce", str(trials[0])])
    assert refused.exit_code == 2, refused.output
    line = refused.output.strip().splitlines()[-1]
    assert "data loader ./mydata.py:load" in line and recorded in line and now in line


def test_an_import_path_loader_and_a_dataset_flag_are_found_hashed_and_loaded(tmp_path, monkeypatch):
    import sys

    from ablate.execute.launch import new_study

    package = tmp_path / "pkgroot" / "my_data_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data.py").write_text(LOADER)
    spec = {**SPEC, "base": {**SPEC["base"], "dataset": "my_data_pkg.data:load"}}
    study = parse_study(spec, source="spec", spec_dir=tmp_path / "pkgroot")
    cfg = study.first_config()
    assert cfg.data_file == str(package / "data.py") and study.data.root == str(tmp_path / "pkgroot")
    splits = load_splits(cfg.dataset, None, cfg.train_size, cfg.dev_size, cfg.test_size, image_size=cfg.image_size,
                         data_file=cfg.data_file, data_sha256=cfg.data_sha256)
    assert Path(sys.modules["my_data_pkg.data"].__file__).resolve() == package / "data.py"
    assert splits.num_classes == 3 and splits.dataset == "my_data_pkg.data:load"
    # --dataset (study's flag, the API's dataset=): relative to the working directory, recorded as base.dataset is
    (tmp_path / "mydata.py").write_text(LOADER)
    monkeypatch.chdir(tmp_path)
    flagged, requested = new_study({**SPEC, "base": {**TINY, "dataset": "digits"}}, dataset="./mydata.py:load")
    assert requested == "./mydata.py:load" and flagged.data.file == str((tmp_path / "mydata.py").resolve())
    assert flagged.first_config().data_sha256 == file_sha256(tmp_path / "mydata.py")
    assert yaml.safe_load(flagged.resolved_yaml())["base"]["dataset"]["sha256"] == file_sha256(tmp_path / "mydata.py")
    flagged.pin(dataset="./mydata.py:load")  # what a launch pins (the dataset used) keeps the record
    assert yaml.safe_load(flagged.resolved_yaml())["base"]["dataset"]["reference"] == "./mydata.py:load"
