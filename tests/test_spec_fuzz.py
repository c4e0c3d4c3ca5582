"""Fuzzing the study-spec loader: any YAML document either loads or raises the toolkit's own error."""
import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ablate.errors import AblateError
from ablate.spec.study_spec import BUDGETS, STUDIES_DIR, parse_study

SHIPPED = [yaml.safe_load(p.read_text()) for p in sorted(STUDIES_DIR.glob("*.yaml"))]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["lr", "depth", "residual", "seeds", "loguniform", "identity", "cifar"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10) | st.sampled_from(
                                                           ["base", "factors", "search", "space", "values", "requires", "low", "high",
                                                            "distribution", "trials", "seeds", "grid", "arms", "name", "budgets"]),
                                                           inner, max_size=4)), max_leaves=20)


def load_or_reject(doc, budget="default") -> str:
    try:
        parse_study(doc, budget=budget)
        return "loaded"
    except AblateError:
        return "rejected"


@pytest.mark.slow  # a second or more of 2 cores
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.sampled_from(BUDGETS))
def test_random_documents(doc, budget):
    load_or_reject(doc, budget)


@st.composite
def mutated_specs(draw):
    """A shipped spec with one value somewhere replaced, or one key removed."""
    doc = copy.deepcopy(draw(st.sampled_from(SHIPPED)))
    node, path = doc, []
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node, key=str)) if isinstance(node, dict) else st.integers(0, len(node) - 1))
        path.append(key)
        node = node[key]
    if not path:
        return draw(values)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(values)
    return doc


@pytest.mark.slow  # a second or more of 2 cores
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs(), st.sampled_from(BUDGETS))
def test_mutated_shipped_specs(doc, budget):
    load_or_reject(doc, budget)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_through_yaml(text):
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return  # the file reader turns this into AblateError with the line (tested elsewhere)
    load_or_reject(doc)


@pytest.mark.slow  # a second or more of 2 cores
def test_fuzzing_exercises_both_outcomes():
    """The fuzz above is worth something only if its documents reach both outcomes: a fixed-seed run of the
    mutated shipped specs, counted here (no state shared with the other tests)."""
    seen = {"loaded": 0, "rejected": 0}

    @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(mutated_specs(), st.sampled_from(BUDGETS))
    def fuzz(doc, budget):
        seen[load_or_reject(doc, budget)] += 1

    fuzz()
    assert seen["loaded"] > 0 and seen["rejected"] > 0, seen
    print(f"fuzzed {sum(seen.values())} mutated spec documents: {seen['loaded']} loaded, {seen['rejected']} rejected")
