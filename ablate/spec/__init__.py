"""What a trial and a study are, read and checked from YAML: the trial config, study specs, the search space
and the seed rule. Imports no torch and no Ray.
"""
