"""Fuzzing the study-spec loader: any YAML document either loads or raises the toolkit's own error."""
import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ablate.errors import AblateError
from ablate.spec.study_spec import BUDGETS, STUDIES_DIR, parse_study

SHIPPED = [yaml.safe_load(p.read_text()) for p in sorted(STUDIES_DIR.glob("*.yaml"))]
RUNS = {"documents": 0, "loaded": 0, "rejected": 0}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["lr", "depth", "residual", "seeds", "loguniform", "identity", "cifar"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10) | st.sampled_from(
                                                           ["base", "factors", "search", "space", "values", "requires", "low", "high",
                                                            "distribution", "trials", "seeds", "grid", "arms", "name", "budgets"]),
                                                           inner, max_size=4)), max_leaves=20)


def load_or_reject(doc, budget="default"):
    RUNS["documents"] += 1
    try:
        parse_study(doc, budget=budget)
        RUNS["loaded"] += 1
    except AblateError:
        RUNS["rejected"] += 1


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


def test_fuzzing_exercised_both_outcomes():
    # runs after the fuzz tests in file order: both kinds of outcome must have been seen
    assert RUNS["documents"] >= 1000 and RUNS["loaded"] > 0 and RUNS["rejected"] > 0, RUNS
    print(f"fuzzed {RUNS['documents']} spec documents: {RUNS['loaded']} loaded, {RUNS['rejected']} rejected")
