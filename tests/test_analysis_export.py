"""`export --configs DIR` on a constructed multi-factor run: index.csv is CSV (arm names hold commas), and a folder
holding the user's files is refused before anything is printed or copied (issue 18)."""
from __future__ import annotations

import csv
import io

import pytest
from typer.testing import CliRunner

from ablate.analysis import export_configs
from ablate.cli.app import app
from ablate.errors import AblateError
from helpers.runs import build_run, spec_doc

FACTORS = {"depth": {"values": [10, 18]}, "residual": {"values": [True, False]}}


def two_factor_run(tmp_path):
    doc = spec_doc(factors=FACTORS, seeds=[0, 1])
    trials = [{"arm": f"depth={d},residual={str(r).lower()}", "seed": s, "test_acc": 0.5 + 0.1 * s}
              for d in (10, 18) for r in (True, False) for s in (0, 1)]
    return build_run(tmp_path / "run", trials, doc=doc)


def test_index_csv_is_quoted_csv_with_one_field_per_column(tmp_path):
    run = two_factor_run(tmp_path)
    paths = export_configs(run, tmp_path / "configs")
    rows = list(csv.reader(io.StringIO((tmp_path / "configs" / "index.csv").read_text())))
    assert rows[0] == ["folder", "arm", "seed", "trial_id", "status", "test_acc", "dataset"]
    assert len(rows) == 1 + len(paths) == 9 and all(len(r) == 7 for r in rows)
    assert {r[1] for r in rows[1:]} == {"depth=10,residual=true", "depth=10,residual=false",
                                        "depth=18,residual=true", "depth=18,residual=false"}
    assert all((tmp_path / "configs" / r[0] / "config.yaml").is_file() for r in rows[1:])
    # exporting again over an earlier export is allowed (it is ours to overwrite)
    assert len(export_configs(run, tmp_path / "configs")) == 8


def test_a_folder_with_other_files_is_refused_before_anything_is_written(tmp_path):
    run = two_factor_run(tmp_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "index.csv").write_text("my,own,table\n")
    (busy / "thesis.tex").write_text("x")
    with pytest.raises(AblateError, match="is not empty and holds no earlier export"):
        export_configs(run, busy)
    result = CliRunner().invoke(app, ["export", str(run), "--format", "csv", "--configs", str(busy)])
    assert result.exit_code == 2 and result.stdout == ""
    assert "holds no earlier export" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in busy.iterdir()) == ["index.csv", "thesis.tex"]
    assert (busy / "index.csv").read_text() == "my,own,table\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert CliRunner().invoke(app, ["export", str(run), "--configs", str(empty)]).exit_code == 0
