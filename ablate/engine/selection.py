"""Which configuration of each arm the confirm stage reruns, chosen from the registered tuning trials."""
from __future__ import annotations

from typing import Any

from ablate.spec.study_spec import Study


def best_params(study: Study, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm, the tuned parameters of its best tuning trial: the highest dev accuracy among trials that ran
    to the end (those stopped by halving only when none did; diverged ones never), ties to the earliest
    proposal, so the choice does not depend on the order in which trials finished."""
    best: dict[str, tuple] = {}
    for row in rows:
        if row["stage"] != "tune" or row.get("status") not in ("ok", "stopped") or row.get("best_dev_acc") is None:
            continue
        rank = (row["status"] == "ok", row["best_dev_acc"], -(row.get("round") or 0), -(row.get("index") or 0))
        if row["arm"] not in best or rank > best[row["arm"]][0]:
            best[row["arm"]] = (rank, row)
    return {arm: dict(row["params"]) for arm, (_, row) in best.items()}
