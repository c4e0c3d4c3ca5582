"""Study specs: validation on load, budgets, expansion into arms, and the pairs of arms a study compares.

A spec names factors (ablation axes) whose valid combinations are the arms, a search space tuned
inside every arm (or a fixed grid), the seeds of the confirm stage and named budgets.
"""
from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ablate.errors import AblateError
from ablate.data import is_user_data
from ablate.spec.user_ref import UserRef, parse_data, parse_model
from ablate.spec.trial_config import OWN_SETTINGS, TrialConfig
from ablate.spec.seed_rule import SeedRule, parse_seeds, recorded_seeds
from ablate.spec.search_space import HALVING_MIN_POINTS, SAMPLERS, Halving, Param, grid_points, parse_halving, parse_space
from ablate.spec.reading import check_keys, check_setting_names, is_int, need, read_yaml
from ablate.spec import limits

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


def _shipped_studies() -> Traversable:
    """The shipped specs: package data `ablate/studies/` in an installed wheel (pyproject.toml maps the repository's
    top-level `studies/` there), else that top-level folder itself when running from a source checkout."""
    packaged = resources.files("ablate").joinpath("studies")
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "studies"


STUDIES_DIR = _shipped_studies()
BUDGETS = ("smoke", "default", "full")
SPEC_KEYS = {"name", "description", "base", "factors", "arms", "search", "grid", "seeds", "resample_data",
             "min_effect", "keep_weights", "budgets", "budget", "model"}
KEEP_WEIGHTS = ("none", "final", "all")
SEARCH_OVERRIDES = ("sampler", "trials", "points", "round", "startup", "tuning_seeds", "repeats", "halving")
BUDGET_KEYS = {"base", "seeds", "grid", *SEARCH_OVERRIDES}
DEFAULT_THREADS = 1


@dataclass(frozen=True)
class Arm:
    name: str
    settings: dict[str, Any]


# TrialConfig.from_dict of settings already seen (it is pure and its configs are frozen), by the settings' repr:
# the planner makes the config of every trial of a study anew at each registration. (Not functools.lru_cache: the
# settings are a dict, which it cannot take as a key.)
_CONFIGS: dict[tuple[str, str], TrialConfig] = {}
_CONFIGS_MOST = 10_000  # entries kept before the cache starts over (~2.5 kB each)


def _config_of(settings: dict[str, Any], source: str) -> TrialConfig:
    key = (source, repr(sorted(settings.items())))
    known = _CONFIGS.get(key)
    if known is None:
        known = TrialConfig.from_dict(settings, source=source)
        if len(_CONFIGS) >= _CONFIGS_MOST:
            _CONFIGS.clear()
        _CONFIGS[key] = known
    return known


