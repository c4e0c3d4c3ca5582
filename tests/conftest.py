"""Test data. Real MNIST is used only where it really is: $ABLATE_DATA_DIR when set (CI points it at ../shared/data),
else ../shared/data beside the checkout. Where it is absent, ABLATE_DATA_DIR points at an empty folder of this test
session, so that no test ever downloads into ../shared or ~/.cache; tests marked `mnist` skip, naming
ABLATE_DATA_DIR; the `fake_mnist` fixture gives a tiny data root in MNIST's on-disk format for everything else."""
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

DATA_DIR_ENV = "ABLATE_DATA_DIR"
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _holds_mnist(root: Path) -> bool:
    return all((root / "MNIST" / "raw" / name).is_file() for name in RAW_FILES)


_looked_in = Path(os.environ.get(DATA_DIR_ENV) or SHARED_DATA).expanduser().resolve()
REAL_MNIST = _looked_in if _holds_mnist(_looked_in) else None
NO_MNIST_REASON = (f"needs the real MNIST, not found under {_looked_in}/MNIST/raw; set {DATA_DIR_ENV} to a folder "
                   "holding MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte")
_EMPTY_DATA_ROOT = None if REAL_MNIST else Path(tempfile.mkdtemp(prefix="ablate-test-data-"))
os.environ[DATA_DIR_ENV] = str(REAL_MNIST or _EMPTY_DATA_ROOT)
os.environ["ABLATE_OFFLINE"] = "1"  # whatever the network, no test downloads anything
# Real studies that tests read, made in the background, and the slow rule: declared in one place.
pytest_plugins = ["helpers.background_studies"]
# The session runs studies in the background beside the unit tests (helpers.background): an OpenMP thread of
# torch that finds its core busy must sleep, not spin, or a 2-thread training step waits on it for ages (a train
# took 11 s instead of 7.7 s with one core busy). Results are the same either way; read before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_configure(config):
    config.addinivalue_line("markers", f"mnist: needs the real MNIST under ${DATA_DIR_ENV} (skipped where it is absent)")


def pytest_unconfigure(config):
    if _EMPTY_DATA_ROOT is not None:
        shutil.rmtree(_EMPTY_DATA_ROOT, ignore_errors=True)


def pytest_runtest_setup(item):
    if REAL_MNIST is None and item.get_closest_marker("mnist") is not None:
        pytest.skip(NO_MNIST_REASON)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as MNIST ships it: magic 0x0000080N (unsigned bytes, N dimensions), the sizes, the bytes."""
    header = struct.pack(f">{1 + array.ndim}I", 0x800 + array.ndim, *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory) -> Path:
    """A tiny data root in MNIST's on-disk layout, ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, so
    `--dataset mnist --data-dir ROOT` (or ABLATE_DATA_DIR=ROOT) reads it: scikit-learn's 8x8 digits scaled up to
    28x28 pixels of 0..255, 1,500 training and 297 test images, learnable like the real thing. Shared by the
    session: copy it before damaging it."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().unsqueeze(1) / 16
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).squeeze(1)
    images = (x * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    labels = digits.target.astype(np.uint8)
    root = tmp_path_factory.mktemp("fake-mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for part, rows in (("train", slice(0, 1500)), ("t10k", slice(1500, None))):
        _write_idx(raw / f"{part}-images-idx3-ubyte", images[rows])
        _write_idx(raw / f"{part}-labels-idx1-ubyte", labels[rows])
    return root


@pytest.fixture
def fake_mnist_env(fake_mnist, monkeypatch) -> Path:
    """ABLATE_DATA_DIR set to `fake_mnist` for one test: `auto` and `mnist` read the tests' own files, offline, in
    this process and in the Ray workers a study starts (they inherit its environment)."""
    monkeypatch.setenv(DATA_DIR_ENV, str(fake_mnist))
    return fake_mnist
