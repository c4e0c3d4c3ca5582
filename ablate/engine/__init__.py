"""The study engine: the planner that decides from the run folder what runs next, Optuna's rounds, the run
folder and its registry, and the Ray adapter that executes the planner's work. Imports no torch at load time.
"""
