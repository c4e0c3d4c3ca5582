"""Upper bounds on every size a spec, a config or a flag can ask for, each with its reason, in one place.

They are far above anything a researcher asks for in good faith; they exist so that a typo or a hostile file
(`train_size: 100000000000000000000`, `threads: 100000`, a YAML alias bomb) gets one line saying what is wrong
instead of a hang, a segfault or memory running out. A trial setting names its bound in its field's metadata
(`most`, ablate.spec.trial_config), checked first in TrialConfig.validate, before anything counts batches or steps.
docs/faults.md ("Bounds") lists them.
"""
from __future__ import annotations

import math
from typing import Any

from ablate.errors import AblateError

# train_size, dev_size, test_size and batch_size: ImageNet-1k's 1.28 M training images fit; the largest dataset
# ablate ships a reader for (MNIST) has 60,000. An epoch's batch list stays under 10^6 entries.
MAX_IMAGES = 2_000_000
# Optimiser steps of one trial (batches per epoch x epochs), and eval_every: He et al.'s CIFAR-10 runs take
# 64,064 steps and ImageNet's 90 epochs ~450,000; per-step lists (learning rates, curves) stay under 0.5 GB.
MAX_STEPS = 10_000_000
MAX_THREADS = 1024  # torch threads per trial: torch segfaults or runs out of memory starting 100,000 threads
MAX_IMAGE_SIZE = 1024  # pixels per side: ImageNet models train at 224
MAX_CHANNELS = 64  # input channels (summary): images have 1, 3 or 4
MAX_CLASSES = 100_000  # output classes (summary): ImageNet-21k has 21,841
SEED_LIMIT = 2 ** 63  # seeds lie in [0, 2^63): torch's generators take a signed 64-bit seed
# learning rate: SGD recipes use at most ~10, and a trial made to diverge on purpose 10^6; far above that a
# float32 step overflows at once (train --lr 1e300)
MAX_LR = 1e6
MAX_WEIGHT_DECAY = 1.0  # published recipes use 1e-5 .. 5e-4; at 1 the decay alone outweighs the gradient
# A study: tuning trials per arm (search.trials, search.startup), confirm seeds (a list or the adaptive rule's
# max), arms, grid points and trials in all; a year of a 100-GPU cluster at a minute per trial is ~5 x 10^7.
MAX_SEARCH_TRIALS = 100_000
MAX_SEEDS = 1000
MAX_ARMS = 1000
MAX_GRID_POINTS = 10_000
MAX_STUDY_TRIALS = 1_000_000
MAX_SAMPLER_SEED = 1_000_000  # tuning seeds are base.seed + 1000 x the sampler seed: far below 2^63 either way
MAX_RETRIES = 100  # --retries: a trial that crashed 100 times has a bug, not bad luck
# A spec or config file: the shipped specs are under 4 KB; values counted with every alias expanded (a YAML
# "billion laughs" of a few hundred bytes would otherwise expand to 10^9 values), and how deeply they nest.
MAX_SPEC_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 50


def _show(value: int | float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_most(name: str, value: Any, most: int | float) -> None:
    """One setting's upper bound (a trial setting's `most`, ablate.spec.trial_config), before anything derived from
    it is computed; inf and nan are left to the config's own checks, which name them."""
    if _number(value) and math.isfinite(value) and value > most:
        raise AblateError(f"{name} must be at most {_show(most)}, got {_show(value)}")


def check_config(config: Any) -> None:
    """The seeds and the step count of one trial config (a TrialConfig), after the upper bounds of its settings."""
    for name in ("seed", "data_seed"):
        check_seed(getattr(config, name), name)
    n, b, epochs = config.train_size, config.batch_size, config.epochs
    if all(isinstance(v, int) and v > 0 for v in (n, b, epochs)) and -(-n // b) * epochs > MAX_STEPS:
        raise AblateError(f"a trial of {epochs:,} epochs of {-(-n // b):,} batches would take more than {MAX_STEPS:,} "
                          f"steps; lower epochs or train_size, or raise batch_size")


def check_seed(value: Any, name: str = "seed") -> None:
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value < SEED_LIMIT:
        raise AblateError(f"{name} must be from 0 to 2^63 - 1, got {value}")


def check_at_most(value: int, most: int, what: str) -> None:
    """A whole-number size from a flag or a spec: one line when it is above its bound."""
    if value > most:
        raise AblateError(f"{what} must be at most {most:,}, got {value:,}")