@dataclass
class Study:
    name: str
    description: str
    base: dict[str, Any]
    arms: list[Arm]
    factor_names: list[str]
    space: list[Param]
    trials_per_arm: int
    sampler_seed: int
    round_size: int
    startup: int
    halving: Halving | None
    grid: dict[str, list]
    seeds: list[int]
    budget: str
    raw: dict[str, Any] = field(repr=False)
    # True: every trial draws the train/dev/test subsets of its own seed (data_seed = seed: each confirm seed its
    # own draw, each tuning seed its own, and the two sets of seeds never meet), so the spread over seeds includes
    # the choice of images; False: every trial sees the one draw of base.data_seed.
    resample_data: bool = False
    # The smallest difference (pp of test accuracy) that matters, declared before the run: the margin of the
    # equivalence test ("no meaningful difference") and the effect the seeds-for-power figures ask about.
    min_effect: float | None = None
    # A run folder made before rounds existed (asynchronous ASHA); it can be analysed but not resumed.
    legacy: bool = False
    # Which trials save their best-dev weights (weights.pt): none (the default: no analysis reads them unless asked),
    # the final stage (what --lesion and --diagnostics read), or all. Run folders of formats 1-2 kept the final stage's.
    keep_weights: str = "none"
    # Adaptive confirmation: `seeds` are the candidates, run in order until the rule says enough.
    seed_rule: SeedRule | None = None
    # What proposes the search points: TPE (rounds of proposals) or a fixed grid (every point at once).
    sampler: str = "tpe"
    search_points: list[dict[str, Any]] = field(default_factory=list)  # the grid's points, in order
    # Each search point trains under this many tuning seeds and is scored by their mean dev accuracy.
    tuning_seed_count: int = 1
    # True when the spec names search.tuning_seeds: the tuning seeds then also follow the sampler seed (so a
    # repeated search draws other seeds); False keeps the single tuning seed base.seed of older specs.
    tuning_seeds_given: bool = False
    # The whole search, repeated under sampler seeds sampler_seed, sampler_seed + 1, ... (repeat 0 is the answer;
    # the others measure the tuning luck).
    repeats: int = 1
    halving_note: str = ""  # why halving is off although the spec asked for it
    # The user's network (the spec's `model`); None: the shipped ResNet of the model axes.
    model: UserRef | None = None
    # The user's data loader (base.dataset MODULE:FUNCTION or FILE.py:FUNCTION, or --dataset); None: a shipped
    # dataset or a folder. base holds its reference; spec.yaml records the file and its hash (raw base.dataset).
    data: UserRef | None = None

    def user_axes(self) -> list[str]:
        """The settings a user model's factory is called with (every name in the spec that is not one of ablate's
        own settings), in the order the spec names them; none without a user model."""
        if self.model is None:
            return []
        names = [*self.base, *(k for a in self.arms for k in a.settings), *(p.name for p in self.space), *self.grid]
        return [n for n in dict.fromkeys(names) if n not in OWN_SETTINGS]

    def keeps_weights(self, stage: str) -> bool:
        return self.keep_weights == "all" or (self.keep_weights == "final" and stage != "tune")

    @property
    def stages(self) -> list[str]:
        if self.space:
            return ["tune", "confirm"]
        return ["grid"] if self.grid else ["confirm"]

    def varied(self) -> list[str]:
        """Parameters that differ between trials: the columns trials.csv gets."""
        names = list(self.factor_names) + [p.name for p in self.space] + list(self.grid)
        for arm in self.arms:
            names += [k for k in arm.settings if k not in names]
        return list(dict.fromkeys(names))

    def pin(self, **settings: Any) -> None:
        """Fix base settings decided at launch (threads, the dataset `auto` chose, a --dataset) so spec.yaml reproduces
        them. A data loader's reference (a --dataset relative to the working directory) is found and hashed here, and
        spec.yaml records its file and hash."""
        recorded = dict(settings)
        if "dataset" in settings:
            value = settings["dataset"]
            if isinstance(value, dict) or is_user_data(value):
                if self.data is None or self.data.reference != value:
                    self.data = parse_data(value, None, "--dataset")
                settings = {**settings, "dataset": self.data.reference}
                recorded["dataset"] = self.data.record()
            else:
                self.data = None
        self.base = {**self.base, **settings}
        self.raw["base"] = {**(self.raw.get("base") or {}), **recorded}

    def trial_settings(self, arm: Arm | None, params: dict[str, Any] | None = None,
                       seed: int | None = None) -> dict[str, Any]:
        """The one merge of a trial's settings, as its config gets them: the spec's base, then the arm's settings
        (none for None), then the search or grid point `params`, then `seed` (with resample_data the seed also
        draws the trial's data subsets: data_seed = seed). Settings left out take TrialConfig's defaults."""
        merged = {**self.base, **(arm.settings if arm is not None else {}), **(params or {})}
        if seed is not None:
            merged["seed"] = seed
            if self.resample_data:
                merged["data_seed"] = seed
        if self.data is not None and merged.get("dataset") == self.data.reference:
            merged.update(data_file=self.data.file, data_sha256=self.data.sha256)
        if self.model is not None:  # TrialConfig.from_dict makes every other name an axis of the factory
            merged.update(factory=self.model.reference, factory_file=self.model.file,
                          factory_sha256=self.model.sha256)
        return merged

    def arm_config(self, arm: Arm, **params: Any) -> TrialConfig:
        return TrialConfig.from_dict(self.trial_settings(arm, params), source=f"study {self.name}, arm {arm.name}")

    def trial_config(self, arm: Arm, params: dict[str, Any], seed: int) -> TrialConfig:
        """The config of the trial of `arm` at search or grid point `params` under `seed` (trial_settings)."""
        return _config_of(self.trial_settings(arm, params, seed), f"study {self.name}, arm {arm.name}")

    def first_config(self) -> TrialConfig:
        """The first arm's config at the grid's first point: what a launch checks the data and the machine with."""
        return self.arm_config(self.arms[0], **{k: v[0] for k, v in self.grid.items()})

    def tuning_seeds(self, repeat: int = 0) -> list[int]:
        """The seeds every search point of `repeat` trains under: base.seed, base.seed + 1, ... shifted by 1000 per
        sampler seed (so that each repeat of the search, and each sampler seed, draws its own)."""
        seed = int(self.base.get("seed", TrialConfig.seed))
        if not self.tuning_seeds_given:
            return [seed]
        shift = 1000 * (self.sampler_seed + repeat)
        return [seed + shift + i for i in range(self.tuning_seed_count)]

    def sampler_text(self) -> str:
        """What proposes the tuning trials, in words (for the manifest, the dry run and the report)."""
        if not self.space:
            return "none (fixed configurations)"
        if self.sampler == "grid":
            text = f"a fixed grid of {self.trials_per_arm} points"
        else:
            rounds = math.ceil(self.trials_per_arm / self.round_size)
            # A round is proposed after every earlier round was told: TPE takes over in the first round that
            # follows at least `startup` results.
            first_tpe = next((r for r in range(rounds) if r * self.round_size >= self.startup), None)
            if first_tpe is None:
                text = f"all {self.trials_per_arm} proposals random (TPE would need {self.startup} results first)"
            else:
                text = f"Optuna TPE, {self.startup} random startup trials (TPE from round {first_tpe + 1} of {rounds})"
            text += f", rounds of {self.round_size}, sampler seed {self.sampler_seed}"
        seeds = self.tuning_seeds()
        if len(seeds) > 1:
            text += (f"; each point trained under {len(seeds)} tuning seeds ({', '.join(map(str, seeds))}) and scored by "
                     f"their mean dev accuracy (ties: lower mean dev loss, then the earlier point)")
        if self.repeats > 1:
            text += (f"; the whole search repeated under sampler seeds {self.sampler_seed} to "
                     f"{self.sampler_seed + self.repeats - 1} to measure the tuning luck (the first is the answer)")
        if self.halving:
            text += f"; synchronous successive halving in each round (eta {self.halving.eta}, first rung at >= " \
                    f"{self.halving.min_evals} evaluations and >= {self.halving.min_fraction:.0%} of training)"
        elif self.halving_note:
            text += f"; {self.halving_note}"
        return text

    def resolved_yaml(self) -> str:
        """The spec as run: budget applied, so the file alone reproduces the study."""
        return yaml.safe_dump(self.raw, sort_keys=False)

    def grid_points(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))]


