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
        assert x.dtype == torch.uint8 and torch.equal(x, theirs.data.unsqueeze(1))
        assert y.dtype == torch.int64 and torch.equal(y, theirs.targets.long())
    assert raw.train_x.shape == (1500, 1, 28, 28) and raw.test_x.shape == (297, 1, 28, 28)


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
