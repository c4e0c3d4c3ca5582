"""The study engine: the planner that decides from the run folder what runs next, Optuna's rounds, the run
folder and its registry, and the Ray adapter that executes the planner's work. Imports no torch at load time.

What other packages use is exported here, loaded when first used (the runner imports Optuna and Ray's
adapter; the planner needs neither).
"""
from __future__ import annotations

from ablate.lazy_names import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "interrupts": ["Terminated", "interrupt_behind", "interrupt_signal", "terminate_like_ctrl_c"],
    "liveness": ["check_stall_seconds"],
    "manifest": ["check_spec", "data_record", "model_record", "package_versions", "run_manifest", "spec_record"],
    "planner": ["FINISHED", "Planner"],
    "progress_bar": ["Progress"],
    "resources": ["Resources"],
    "run_work": ["run_works", "trial_device"],
    "seed_decisions": ["RuleState", "itt_score", "rule_state"],
    "selection": ["FAILED", "PointScore", "SeedResult", "best_params", "params_key", "point_score"],
    "storage": ["check_sqlite_file", "check_storage", "sqlite_path"],
    "study_runner": ["StudyInterrupted", "StudyStopped", "run_study"],
    "tensorboard": ["check_available"],
    "trial_plan": ["TrialPlan", "plan_fixed_stage"],
})
