"""The study run folder's format: every file a run folder and its trial folders hold, named in one place
(`layout`), each with its one writer and its one reader (`registry` for trials.jsonl, `trial_records` for what a
trial leaves, `trial_state` for a running or paused trial's files, `run_files` for the run's own files,
`trial_table` for the per-trial table behind trials.csv and the analysis), and the checks every reader applies
(`record_checks`: values, SHA-256 hashes, symbolic links; `integrity`: a registered trial's files against its
registry row).

Other tools read run folders too, so this format is an interface: `layout.FORMAT_VERSION` is recorded in
manifest.json as `format_version`; a folder without one was made before it existed (format 1) and is read the
same way. Knows nothing of Ray; torch is imported only where weights.pt or resume.pt is read, pandas only where
grad_norms.csv or predictions.csv is. It sits just above `spec/`, so that engine, train, probes, analysis and cli
all use it.
"""
