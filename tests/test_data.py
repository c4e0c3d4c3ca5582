import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ablate.data import readers as datasets
from ablate.data.splits import DATA_DIR_ENV, AblateError, load_splits, resolve_data_dir
from ablate.data.registry import DATASETS

needs_mnist = pytest.mark.mnist  # the real MNIST under $ABLATE_DATA_DIR, else skipped (tests/conftest.py)


def rows(x: torch.Tensor) -> set[bytes]:
    return {img.numpy().tobytes() for img in x}


@needs_mnist
def test_mnist_shapes_dtypes_range_and_labels():
    s = load_splits("mnist")
    assert (s.dataset, s.note, s.num_classes, s.in_channels) == ("mnist", None, 10, 1)
    for split, n in ((s.train, 1000), (s.dev, 200), (s.test, 200)):
        assert split.x.shape == (n, 1, 32, 32) and split.x.dtype == torch.float32 and split.x.is_contiguous()
        assert split.y.shape == (n,) and split.y.dtype == torch.int64
        assert split.x.min() >= -1 and split.x.max() <= 1
        assert split.x.min() < -0.99 and split.x.max() > 0.99
        assert 0 <= split.y.min() and split.y.max() <= 9
    assert set(s.train.y.tolist()) == set(range(10))
    # MNIST backgrounds are black, so most pixels should sit at -1 after scaling.
    assert (s.train.x < -0.99).float().mean() > 0.5


@needs_mnist
def test_mnist_train_dev_disjoint_and_test_from_test_split():
    s = load_splits("mnist", train_size=2000, dev_size=1000, test_size=500, image_size=28)
    train, dev = rows(s.train.x), rows(s.dev.x)
    assert len(train) == 2000 and len(dev) == 1000  # MNIST train has no duplicate images
    assert not train & dev
    # At native size the pixels are exact k/255 steps, so no interpolation crept in.
    k = (s.test.x + 1) / 2 * 255
    assert torch.allclose(k, k.round(), atol=1e-3)


@needs_mnist
def test_mnist_seed_determinism():
    a, b, c = load_splits("mnist", seed=3), load_splits("mnist", seed=3), load_splits("mnist", seed=4)
    for name in ("train", "dev", "test"):
        assert torch.equal(getattr(a, name).x, getattr(b, name).x)
        assert torch.equal(getattr(a, name).y, getattr(b, name).y)
        assert not torch.equal(getattr(a, name).x, getattr(c, name).x)


@needs_mnist
def test_mnist_is_read_once_and_reloads_come_from_the_cache():
    """A second draw (another seed) checks and parses no file again: read_idx's cache keeps the checked files' labels
    (the images a draw picks are read from their file, ablate.data.readers.IdxImages)."""
    from ablate.data import readers

    load_splits("mnist")
    before = readers.read_idx.cache_info()
    load_splits("mnist", seed=9)
    after = readers.read_idx.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 1


def test_auto_with_real_data_is_mnist(fake_mnist):
    s = load_splits("auto", data_dir=fake_mnist, download=False)
    assert s.dataset == "mnist" and s.note is None


def test_digits_shapes_range_and_determinism():
    s = load_splits("digits", image_size=16)
    assert (s.dataset, s.note, s.num_classes, s.in_channels) == ("digits", None, 10, 1)
    for split, n in ((s.train, 1000), (s.dev, 200), (s.test, 200)):
        assert split.x.shape == (n, 1, 16, 16) and split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64
        assert split.x.min() >= -1 and split.x.max() <= 1 and split.x.min() < -0.99 and split.x.max() > 0.9
    assert set(s.train.y.tolist()) == set(range(10))
    assert not rows(s.train.x) & rows(s.dev.x)
    again, other = load_splits("digits", image_size=16), load_splits("digits", image_size=16, seed=1)
    assert torch.equal(s.train.x, again.train.x) and torch.equal(s.test.y, again.test.y)
    assert not torch.equal(s.train.x, other.train.x)


def test_digits_test_part_is_fixed_and_never_leaks():
    whole = {}
    for seed in (0, 1, 2):
        s = load_splits("digits", train_size=1237, dev_size=200, test_size=360, seed=seed, image_size=8)
        test, train_dev = rows(s.test.x), rows(s.train.x) | rows(s.dev.x)
        assert len(test) == 360 and len(train_dev) == 1437 and not test & train_dev
        whole.setdefault("test", test)
        assert test == whole["test"]  # same 360 images for every seed
    with pytest.raises(AblateError, match="1437"):
        load_splits("digits", train_size=1238, dev_size=200)


def test_digits_native_size_keeps_pixel_grid():
    x = load_splits("digits", image_size=8).train.x
    k = (x + 1) / 2 * 16
    assert torch.allclose(k, k.round(), atol=1e-4)


