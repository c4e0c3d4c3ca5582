"""The study run folder's format: every file a run folder and its trial folders hold, named in one place
(`layout`), each with its one writer and its one reader (`registry` for trials.jsonl, `trial_records` for what a
trial leaves, `trial_state` for a running or paused trial's files, `run_files` for the run's own files,
`trial_table` for the per-trial table behind trials.csv and the analysis, `timeline` for where a trial's seconds
went), and the checks every reader applies
(`record_checks`: values, SHA-256 hashes, symbolic links; `integrity`: a registered trial's files against its
registry row).

Other tools read run folders too, so this format is an interface: `layout.FORMAT_VERSION` is recorded in
manifest.json as `format_version`; a folder without one was made before it existed (format 1) and is read the
same way. Knows nothing of Ray; torch is imported only where weights.pt or resume.pt is read, pandas only where
grad_norms.csv or predictions.csv is. It sits just above `spec/`, so that engine, train, probes, analysis and cli
all use it.

The readers, writers and names other packages use are exported here.
"""
from __future__ import annotations

from ablate.run_folder.layout import (ANALYSIS, CONFIG, CURVES, ERROR_TEXT, GRAD_NORMS, MANIFEST, METRICS,
    DATA_SOURCE, MODEL_SOURCE, PREDICTIONS, REGISTRY, SPEC, TENSORBOARD, TRIALS, TRIALS_CSV, WEIGHTS, trial_dir, trials_dir)
from ablate.run_folder.record_checks import HASH_KEY, symlink_message
from ablate.run_folder.registry import append_registry, read_registry, read_registry_lines, registry_key, registry_row
from ablate.run_folder.run_files import (create_run_dir, lock_path, open_run_dir, optuna_db, read_manifest,
    read_ray_tmp, read_resume_manifests, read_spec, read_spec_bytes, remove_ray_tmp, spec_path, write_ray_tmp,
    write_resume_manifest)
from ablate.run_folder.trial_records import (Curves, has_metrics, has_weights, load_weights, read_config,
    read_config_file, read_curves, read_grad_norms, read_metrics, read_predictions, write_config, write_metrics)
from ablate.run_folder.trial_state import (add_attempt, cancel_path, checkpointed, clear_failures, error_text_path,
    read_attempts, read_checkpoint, read_heartbeat, read_paused, remove_heartbeat, remove_paused, request_cancel,
    withdraw_cancel, write_error_text, write_heartbeat)
from ablate.run_folder.timeline import (REGISTERED_AT, TIMELINE, phase_seconds, segment as timeline_segment,
    segments as timeline_segments)
from ablate.run_folder.trial_table import table_records, trials_csv, write_trials_csv
from ablate.run_folder.integrity import (RecordCheck, check_run_records, check_trial_records, metrics_changed,
    read_registered, recorded_configs)

__all__ = ["ANALYSIS", "CONFIG", "CURVES", "ERROR_TEXT", "GRAD_NORMS", "MANIFEST", "METRICS", "PREDICTIONS",
           "DATA_SOURCE", "MODEL_SOURCE", "REGISTRY", "SPEC", "TENSORBOARD", "TRIALS", "TRIALS_CSV", "WEIGHTS",
           "trial_dir", "trials_dir",
           "HASH_KEY", "symlink_message", "append_registry", "read_registry", "read_registry_lines", "registry_key",
           "registry_row", "create_run_dir", "lock_path", "open_run_dir", "optuna_db", "read_manifest",
           "read_ray_tmp", "read_resume_manifests", "read_spec", "read_spec_bytes", "remove_ray_tmp", "spec_path",
           "write_ray_tmp", "write_resume_manifest", "Curves", "has_metrics", "has_weights", "load_weights",
           "read_config", "read_config_file", "read_curves", "read_grad_norms", "read_metrics", "read_predictions",
           "write_config", "write_metrics", "add_attempt", "checkpointed", "clear_failures", "error_text_path",
           "read_attempts", "read_checkpoint", "read_heartbeat", "read_paused", "remove_heartbeat", "remove_paused",
           "write_error_text", "write_heartbeat", "cancel_path", "request_cancel", "withdraw_cancel", "REGISTERED_AT",
           "TIMELINE", "phase_seconds",
           "timeline_segment", "timeline_segments", "table_records", "trials_csv", "write_trials_csv", "RecordCheck",
           "check_run_records", "check_trial_records", "metrics_changed", "read_registered", "recorded_configs"]
