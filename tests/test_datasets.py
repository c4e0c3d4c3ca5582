"""Every dataset format on small files written here in the real on-disk layout: IDX (Fashion-MNIST, KMNIST),
CIFAR's pickled batches, folders of PNG/JPEG images. Nothing is downloaded."""
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from ablate.data import readers as datasets
from ablate.spec.trial_config import TrialConfig
from ablate.data.splits import load_splits
from ablate.errors import AblateError

REPO = Path(__file__).resolve().parent.parent


# --- writers of the real layouts -----------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = (0x800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(head + array.astype(np.uint8).tobytes())


def make_idx(root: Path, folder: str, n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}
    for name, array in arrays.items():
        write_idx(root / folder / "raw" / name, array)
    return arrays


def _batch_bytes(batch: dict) -> bytes:
    # The real files were written by Python 2's cPickle from numpy < 2: they name numpy.core.multiarray.
    return pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def make_cifar(root: Path, hundred: bool = False, per_batch: int = 12, n_test: int = 16, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    classes, key = (100, "fine_labels") if hundred else (10, "labels")
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    written = {}
    for name, n in [(name, per_batch * (5 if hundred else 1)) for name in names] + [("test" if hundred else "test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, classes, n)]
        batch = {"batch_label": f"{name} of 1", key: labels, "data": data, "filenames": [f"{i}.png" for i in range(n)]}
        if hundred:
            batch["coarse_labels"] = [v // 5 for v in labels]
        (folder / name).write_bytes(_batch_bytes(batch))
        written[name] = (data, labels)
    meta = {"fine_label_names": [f"c{i}" for i in range(100)]} if hundred else {"label_names": [f"c{i}" for i in range(10)]}
    (folder / ("meta" if hundred else "batches.meta")).write_bytes(_batch_bytes(meta))
    return written


def make_folder(path: Path, classes=("cat", "dog", "emu"), per_class: int = 6, mode: str = "RGB",
                sizes=((20, 20), (24, 16))) -> None:
    rng = np.random.default_rng(0)
    for part, n in (("train", per_class), ("test", 2)):
        for c in classes:
            (path / part / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = sizes[i % len(sizes)]
                shape = (h, w, 3) if mode == "RGB" else (h, w)
                img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
                img.save(path / part / c / f"{i}.{'png' if i % 2 else 'jpg'}")
    (path / "train" / "notes.txt").write_text("not an image")
    (path / "train" / classes[0] / "README").write_text("ignored")


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def rows(x: torch.Tensor) -> list[bytes]:
    return [img.numpy().tobytes() for img in x]


# --- IDX: Fashion-MNIST and KMNIST ---------------------------------------------------------------
@pytest.mark.parametrize("name, folder", [("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_idx_datasets_read_their_own_folder(tmp_path, name, folder):
    arrays = make_idx(tmp_path, folder)
    s = load_splits(name, tmp_path, train_size=25, dev_size=10, test_size=20, image_size=28, download=False)
    assert (s.dataset, s.num_classes, s.in_channels, s.note, s.mean, s.std) == (name, 10, 1, None, (0.5,), (0.5,))
    assert s.train.x.shape == (25, 1, 28, 28) and s.test.x.shape == (20, 1, 28, 28)
    # pixel p reads as 2 p / 255 - 1, and every image keeps its own label
    written = {img.astype(np.uint8).tobytes(): int(y) for img, y in
               zip(arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"])}
    for x, y in zip(torch.cat([s.train.x, s.dev.x]), torch.cat([s.train.y, s.dev.y])):
        pixels = ((x[0] + 1) / 2 * 255).round().to(torch.uint8).numpy().tobytes()
        assert written[pixels] == int(y)
    test = sorted(rows(((s.test.x[:, 0] + 1) / 2 * 255).round().to(torch.uint8)))
    assert test == sorted(img.astype(np.uint8).tobytes() for img in arrays["t10k-images-idx3-ubyte"])
    with pytest.raises(AblateError, match="exceeds the 40 training images"):
        load_splits(name, tmp_path, train_size=35, dev_size=10, download=False)


@pytest.mark.parametrize("file, damage", [("train-images-idx3-ubyte", lambda b: b[:-7]),
                                          ("t10k-labels-idx1-ubyte", lambda b: b"\x00\x00\x09\x99" + b[4:])])
def test_corrupt_idx_files_are_refused_naming_the_file(tmp_path, file, damage):
    make_idx(tmp_path, "FashionMNIST")
    target = tmp_path / "FashionMNIST" / "raw" / file
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(AblateError) as err:
        load_splits("fashion-mnist", tmp_path, train_size=10, dev_size=5, test_size=5, download=False)
    text = one_line(err)
    assert str(target) in text and "Fashion-MNIST" in text and "FashionMNIST/raw" in text and "digits" not in text


def test_idx_labels_out_of_range_are_refused(tmp_path):
    arrays = make_idx(tmp_path, "KMNIST")
    write_idx(tmp_path / "KMNIST" / "raw" / "train-labels-idx1-ubyte", arrays["train-labels-idx1-ubyte"] + 5)
    with pytest.raises(AblateError, match="outside 0..9"):
        load_splits("kmnist", tmp_path, train_size=10, dev_size=5, test_size=5, download=False)


@pytest.mark.parametrize("name, where, files", [
    ("fashion-mnist", "FashionMNIST/raw", "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte"),
    ("kmnist", "KMNIST/raw", "t10k-labels-idx1-ubyte"),
    ("cifar10", "cifar-10-batches-py", "data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch"),
    ("cifar100", "cifar-100-python", "train, test"),
])
def test_missing_files_offline_name_the_files_and_where_they_go(tmp_path, name, where, files):
    with pytest.raises(datasets.Unavailable) as err:
        load_splits(name, tmp_path, download=False)
    text = one_line(err)
    assert files in text and f"in {tmp_path.resolve() / where}" in text and "--data-dir" in text
    if name.startswith("cifar"):
        assert f"{name.replace('cifar', 'cifar-')}-python.tar.gz" in text  # the archive may be dropped in instead


# --- CIFAR's pickled batches ---------------------------------------------------------------------
def test_cifar10_batches_read_as_rgb_planes_and_normalised_by_the_training_subset(tmp_path):
    written = make_cifar(tmp_path)
    s = load_splits("cifar10", tmp_path, train_size=40, dev_size=20, test_size=16, image_size=32, download=False)
    assert (s.dataset, s.num_classes, s.in_channels) == ("cifar10", 10, 3)
    assert s.train.x.shape == (40, 3, 32, 32) and s.train.x.dtype == torch.float32
    # the training subset has mean 0 and standard deviation 1 in every channel; dev and test use its statistics
    assert torch.allclose(s.train.x.double().mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(s.train.x.double().std(dim=(0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64),
                          atol=1e-5)
    mean, std = torch.tensor(s.mean).view(1, 3, 1, 1), torch.tensor(s.std).view(1, 3, 1, 1)
    data, labels = written["test_batch"]
    by_image = {row.tobytes(): y for row, y in zip(data, labels)}
    pixels = (s.test.x * std + mean) * 255
    assert torch.allclose(pixels, pixels.round(), atol=1e-3)
    for img, y in zip(pixels.round().to(torch.uint8), s.test.y):
        assert by_image[img.reshape(-1).numpy().tobytes()] == int(y)  # rows are R, G, B planes of 32 x 32
    train_rows = {row.tobytes() for name in written if name != "test_batch" for row in written[name][0]}
    back = ((s.train.x * std + mean) * 255).round().to(torch.uint8)
    assert {img.reshape(-1).numpy().tobytes() for img in back} <= train_rows


def test_cifar100_reads_fine_labels(tmp_path):
    written = make_cifar(tmp_path, hundred=True, per_batch=20)
    s = load_splits("cifar100", tmp_path, train_size=80, dev_size=20, test_size=16, image_size=16, download=False)
    assert (s.dataset, s.num_classes, s.in_channels, s.train.x.shape) == ("cifar100", 100, 3, (80, 3, 16, 16))
    assert sorted(s.train.y.tolist() + s.dev.y.tolist()) == sorted(written["train"][1])
    assert max(written["train"][1]) > 9


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:3000])


def _garble(path: Path) -> None:
    path.write_bytes(b"\x80\x02}q\x00garbage" * 10)


def _no_data(path: Path) -> None:
    path.write_bytes(_batch_bytes({"labels": [1, 2], "data": np.zeros((2, 100), np.uint8)}))


def _bad_labels(path: Path) -> None:
    path.write_bytes(_batch_bytes({"labels": [3, 10], "data": np.zeros((2, 3072), np.uint8)}))


def _short_labels(path: Path) -> None:
    path.write_bytes(_batch_bytes({"labels": [3], "data": np.zeros((2, 3072), np.uint8)}))


@pytest.mark.parametrize("damage, fragment", [(_truncate, "truncated or corrupt"), (_garble, "truncated or corrupt"),
                                              (_no_data, "(N, 3072) uint8"), (_bad_labels, "outside 0..9"),
                                              (_short_labels, "one 'labels' entry per image")])
def test_partial_or_corrupt_cifar_files_are_refused_in_one_line(tmp_path, damage, fragment):
    make_cifar(tmp_path)
    target = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    damage(target)
    with pytest.raises(AblateError) as err:
        load_splits("cifar10", tmp_path, train_size=10, dev_size=5, test_size=5, download=False)
    text = one_line(err)
    assert str(target) in text and fragment in text


def test_a_batch_file_that_would_run_code_is_refused_without_running_it(tmp_path):
    make_cifar(tmp_path)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (subprocess.call, (["touch", str(marker)],))  # pickled as commands.call

    target = tmp_path / "cifar-10-batches-py" / "test_batch"
    target.write_bytes(pickle.dumps({"labels": [1], "data": Payload()}, protocol=2))
    with pytest.raises(AblateError, match="call, which a CIFAR batch never holds"):
        load_splits("cifar10", tmp_path, train_size=10, dev_size=5, test_size=5, download=False)
    assert not marker.exists()


# --- what a file declares is checked against what the dataset is, before the payload is read -------------------
def test_an_mnist_image_file_whose_header_says_14x56_is_refused_though_its_byte_count_is_right(tmp_path):
    arrays = make_idx(tmp_path, "MNIST")
    target = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    write_idx(target, arrays["train-images-idx3-ubyte"].reshape(40, 14, 56))  # the same bytes, another shape
    with pytest.raises(AblateError) as err:
        load_splits("mnist", tmp_path, train_size=10, dev_size=5, test_size=5, download=False)
    text = one_line(err)
    assert str(target) in text and "holds 14×56 images, but MNIST images are 28×28" in text
    assert "delete it (or its MNIST/raw folder) and re-download, or use --dataset digits" in text


def test_an_idx_image_file_must_hold_as_many_images_as_its_label_file_has_labels(tmp_path):
    arrays = make_idx(tmp_path, "KMNIST")
    write_idx(tmp_path / "KMNIST" / "raw" / "t10k-labels-idx1-ubyte", arrays["t10k-labels-idx1-ubyte"][:-1])
    with pytest.raises(AblateError) as err:
        load_splits("kmnist", tmp_path, train_size=10, dev_size=5, test_size=5, download=False)
    assert "Kuzushiji-MNIST t10k files in" in one_line(err) and "(20 images, 19 labels)" in one_line(err)


def test_an_idx_header_declaring_more_images_than_the_dataset_has_is_refused_unread(tmp_path):
    make_idx(tmp_path, "FashionMNIST")
    target = tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    # 10,001 images of 28x28 declared, 16 bytes of header and a few of payload: refused on the header alone
    target.write_bytes((0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (10_001, 28, 28)) + b"x")
    with pytest.raises(AblateError) as err:
        load_splits("fashion-mnist", tmp_path, train_size=10, dev_size=5, test_size=5, download=False)
    assert str(target) in one_line(err) and "declares 10,001 items, more than the 10,000 the real file holds" in one_line(err)


class _Declares:
    """Pickles as numpy's _reconstruct(ndarray, shape, 'B'): an array of `shape` is made when loaded, whatever the
    file holds (no BUILD follows to fill it, so numpy's own length check never runs)."""

    def __init__(self, shape):
        self.shape = shape

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, self.shape, b"B"))


def _peak_bytes(action) -> int:
    import tracemalloc  # numpy reports its array memory to tracemalloc

    tracemalloc.start()
    try:
        action()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_200_kb_cifar_pickle_declaring_200000_images_is_refused_before_anything_big_is_allocated(tmp_path):
    make_cifar(tmp_path)
    target = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    # 200,000 x 3,072 bytes = 614 MB declared; the labels pad the file to the 200 KB
    target.write_bytes(_batch_bytes({"data": _Declares((200_000, 3072)), "labels": list(range(10)) * 10_000}))
    assert 150_000 < target.stat().st_size < 250_000

    def load():
        with pytest.raises(AblateError) as err:
            load_splits("cifar10", tmp_path, train_size=10, dev_size=5, test_size=5, download=False)
        text = one_line(err)
        assert str(target) in text and "declares an array of shape (200000, 3072) (614,400,000 bytes)" in text
        assert f"in {target.stat().st_size:,} bytes of file" in text and "delete it and re-download CIFAR-10" in text

    assert _peak_bytes(load) < 20 * 2**20  # not the 614 MB (nor the 1.9 GB peak the issue measured)


def test_a_cifar_pickle_that_repeats_one_string_into_gigabytes_is_refused(tmp_path):
    import codecs

    class Encoded:  # pickles as _codecs.encode(text, 'latin1'), the text itself stored once and referred to after
        def __init__(self, text):
            self.text = text

        def __reduce__(self):
            return (codecs.encode, (self.text, "latin1"))

    make_cifar(tmp_path, hundred=True)
    target = tmp_path / "cifar-100-python" / "test"
    text = "x" * 100_000
    target.write_bytes(_batch_bytes({"data": [Encoded(text) for _ in range(1_000)], "fine_labels": [0]}))
    assert target.stat().st_size < 150_000  # 100 MB of bytes asked for by a file of 100 KB

    def load():
        with pytest.raises(AblateError) as err:
            load_splits("cifar100", tmp_path, train_size=10, dev_size=5, test_size=5, download=False)
        assert str(target) in one_line(err) and "bytes of text in" in one_line(err) and "CIFAR-100" in one_line(err)

    assert _peak_bytes(load) < 20 * 2**20


def test_a_cifar_batch_holding_more_images_than_the_real_file_is_refused(tmp_path):
    make_cifar(tmp_path)
    target = tmp_path / "cifar-10-batches-py" / "test_batch"
    data = np.zeros((10_001, 3072), np.uint8)  # consistent, but one image more than a CIFAR-10 batch file holds
    target.write_bytes(pickle.dumps({"data": data, "labels": [0] * 10_001}, protocol=4))
    with pytest.raises(AblateError) as err:
        load_splits("cifar10", tmp_path, train_size=10, dev_size=5, test_size=5, download=False)
    assert str(target) in one_line(err) and "declares 10,001 images, more than the 10,000 the real file holds" in one_line(err)


def test_train_on_a_crafted_cifar_file_is_one_line_exit_2_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from ablate.cli.app import app

    make_cifar(tmp_path / "data")
    target = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_2"
    target.write_bytes(_batch_bytes({"data": _Declares((200_000, 3072)), "labels": [0]}))
    result = CliRunner().invoke(app, ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
                                      "--train-size", "10", "--dev-size", "5", "--test-size", "5", "--batch-size", "8",
                                      "--out", str(tmp_path / "run")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and str(target) in lines[0]
    assert not (tmp_path / "run").exists()


# --- folders of images ---------------------------------------------------------------------------
def test_a_folder_of_colour_images_of_mixed_sizes(tmp_path, monkeypatch):
    make_folder(tmp_path / "pics")
    monkeypatch.chdir(tmp_path)
    s = load_splits("folder:pics", train_size=12, dev_size=6, test_size=6, image_size=16)
    assert s.dataset == f"folder:{(tmp_path / 'pics').resolve()}"  # absolute: runs from any folder
    assert (s.num_classes, s.in_channels, s.train.x.shape, s.test.x.shape) == (3, 3, (12, 3, 16, 16), (6, 3, 16, 16))
    assert sorted(s.train.y.tolist() + s.dev.y.tolist()) == [0] * 6 + [1] * 6 + [2] * 6  # cat, dog, emu: sorted
    assert sorted(s.test.y.tolist()) == [0, 0, 1, 1, 2, 2]
    # each image is resized on its own (antialiased bilinear, as MNIST), then normalised per channel
    mean, std = torch.tensor(s.mean).view(1, 3, 1, 1), torch.tensor(s.std).view(1, 3, 1, 1)
    expected = []
    for c in ("cat", "dog", "emu"):
        for f in sorted((tmp_path / "pics" / "test" / c).iterdir()):
            x = torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
            x = F.interpolate(x[None], size=(16, 16), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
            expected.append(((x - mean) / std)[0])
    got = sorted(rows(s.test.x))
    assert len(got) == 6
    for e in expected:
        assert any(torch.allclose(e, g, atol=1e-5) for g in s.test.x)


def test_a_folder_of_greyscale_images_is_one_channel_in_minus_one_to_one(tmp_path):
    make_folder(tmp_path / "grey", classes=("a", "b"), mode="L", sizes=((16, 16),))
    s = load_splits(f"folder:{tmp_path / 'grey'}", train_size=8, dev_size=4, test_size=4, image_size=16)
    assert (s.num_classes, s.in_channels, s.mean, s.std) == (2, 1, (0.5,), (0.5,))
    k = (s.train.x + 1) / 2 * 255  # native size: the pixel grid survives
    assert torch.allclose(k, k.round(), atol=1e-3) and s.train.x.min() >= -1 and s.train.x.max() <= 1


@pytest.mark.parametrize("breakage, fragment", [
    (lambda p: (p / "test").rename(p / "tests"), "has no test/ folder"),
    (lambda p: (p / "test" / "yak").mkdir(), "test/yak is a class with no training images"),
    (lambda p: [f.unlink() for f in (p / "train" / "dog").iterdir()], "train/dog holds no .png/.jpg/.jpeg images"),
    (lambda p: (p / "train" / "cat" / "1.png").write_bytes((p / "train" / "cat" / "1.png").read_bytes()[:60]),
     "cat/1.png could not be read"),
    (lambda p: (p / "train" / "emu" / "0.jpg").write_bytes(b"not a jpeg"), "emu/0.jpg could not be read"),
])
def test_broken_image_folders_are_refused_in_one_line(tmp_path, breakage, fragment):
    make_folder(tmp_path / "pics")
    breakage(tmp_path / "pics")
    with pytest.raises(AblateError) as err:
        load_splits(f"folder:{tmp_path / 'pics'}", train_size=5, dev_size=2, test_size=2, image_size=16)
    assert fragment in one_line(err)


def test_a_missing_folder_says_what_layout_is_expected(tmp_path):
    with pytest.raises(AblateError, match="image folder .*nowhere not found; pass folder:PATH with PATH holding train"):
        load_splits(f"folder:{tmp_path / 'nowhere'}")


# --- the command line and the study engine -------------------------------------------------------
def _cli(*args: str, cwd: Path, env_dir: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "ABLATE_DATA_DIR": str(env_dir), "ABLATE_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           "RAY_USAGE_STATS_ENABLED": "0", "HOME": str(cwd)}
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


TINY = dict(family="cifar", depth=20, train_size=16, dev_size=8, test_size=6, batch_size=8, epochs=1, eval_every=2,
            threads=1, image_size=16)


@pytest.mark.slow
def test_train_on_cifar_with_a_recipe_records_the_normalisation_and_classes(tmp_path):
    make_cifar(tmp_path / "data")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**TINY, "dataset": "cifar10"}))
    done = _cli("train", "--config", "c.yaml", "--schedule", "step", "--milestones", "0.5", "--warmup-steps", "1",
                "--augment", "crop-flip", "--momentum", "0.9", "--nesterov", "--out", "run", cwd=tmp_path,
                env_dir=tmp_path / "data")
    assert done.returncode == 0, done.stderr
    cfg = TrialConfig.from_yaml_file(tmp_path / "run" / "config.yaml")
    assert (cfg.schedule, cfg.milestones, cfg.warmup_steps, cfg.augment, cfg.nesterov) == ("step", (0.5,), 1,
                                                                                          "crop-flip", True)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_classes"] == 10 and metrics["in_channels"] == 3 and metrics["dataset"] == "cifar10"
    assert len(metrics["channel_mean"]) == 3 and all(0 < s for s in metrics["channel_std"])


@pytest.mark.slow
def test_train_on_a_relative_folder_records_its_absolute_path(tmp_path):
    make_folder(tmp_path / "pics", per_class=8)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**TINY, "dataset": "folder:pics"}))
    done = _cli("train", "--config", "c.yaml", "--out", "run", cwd=tmp_path, env_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert TrialConfig.from_yaml_file(tmp_path / "run" / "config.yaml").dataset == f"folder:{tmp_path / 'pics'}"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["num_classes"] == 3


@pytest.mark.parametrize("args, fragment", [
    (["--dataset", "digits", "--augment", "crop-flip"], "a mirrored digit or character is not the same class"),
    (["--dataset", "digits", "--milestones", "half"], "--milestones must be comma-separated numbers"),
    (["--dataset", "digits", "--schedule", "linear"], "unknown schedule 'linear'"),
    (["--dataset", "digits", "--nesterov"], "nesterov needs momentum > 0"),
    (["--dataset", "cifar10"], "CIFAR-10 was not found under"),
    (["--dataset", "folder:"], "unknown dataset 'folder:'"),
])
@pytest.mark.slow
def test_bad_recipe_or_dataset_flags_exit_2_in_one_line_and_write_nothing(tmp_path, args, fragment):
    done = _cli("train", *args, "--out", "run", cwd=tmp_path, env_dir=tmp_path / "empty")
    assert done.returncode == 2 and fragment in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


SPEC = {"description": "a CIFAR spec tried elsewhere", "base": {**TINY, "dataset": "cifar10", "augment": "crop"},
        "factors": {"residual": {"values": [True, False]}}, "seeds": [0]}


@pytest.mark.parametrize("name", ["mnist", "digits", "fashion-mnist", "kmnist", "cifar10", "cifar100", "folder"])
def test_study_dataset_overrides_the_spec_for_every_dataset(tmp_path, monkeypatch, name):
    from ablate.execute import launch

    data = tmp_path / "data"
    if name in ("fashion-mnist", "kmnist", "mnist"):
        make_idx(data, {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}[name])
    elif name.startswith("cifar"):
        make_cifar(data, hundred=name == "cifar100", per_batch=20)
    elif name == "folder":
        make_folder(tmp_path / "pics", per_class=8)
        monkeypatch.chdir(tmp_path)
        name = "folder:pics"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    plan = launch.prepare(str(spec), None, budget="default", dataset=name, out=None, data_dir=data, cpus=1, gpus=0,
                          gpus_per_trial=None, address=None, storage=None, retries=0)
    expected = f"folder:{tmp_path / 'pics'}" if name.startswith("folder:") else name
    assert plan.spec.base["dataset"] == expected and plan.manifest["dataset"] == expected
    assert plan.manifest["dataset_requested"] == name
    assert yaml.safe_load(plan.spec.resolved_yaml())["base"]["dataset"] == expected


# --- the analysis names the dataset and its chance level -----------------------------------------
def _run_on(tmp_path, dataset: str, description: str, **metrics):
    from helpers.runs import BASE, build_run, spec_doc

    doc = spec_doc(base={**BASE, "dataset": dataset}, description=description, seeds=[0, 1])
    trials = [{"arm": "residual=true", "seed": s, "test_acc": 0.5, **metrics} for s in (0, 1)]
    trials += [{"arm": "residual=false", "seed": 0, "test_acc": 0.4, **metrics},
               {"arm": "residual=false", "seed": 1, "status": "diverged", "test_acc": None, **metrics}]
    return build_run(tmp_path / "run", trials, doc=doc)


@pytest.mark.parametrize("dataset, metrics, name, classes", [
    ("cifar100", {"num_classes": 100, "in_channels": 3}, "CIFAR-100", 100),
    ("cifar100", {}, "CIFAR-100", 100),  # recorded before trials wrote num_classes: known from the name
    ("fashion-mnist", {"num_classes": 10}, "Fashion-MNIST", 10),
    ("folder:/data/pets", {"num_classes": 4, "in_channels": 3}, "images in /data/pets", 4),
    ("mnist", {}, "MNIST", 10),
])
def test_the_analysis_scores_failures_at_the_datasets_own_chance(tmp_path, dataset, metrics, name, classes):
    from ablate.analysis import analyze
    from ablate.analysis.context import chance, dataset_name
    from ablate.analysis.load import load_run

    run = load_run(_run_on(tmp_path, dataset, "a study", **metrics))
    assert dataset_name(run) == name and chance(run) == 1 / classes
    result = analyze(run.run_dir, figures=False)
    row = result.summary.set_index("arm").loc["residual=false"]
    assert row["test_acc_all_mean"] == pytest.approx((0.4 + 1 / classes) / 2)
    assert f"each failure scored at chance ({100 / classes:g} %)" in result.report.read_text()


def test_a_description_naming_fashion_mnist_does_not_name_mnist(tmp_path):
    from ablate.analysis.context import dataset_lines
    from ablate.analysis.load import load_run

    run = load_run(_run_on(tmp_path, "fashion-mnist", "ResNets on Fashion-MNIST", num_classes=10))
    assert dataset_lines(run) == []
    run = load_run(_run_on(tmp_path / "other", "mnist", "He et al. 2016 on CIFAR-10"))
    assert dataset_lines(run) == ["Note: the spec's description names CIFAR-10, but this run used MNIST."]


def test_fused_members_record_the_colour_data_they_trained_on(tmp_path):
    from ablate.train.fused import run_fused
    from ablate.train.loop import run_trial

    make_cifar(tmp_path, per_batch=12)
    cfg = TrialConfig(dataset="cifar10", family="cifar", depth=20, image_size=8, train_size=32, dev_size=16,
                      test_size=16, batch_size=16, epochs=1, eval_every=2, threads=1, channels_last=False)
    single = run_trial(cfg, data_dir=tmp_path)
    fused = run_fused([cfg, cfg.replace(seed=1)], data_dir=tmp_path)
    for result in (single, *fused):
        assert (result.dataset, result.num_classes, result.in_channels) == ("cifar10", 10, 3)
        assert result.channel_mean == single.channel_mean and len(result.channel_std) == 3


@pytest.mark.slow  # a subprocess
def test_digits_are_scikit_learns_images_and_labels_read_without_importing_scikit_learn():
    """The digits reader reads the CSV file scikit-learn ships (its load_digits reads the same file), so a trial
    worker does not spend 1-2 CPU-seconds importing scikit-learn: same pixels, same labels, same order."""
    code = ("import sys\nfrom ablate.data.readers import _digits_arrays\nimages, labels = _digits_arrays()\n"
            "print('sklearn' in sys.modules, images.shape, labels.shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.stdout.split() == ["False", "(1797,", "8,", "8)", "(1797,)"], out.stderr[-2000:]
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = datasets._digits_arrays()
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)
