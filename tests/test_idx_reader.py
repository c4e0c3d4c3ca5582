"""The MNIST family's IDX files are read by ablate itself (ablate.data.readers.read_idx): the same arrays as
torchvision's reader gives, and a trial that reads files already on disk never imports torchvision (it only
downloads)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from ablate.data.readers import SOURCES, read_idx

ROOT = Path(__file__).resolve().parents[1]


def test_read_idx_gives_what_torchvisions_reader_gives(fake_mnist):
    raw = read_idx(SOURCES["mnist"], fake_mnist)
    for train, x, y in ((True, raw.train_x, raw.train_y), (False, raw.test_x, raw.test_y)):
        theirs = torchvision.datasets.MNIST(str(fake_mnist), train=train, download=False)
        assert x.dtype == torch.uint8 and torch.equal(x[torch.arange(len(x))], theirs.data.unsqueeze(1))
        assert y.dtype == torch.int64 and torch.equal(y, theirs.targets.long())
        some = torch.tensor([len(x) - 1, 3, 0, 3])  # any order, repeats: the images of those numbers
        assert torch.equal(x[some], theirs.data[some].unsqueeze(1))
    assert raw.train_x.shape == (1500, 1, 28, 28) and raw.test_x.shape == (297, 1, 28, 28)


def test_the_images_are_read_when_a_subset_is_drawn_and_a_file_changed_since_is_one_line(fake_mnist, tmp_path):
    """read_idx (cached for the trials a worker runs) keeps the labels, not the images: they are read from the
    file when drawn. A file cut short after its check is refused in one line naming it."""
    import shutil

    from ablate.data.readers import IdxImages
    from ablate.errors import AblateError

    root = tmp_path / "data"
    shutil.copytree(fake_mnist / "MNIST", root / "MNIST")
    raw = read_idx(SOURCES["mnist"], root)
    assert isinstance(raw.train_x, IdxImages) and isinstance(raw.test_x, IdxImages)
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    with open(path, "r+b") as f:
        f.truncate(16 + 28 * 28 * 1000)
    assert raw.train_x[torch.tensor([999])].shape == (1, 1, 28, 28)
    with pytest.raises(AblateError, match="train-images-idx3-ubyte could not be read .* changed since it was checked"):
        raw.train_x[torch.tensor([5, 1000])]


@pytest.mark.slow  # a new process imports torch
def test_drawing_mnist_splits_does_not_import_torchvision(fake_mnist):
    code = ("import sys\nfrom ablate.data.splits import load_splits\n"
            f"s = load_splits('mnist', data_dir={str(fake_mnist)!r}, train_size=100, dev_size=20, test_size=20)\n"
            "assert s.dataset == 'mnist' and s.train.x.shape[0] == 100\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "ABLATE_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