@pytest.mark.parametrize("dataset, native, size", [("digits", 8, 20), pytest.param("mnist", 28, 14, marks=needs_mnist)])
def test_resize_is_antialiased_bilinear_of_native_images(dataset, native, size):
    small = load_splits(dataset, image_size=native, seed=5, train_size=50, dev_size=5, test_size=5).train.x
    resized = load_splits(dataset, image_size=size, seed=5, train_size=50, dev_size=5, test_size=5).train.x
    expect = F.interpolate((small + 1) / 2, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(resized, expect * 2 - 1, atol=1e-5)


def test_auto_with_empty_dir_falls_back_to_digits_in_one_line(tmp_path):
    s = load_splits("auto", data_dir=tmp_path, download=False)
    assert s.dataset == "digits" and s.train.x.shape == (1000, 1, 32, 32)
    assert s.note.startswith(f"MNIST not available under {tmp_path.resolve()} (") and "digits" in s.note
    assert "\n" not in s.note


def test_the_digits_fallback_says_where_mnist_goes_and_following_it_gives_mnist(tmp_path, fake_mnist):
    """The one warning line names the files, the folder they go in and the two ways to point ablate at a data root;
    doing what it says makes `auto` read MNIST."""
    sizes = dict(train_size=50, dev_size=5, test_size=5, download=False)
    note = load_splits("auto", data_dir=tmp_path, **sizes).note
    found = re.search(r"For MNIST put (.+) in (\S+), or point --data-dir or \$ABLATE_DATA_DIR at a folder holding "
                      r"(\S+)$", note)
    assert found and "\n" not in note, note
    files, folder, layout = found.group(1).split(", "), Path(found.group(2)), found.group(3)
    assert folder == tmp_path.resolve() / layout and layout == "MNIST/raw/"
    folder.mkdir(parents=True)
    for name in files:
        shutil.copy(fake_mnist / layout / name, folder / name)
    again = load_splits("auto", data_dir=tmp_path, **sizes)
    assert again.dataset == "mnist" and again.note is None


def test_auto_with_empty_dir_offline_download_attempt_is_bounded(tmp_path):
    if datasets.network_reachable(datasets._hosts(datasets.SOURCES["mnist"].urls())):
        pytest.skip("network reachable: this test checks the offline path, and would download MNIST")
    s = load_splits("auto", data_dir=tmp_path)
    assert s.dataset == "digits" and "no network" in s.note
    with pytest.raises(AblateError, match="could not be downloaded"):
        load_splits("mnist", data_dir=tmp_path)


def test_mnist_with_empty_dir_raises(tmp_path):
    with pytest.raises(AblateError, match="MNIST was not found under .*--dataset digits"):
        load_splits("mnist", data_dir=tmp_path / "nowhere", download=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param(dict(train_size=59_900, dev_size=200), "exceeds the 60000", marks=needs_mnist),
        pytest.param(dict(test_size=10_001), "exceeds the 10000", marks=needs_mnist),
        (dict(train_size=0), "train_size must be an integer >= 1"),
        (dict(dev_size=-5), "dev_size"),
        (dict(test_size=2.5), "test_size"),
        (dict(image_size=7), "image_size must be an integer >= 8"),
        (dict(seed="0"), "seed"),
    ],
)
def test_mnist_bad_sizes(kwargs, match):
    with pytest.raises(AblateError, match=match):
        load_splits("mnist", **kwargs)


def test_digits_too_large():
    with pytest.raises(AblateError, match="60000 .* 1437"):
        load_splits("digits", train_size=60_000)
    with pytest.raises(AblateError, match="test_size = 361 exceeds the 360"):
        load_splits("digits", test_size=361)


@pytest.mark.parametrize("name", ["fashion", "", None, "MNIST", "folder:", "folder:  ", "cifar-10"])
def test_unknown_dataset(name):
    with pytest.raises(AblateError, match="auto, mnist, digits, fashion-mnist, kmnist, cifar10, cifar100, folder:PATH"):
        load_splits(name)
    assert DATASETS == ("auto", "mnist", "digits", "fashion-mnist", "kmnist", "cifar10", "cifar100", "folder:PATH")


def _copy_mnist(tmp_path: Path, source: Path) -> Path:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (source / "MNIST" / "raw").iterdir():
        if f.name in datasets.SOURCES["mnist"].files:
            shutil.copyfile(f, raw / f.name)
    return raw


@pytest.mark.parametrize(
    "name, damage",
    [
        ("train-images-idx3-ubyte", lambda b: b[: len(b) // 2]),
        ("t10k-labels-idx1-ubyte", lambda b: b[:-1]),
        ("t10k-images-idx3-ubyte", lambda b: b[:10]),
        ("train-labels-idx1-ubyte", lambda b: b"\x00\x00\x09\x99" + b[4:]),
    ],
)
def test_corrupt_mnist_raises_ablate_error(tmp_path, name, damage, fake_mnist):
    raw = _copy_mnist(tmp_path, fake_mnist)
    target = raw / name
    target.write_bytes(damage(target.read_bytes()))
    for dataset in ("mnist", "auto"):  # a broken MNIST is reported, not silently swapped for digits
        with pytest.raises(AblateError, match=name):
            load_splits(dataset, data_dir=tmp_path, download=False)


def test_intact_copy_loads(tmp_path, fake_mnist):
    _copy_mnist(tmp_path, fake_mnist)
    s = load_splits("mnist", data_dir=tmp_path, download=False, train_size=10, dev_size=10, test_size=10)
    ref = load_splits("mnist", data_dir=fake_mnist, download=False, train_size=10, dev_size=10, test_size=10)
    assert torch.equal(s.train.x, ref.train.x) and torch.equal(s.test.y, ref.test.y)


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == (tmp_path / "arg").resolve()
    assert resolve_data_dir() == (tmp_path / "env").resolve()
    monkeypatch.delenv(DATA_DIR_ENV)
    assert resolve_data_dir() == Path.home().resolve() / ".cache" / "ablate"
    (tmp_path / "file").write_text("x")
    with pytest.raises(AblateError, match="is a file"):
        resolve_data_dir(tmp_path / "file")
    with pytest.raises(AblateError, match="data_dir"):
        resolve_data_dir(42)
