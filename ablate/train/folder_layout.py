"""The names of the files in a trial folder that more than one part of ablate reads: the trial writes them
(ablate.train.trial_files), the study engine decides from them what runs next. Imports nothing, so the engine
can read a run folder without torch."""

CHECKPOINT = "resume.pt"  # a paused trial's checkpoint: what a continuation needs
PAUSED = "paused.json"  # written after the checkpoint: its presence says the checkpoint is complete
