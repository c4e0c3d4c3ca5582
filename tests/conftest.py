import os
from pathlib import Path

# The real MNIST lives beside the repo (../shared/data), never inside it.
os.environ.setdefault("ABLATE_DATA_DIR", str((Path(__file__).resolve().parent.parent.parent / "shared" / "data")))
