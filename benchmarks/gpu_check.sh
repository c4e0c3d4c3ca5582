#!/usr/bin/env bash
# The GPU check, one prepared script, from the repository root on a machine with a CUDA GPU:
# throughput table (benchmarks/gpu_check.py), then the GPU tests (pytest -m cuda). Runs where only torch,
# torchvision, numpy, pandas, scipy, scikit-learn, PyYAML, typer and tqdm are installed: the study row
# and the Ray-based test skip themselves without Ray; pytest comes from ./wheels when it is not installed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" ABLATE_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
python benchmarks/gpu_check.py "$@"
status=$?
if ! python -c "import pytest" 2>/dev/null && ls wheels/pytest-*.whl >/dev/null 2>&1; then
  python -m pip install -q --no-index --find-links wheels pytest
fi
if python -c "import pytest" 2>/dev/null; then
  python -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider || status=1
else
  echo "pytest not installed and no wheels/pytest-*.whl: GPU tests not run"
fi
exit $status