def list_studies(directory: Traversable = STUDIES_DIR) -> list[tuple[str, str]]:
    out = []
    specs = [p for p in directory.iterdir() if p.name.endswith(".yaml")] if directory.is_dir() else []
    for path in sorted(specs, key=lambda p: p.name):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            desc = str(data.get("description", "")).strip().splitlines()[0] if isinstance(data, dict) and data.get("description") else ""
        except yaml.YAMLError:
            desc = "(malformed YAML)"
        out.append((path.name[: -len(".yaml")], desc))
    return out


def find_spec(name_or_path: str, directory: Traversable = STUDIES_DIR) -> Path | Traversable:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise AblateError(f"study spec {path} not found")
        return path
    candidate = directory.joinpath(f"{name_or_path}.yaml")
    if candidate.is_file():
        return candidate
    known = [n for n, _ in list_studies(directory)]
    close = difflib.get_close_matches(name_or_path, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise AblateError(f"unknown study {name_or_path!r}; {hint}valid studies: {', '.join(known) or '(none)'} "
                      "(or a path to a .yaml spec)")


def load_study(name_or_path: str | Path, budget: str = "default", sampler_seed: int | None = None) -> Study:
    """A spec by name or path, with a budget applied; `sampler_seed` replaces search.sampler_seed (which seeds
    everything random about the search: TPE's proposals and, with search.tuning_seeds, the tuning seeds)."""
    path = find_spec(str(name_or_path))
    data = read_yaml(path)
    if sampler_seed is not None:
        need(isinstance(data, dict) and isinstance(data.get("search"), dict), str(path),
             "--sampler-seed needs a study with a search (this one has none)")
        data = {**data, "search": {**data["search"], "sampler_seed": sampler_seed}}
    spec_dir = Path(str(path)).parent if isinstance(path, Path) else None
    return parse_study(data, budget=budget, source=str(path), default_name=Path(path.name).stem, spec_dir=spec_dir)


def parse_study(data: Any, budget: str = "default", source: str = "spec", default_name: str = "study",
                keep_weights_default: str = "none", spec_dir: Path | None = None) -> Study:
    """Validate a spec document and apply a budget. Any problem raises AblateError naming it. `spec_dir`: the folder
    a user model's file path (`model: ./nets.py:build`) is relative to (default: the working directory)."""
    need(isinstance(data, dict), source, f"a study spec must be a mapping, got {type(data).__name__}")
    check_keys(data, SPEC_KEYS, source, "spec")
    model = parse_model(data["model"], spec_dir, source) if "model" in data else None
    user_axes = model is not None
    budgets = data.get("budgets") or {}
    need(isinstance(budgets, dict), source, "budgets must be a mapping of budget name to overrides")
    check_keys(budgets, set(BUDGETS), source, "budget")
    need(budget in BUDGETS, source, f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGETS)}")
    raw = copy.deepcopy({k: v for k, v in data.items() if k != "budgets"})
    overrides = budgets.get(budget) or {}
    need(isinstance(overrides, dict), source, f"budget {budget!r} must be a mapping")
    check_keys(overrides, BUDGET_KEYS, source, f"budget {budget!r}")
    if "base" in overrides:
        need(isinstance(overrides["base"], dict), source, f"budget {budget!r}: base must be a mapping")
        need(isinstance(raw.get("base") or {}, dict), source, "base must be a mapping of trial settings")
        raw["base"] = {**(raw.get("base") or {}), **overrides["base"]}
    if any(k in overrides for k in SEARCH_OVERRIDES):
        need(isinstance(raw.get("search"), dict), source, f"budget {budget!r} sets search options but the spec has no search")
        raw["search"] = {**raw["search"], **{k: overrides[k] for k in SEARCH_OVERRIDES if k in overrides}}
    for key in ("seeds", "grid"):
        if key in overrides:
            raw[key] = overrides[key]
    # A resolved spec (spec.yaml of a run) has no budgets left and records the one it was made with.
    raw["budget"] = data["budget"] if not budgets and data.get("budget") in BUDGETS else budget
    name = str(raw.get("name") or default_name)
    raw["name"] = name
    if model is not None:
        raw["model"] = model.record()  # spec.yaml records the file and its hash the run used

    base = raw.get("base") or {}
    need(isinstance(base, dict), source, "base must be a mapping of trial settings")
    check_setting_names(base, source, "base setting(s)", user_axes)  # values are checked per arm below
    # A trial's numbers depend on its thread count, so the spec fixes it (the machine only decides how
    # many trials run at once); spec.yaml of a run records it.
    threads = base.get("threads", DEFAULT_THREADS)
    need(is_int(threads) and threads >= 1, source, f"base.threads must be an integer >= 1 in a study (a trial's "
          f"results depend on its thread count), got {threads!r}")
    base = raw["base"] = {**base, "threads": threads}
    data_ref = None
    if isinstance(base.get("dataset"), dict) or is_user_data(base.get("dataset")):  # a user's data loader
        data_ref = parse_data(base["dataset"], spec_dir, source)
        raw["base"] = {**base, "dataset": data_ref.record()}  # spec.yaml records the file and its hash the run used
        base = {**base, "dataset": data_ref.reference}

    legacy = _legacy_asha(raw, data, source)
    factor_names, arms = _expand_arms(raw, source, user_axes)
    space = parse_space(raw.get("search"), source, user_axes)
    search = raw.get("search") or {}
    sampler = search.get("sampler", "tpe")
    trials = search.get("trials", 0) if space else 0
    round_size = startup = 0
    halving, halving_note, points = None, "", []
    tuning, repeats = search.get("tuning_seeds", 1), search.get("repeats", 1)
    if space:
        need(sampler in SAMPLERS, source, f"search.sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if sampler == "grid":
            need("trials" not in search and "round" not in search and "startup" not in search, source,
                 "a grid search has no trials, round or startup: it runs every point of the grid at once; set "
                 "search.points (values per numeric parameter) instead")
            per = search.get("points", 5)
            need(is_int(per) and 2 <= per <= 100, source, f"search.points (values per numeric parameter of the grid) must "
                 f"be an integer from 2 to 100, got {per!r}")
            points = grid_points(space, per)
            trials = round_size = len(points)
        else:
            need("points" not in search, source, "search.points belongs to the grid sampler (sampler: grid); TPE takes "
                 "search.trials")
            need(is_int(trials) and 1 <= trials <= limits.MAX_SEARCH_TRIALS, source, f"search.trials must be a positive "
                 f"integer of at most {limits.MAX_SEARCH_TRIALS:,}, got {trials!r}")
            round_size = search.get("round", min(4, trials))
            need(is_int(round_size) and 1 <= round_size <= trials, source,
                  f"search.round (proposals per round) must be an integer from 1 to search.trials ({trials}), got {round_size!r}")
            startup = search.get("startup", min(10, max(1, trials // 2)))
            need(is_int(startup) and 0 <= startup <= limits.MAX_SEARCH_TRIALS, source, f"search.startup (random trials "
                 f"before TPE) must be an integer from 0 to {limits.MAX_SEARCH_TRIALS:,}, got {startup!r}")
        halving = parse_halving(search.get("halving", False), source)
        if search.get("halving") is True and trials < HALVING_MIN_POINTS:
            halving = None
            halving_note = (f"no halving: a search of {trials} points (fewer than {HALVING_MIN_POINTS}) ranks every point "
                            "at the end of training")
        need(is_int(base.get("seed", TrialConfig.seed)), source, f"base.seed (the tuning seed) must be an integer, got "
             f"{base.get('seed')!r}")
        need(is_int(tuning) and 1 <= tuning <= 20, source, f"search.tuning_seeds (seeds each search point trains "
             f"under; its score is their mean) must be an integer from 1 to 20, got {tuning!r}")
        need(is_int(repeats) and 1 <= repeats <= 10, source, f"search.repeats (times the whole search runs, under "
             f"successive sampler seeds) must be an integer from 1 to 10, got {repeats!r}")
        need(repeats == 1 or "tuning_seeds" in search, source, "search.repeats needs search.tuning_seeds, so that each "
             "repeat trains its points under its own seeds")
    sampler_seed = search.get("sampler_seed", 0)
    need(is_int(sampler_seed) and 0 <= sampler_seed <= limits.MAX_SAMPLER_SEED, source,
         f"search.sampler_seed must be an integer from 0 to {limits.MAX_SAMPLER_SEED:,}, got {sampler_seed!r}")

    grid = raw.get("grid") or {}
    need(isinstance(grid, dict), source, "grid must be a mapping of setting to a list of values")
    check_setting_names(grid, source, "grid setting(s)", user_axes)
    for key, values in grid.items():
        need(isinstance(values, list) and values, source, f"grid.{key} must be a non-empty list")
    fixed_points = math.prod(len(v) for v in grid.values())
    need(fixed_points <= limits.MAX_GRID_POINTS, source, f"the grid has {fixed_points:,} points, more than "
         f"{limits.MAX_GRID_POINTS:,}; tune with search instead, or split the study")
    need(not (space and grid), source, "use either search (tuned) or grid (fixed values), not both")

    resolved = not data.get("budgets") and data.get("budget") in BUDGETS  # a run folder's spec.yaml
    seeds, seed_rule = parse_seeds(raw.get("seeds"), source, resolved=resolved, arms=len(arms))
    raw["seeds"] = recorded_seeds(raw.get("seeds"), seed_rule)
    searches = repeats if space else 1
    total = len(arms) * (trials * tuning * searches if space else 0) + len(arms) * len(seeds) * fixed_points * searches
    need(total <= limits.MAX_STUDY_TRIALS, source, f"the study would run up to {total:,} trials, more than "
         f"{limits.MAX_STUDY_TRIALS:,}; use fewer arms, trials, seeds or grid points")

    resample_data = raw.get("resample_data", False)
    need(isinstance(resample_data, bool), source, "resample_data must be true or false")
    min_effect = raw.get("min_effect")
    need(min_effect is None or (isinstance(min_effect, (int, float)) and not isinstance(min_effect, bool)
                                and math.isfinite(min_effect) and 0 < min_effect < 100), source,
         f"min_effect must be a difference in percentage points above 0 and below 100 (e.g. 1.0), got {min_effect!r}")
    keep_weights = raw.get("keep_weights", keep_weights_default)
    need(keep_weights in KEEP_WEIGHTS, source, f"keep_weights must be one of {', '.join(KEEP_WEIGHTS)} (which trials save "
         f"weights.pt), got {keep_weights!r}")

    study = Study(
        name=name, description=str(raw.get("description", "")).strip(), base=base, arms=arms,
        factor_names=factor_names, space=space, trials_per_arm=trials, sampler_seed=sampler_seed,
        round_size=round_size, startup=startup, halving=halving, grid=grid, seeds=list(seeds),
        budget=raw["budget"], raw=raw, resample_data=resample_data, min_effect=min_effect, legacy=legacy,
        keep_weights=keep_weights,
        seed_rule=seed_rule, sampler=sampler, search_points=points, tuning_seed_count=tuning,
        tuning_seeds_given="tuning_seeds" in search, repeats=repeats, halving_note=halving_note, model=model,
        data=data_ref,
    )
    if space and study.tuning_seeds_given:
        tuning_seeds = {s for r in range(repeats) for s in study.tuning_seeds(r)}
        overlap = sorted(tuning_seeds & set(study.seeds))
        need(not overlap, source, f"the tuning seeds ({', '.join(map(str, sorted(tuning_seeds)))}) must differ from the "
             f"confirm seeds, so that selection and confirmation are independent; {', '.join(map(str, overlap))} "
             "is in both: change base.seed or the seeds")
    _check_arm_configs(study, source)
    return study


def _legacy_asha(raw: dict, data: dict, source: str) -> bool:
    """`search.asha` belonged to the asynchronous search that rounds replaced. A run folder's resolved
    spec.yaml may still hold it (that run can be analysed); a spec to run may not."""
    search = raw.get("search")
    if not isinstance(search, dict) or "asha" not in search:
        return False
    resolved = not data.get("budgets") and data.get("budget") in BUDGETS
    need(resolved, source, "search.asha was replaced by search.halving (synchronous successive halving inside "
          "each round, reproducible); write halving: true or halving: false")
    raw["search"] = {k: v for k, v in search.items() if k != "asha"}
    return True


def _check_arm_configs(study: Study, source: str) -> None:
    """Every arm must give a valid trial config with every bound and choice of the search space and every
    grid value (so a study cannot fail halfway through), and no two arms may give the same trials."""
    probes = {p.name: ([p.low, p.high] if p.distribution != "choice" else list(p.choices)) for p in study.space}
    probes.update({k: list(v) for k, v in study.grid.items()})
    first = {k: v[0] for k, v in probes.items()}
    seen: dict[TrialConfig, str] = {}
    for arm in study.arms:
        try:
            for name, values in probes.items():
                for value in values:
                    study.arm_config(arm, **{**first, name: value})
            tuning = [s for r in range(study.repeats) for s in study.tuning_seeds(r)] if study.space else []
            for seed in {min(study.seeds), max(study.seeds), *tuning}:  # a seed is valid by its range alone
                study.arm_config(arm, **first, seed=seed)
            config = study.arm_config(arm, **first)
        except AblateError as exc:
            raise AblateError(f"{source}: arm {arm.name}: {exc}") from None
        need(config not in seen, source, f"arms {seen.get(config)} and {arm.name} give identical trials; remove one "
              "of them or make them differ (e.g. with requires)")
        seen[config] = arm.name


def _format_value(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _expand_arms(raw: dict, source: str, user_axes: bool = False) -> tuple[list[str], list[Arm]]:
    factors, explicit = raw.get("factors"), raw.get("arms")
    need(not (factors and explicit), source, "use either factors (combinations) or arms (an explicit list), not both")
    if explicit:
        need(isinstance(explicit, list), source, "arms must be a list of mappings, each with a name")
        need(len(explicit) <= limits.MAX_ARMS, source, f"{len(explicit):,} arms, more than {limits.MAX_ARMS:,}")
        arms, names = [], set()
        for i, entry in enumerate(explicit):
            need(isinstance(entry, dict) and isinstance(entry.get("name"), str), source, f"arms[{i}] must be a mapping with a name")
            settings = {k: v for k, v in entry.items() if k != "name"}
            check_setting_names(settings, source, f"setting(s) in arm {entry['name']!r}:", user_axes)
            need(entry["name"] not in names, source, f"arm name {entry['name']!r} repeats")
            names.add(entry["name"])
            arms.append(Arm(entry["name"], settings))
        varied = [k for k in dict.fromkeys(k for a in arms for k in a.settings)]
        return varied, arms
    if not factors:
        return [], [Arm("all", {})]
    need(isinstance(factors, dict), source, "factors must be a mapping of setting name to {values: [...], requires: {...}}")
    check_setting_names(factors, source, "factor(s)", user_axes)
    parsed: list[tuple[str, list, dict]] = []
    for name, body in factors.items():
        if isinstance(body, list):
            body = {"values": body}
        need(isinstance(body, dict), source, f"factor {name}: expected {{values: [...]}}")
        check_keys(body, {"values", "requires"}, source, f"factor {name}")
        values = body.get("values")
        need(isinstance(values, list) and values, source, f"factor {name}: values must be a non-empty list")
        need(len({json.dumps(v, sort_keys=True, default=str) for v in values}) == len(values), source, f"factor {name}: values repeat")
        requires = body.get("requires") or {}
        need(isinstance(requires, dict), source, f"factor {name}: requires must be a mapping like {{residual: true}}")
        for other, value in requires.items():
            known = {n: vals for n, vals, _ in parsed}
            need(other in known, source, f"factor {name} requires {other!r}, which is not a factor listed before it")
            need(value in known[other], source, f"factor {name} requires {other}={_format_value(value)}, not one of its values {known[other]}")
        parsed.append((name, values, requires))
    partial: list[dict[str, Any]] = [{}]
    for name, values, requires in parsed:
        grown = []
        for combo in partial:
            if all(combo.get(k, object()) == v for k, v in requires.items()):
                grown += [{**combo, name: v} for v in values]
            else:
                grown.append(combo)
            need(len(grown) <= limits.MAX_ARMS, source, f"the factors give more than {limits.MAX_ARMS:,} arms; "
                 "ablate fewer factors or values at once")
        partial = grown
    arms = [Arm(",".join(f"{k}={_format_value(v)}" for k, v in combo.items()), combo) for combo in partial]
    return [n for n, _, _ in parsed], arms


def compared_pairs(study: Study) -> list[tuple[str, str]]:
    """The paired differences a study is about: arms that differ in exactly one factor (every pair when the
    arms are listed explicitly)."""
    arms = study.arms
    pairs = []
    for i, a in enumerate(arms):
        for b in arms[i + 1:]:
            if not study.factor_names or sum(a.settings.get(f) != b.settings.get(f) for f in study.factor_names) == 1:
                pairs.append((a.name, b.name))
    return pairs
