"""What a trial and a study are, read and checked from YAML: the trial config, study specs, the search space
and the seed rule. Imports no torch and no Ray.

What other packages use is exported here.
"""
from __future__ import annotations

from ablate.spec.user_ref import UserRef, file_sha256, is_file_form, parse_data
from ablate.spec.limits import MAX_IMAGES, MAX_RETRIES, MAX_SAMPLER_SEED, MAX_SPEC_BYTES, check_at_most, check_seed
from ablate.spec.reading import load_yaml, read_yaml
from ablate.spec.seed_rule import ALPHA, TWO_STAGE, SeedRule, holm_family, nonzero, nonzero_needed
from ablate.spec.study_spec import Arm, Study, compared_pairs, list_studies, load_study, parse_study
from ablate.spec.trial_config import TrialConfig, fusable, setting_meta

__all__ = ["MAX_IMAGES", "MAX_RETRIES", "MAX_SAMPLER_SEED", "MAX_SPEC_BYTES", "check_at_most", "check_seed", "load_yaml",
           "read_yaml", "ALPHA", "TWO_STAGE", "SeedRule", "holm_family", "nonzero", "nonzero_needed", "Arm", "Study",
           "compared_pairs", "list_studies", "load_study", "parse_study", "TrialConfig", "fusable", "setting_meta",
           "UserRef", "file_sha256", "is_file_form", "parse_data"]
