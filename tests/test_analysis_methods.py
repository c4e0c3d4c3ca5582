"""methods.md and references.bib: the numbers come from the run folder (a constructed run with unusual values,
and the real smoke study's `tuned_analysis`, helpers.background_studies), and only the works a run used are cited."""
from __future__ import annotations

import json
import re
from datetime import datetime
from types import SimpleNamespace

import pandas as pd
import pytest

from ablate.analysis.statistics.compare import compare
from ablate.analysis.load import load_run
from ablate.analysis.text.methods import methods
from ablate.analysis.text.references import ENTRIES, fields
from ablate.analysis.runinfo import duration
from ablate.spec.trial_config import TrialConfig
from ablate.models.resnet import build_model
from ablate.spec.study_spec import parse_study
from helpers.runs import BASE, build_run, spec_doc

RES, PLAIN = "residual=true", "residual=false"
START = "2026-03-04T05:06:07+0000"


def params_of(cfg: TrialConfig, channels: int = 1, classes: int = 10) -> int:
    model = build_model(cfg.model, channels, classes)
    return sum(p.numel() for p in model.parameters())


def cited(text: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r"@([A-Za-z0-9_]+)", text)))


def bib_keys(bib: str) -> list[str]:
    return re.findall(r"^@\w+\{([^,]+),", bib, re.M)


def test_every_number_of_the_methods_paragraph_comes_from_the_run_folder(tmp_path):
    base = {**BASE, "train_size": 777, "dev_size": 55, "test_size": 133, "batch_size": 17, "epochs": 3,
            "eval_every": 7, "momentum": 0.85, "weight_decay": 0.00037, "lr": 0.0123, "data_seed": 5}
    doc = spec_doc(base=base, seeds=[11, 12, 13])
    start = datetime.strptime(START, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    trials = [{"arm": arm, "seed": s, "test_acc": 0.5 + 0.01 * i + 0.02 * (arm == RES), "device": "cuda:0",
               "total_seconds": 100.0, "ended_at": start + 3725 - 10 * i}
              for i, s in enumerate([11, 12, 13]) for arm in (RES, PLAIN)]
    manifest = {"started_at": START, "python": "3.99.1", "git_commit": "feedface" * 5,
                "packages": {"ablate": "7.7.7", "torch": "9.8.7", "optuna": "6.5.4"},
                "hardware": {"cpu": "Testium 9000", "logical_cpus": 48, "memory_gib": 123.5, "gpus": ["Fake GPU X"]},
                "resources": {"cpus": 48, "gpus": 1, "threads_per_trial": 3, "trials_at_once": 16}}
    run = load_run(build_run(tmp_path / "run", trials, doc, manifest))
    text = methods(run, compare(run)).text
    study = parse_study(doc, source="test")
    cfg = {a.name: study.arm_config(a) for a in study.arms}
    expected = ["777 training", "55 validation", "133 test images", "data seed 5", "batch 17", "momentum 0.85",
                "weight decay 0.00037", "constant learning rate of 0.0123", f"{cfg[RES].total_steps()} steps (3 epochs)",
                "every 7 steps", "3 per variant (11, 12, 13)", f"residual ({params_of(cfg[RES]):,} parameters)",
                f"plain ({params_of(cfg[PLAIN]):,} parameters)", "Testium 9000", "48 logical CPUs", "123.5 GiB",
                "Fake GPU X", "cuda:0 (6 trials)", "3 threads per trial", "up to 16 trials at once",
                "1 h 2 min of wall time", "10 min 0 s of trial time summed over its 6 trials", "Python 3.99.1",
                "PyTorch 9.8.7", "Optuna 6.5.4", "ablate 7.7.7", "feedface" * 5, "ResNet-18"]
    for piece in expected:
        assert piece in text, piece
    assert "\n" not in text  # one paragraph
    # and nothing else: change the run, and the paragraph follows
    other = load_run(build_run(tmp_path / "other", [{**t, "device": "cpu"} for t in trials],
                               spec_doc(base={**base, "train_size": 640}, seeds=[11, 12, 13]), manifest))
    changed = methods(other, compare(other)).text
    assert "640 training" in changed and "777" not in changed and "cpu (6 trials)" in changed


@pytest.mark.slow
def test_the_smoke_study_methods_paragraph_and_its_references(tuned_analysis, tuned_study):
    text = tuned_analysis.methods.read_text()
    paragraph = text.split("\n\n")[1]
    spec = parse_study(__import__("yaml").safe_load((tuned_study / "spec.yaml").read_text()), source="spec")
    manifest = json.loads((tuned_study / "manifest.json").read_text())
    rows = [json.loads(line) for line in (tuned_study / "trials.jsonl").read_text().splitlines()]
    confirm = [r for r in rows if r["stage"] == "confirm"]
    for arm in spec.arms:
        trial = next(r for r in confirm if r["arm"] == arm.name)
        cfg = TrialConfig.from_yaml_file(tuned_study / "trials" / trial["trial_id"] / "config.yaml")
        label = "residual" if cfg.residual else "plain"
        assert f"{label} ({params_of(cfg):,} parameters)" in paragraph
        assert f"{label}: lr {cfg.lr:.3g}" in paragraph
    base = spec.base
    for piece in (f"{base['train_size']} training and {base['dev_size']} validation images",
                  f"{base['test_size']} test images", f"batch {base['batch_size']}",
                  f"{spec.trials_per_arm} trials per variant", f"sampler seed {spec.sampler_seed}",
                  "3 per variant (0, 1, 2)", f"Optuna {manifest['packages']['optuna']}",
                  f"PyTorch {manifest['packages']['torch']}", manifest["git_commit"], f"Python {manifest['python']}",
                  f"devices recorded by the trials: cpu ({len(rows)} trials)", "no tuning trial was stopped early"):
        assert piece in paragraph, piece
    start = datetime.strptime(manifest["started_at"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    assert f"took {duration(max(r['ended_at'] for r in rows) - start)} of wall time" in paragraph
    # cited: what this run used; not cited: TPE (all proposals were random), halving, Holm (one pair), diagnostics
    keys = cited(paragraph)
    assert manifest["sampler"].startswith("all 2 proposals random")
    assert {"he2016deep", "akiba2019optuna", "liaw2018tune", "paszke2019pytorch", "pedregosa2011scikit"} <= set(keys)
    assert not set(keys) & {"bergstra2011algorithms", "li2020system", "holm1979simple", "li2018visualizing",
                            "balduzzi2017shattered", "veit2016residual", "brock2021characterizing", "he2016identity"}
    bib = tuned_analysis.references.read_text()
    assert bib_keys(bib) == keys


def test_model_axes_every_variant_shares_are_named_in_the_protocol_and_the_methods(tmp_path):
    from ablate.analysis.context import protocol

    doc = spec_doc(base={**BASE, "family": "cifar", "depth": 20, "block": "preact", "activation": "gelu"})
    run = build_with(tmp_path, "gelu", doc)
    text = methods(run, compare(run)).text
    assert "CIFAR-style ResNet-20 (cifar layout, projection shortcuts in the residual blocks, pre-activation blocks, " \
           "GELU)" in text
    assert "(cifar layout, projection shortcuts where residual, pre-activation blocks, GELU)" in protocol(run)
    plain = build_with(tmp_path, "relu", spec_doc())  # the reference model: nothing added
    assert "shortcuts where residual), plain SGD" in protocol(plain) and "GELU" not in methods(plain, compare(plain)).text


def build_with(tmp_path, name, doc, trials=None, **kw):
    arms = [a.name for a in parse_study(doc, source="t").arms]
    trials = trials or [{"arm": a, "seed": s, "test_acc": 0.5 + 0.03 * i + 0.01 * s, **kw}
                        for i, a in enumerate(arms) for s in doc["seeds"]]
    return load_run(build_run(tmp_path / name, trials, doc))


SEARCH = {"space": {"lr": {"distribution": "loguniform", "low": 0.001, "high": 0.5}}, "trials": 4, "round": 2,
          "startup": 2, "halving": {"eta": 2}}


@pytest.mark.parametrize("case, doc, extra, want, unwanted", [
    ("fixed", spec_doc(), {}, {"he2016deep", "liaw2018tune"},
     {"akiba2019optuna", "bergstra2011algorithms", "li2020system", "holm1979simple", "loshchilov2017sgdr"}),
    ("tpe-halving", spec_doc(search=SEARCH), {"params": {"lr": 0.02}},
     {"akiba2019optuna", "bergstra2011algorithms", "li2020system"}, {"holm1979simple"}),
    ("grid", spec_doc(search={"space": SEARCH["space"], "sampler": "grid", "points": 3, "tuning_seeds": 2}),
     {"params": {"lr": 0.0224}}, {"akiba2019optuna", "liaw2018tune"}, {"bergstra2011algorithms", "li2020system"}),
    ("three-arms", spec_doc(factors={"shortcut": {"values": ["projection", "identity", "projection-all"]}}), {},
     {"holm1979simple"}, {"akiba2019optuna"}),
    ("preact-cosine-mnist", spec_doc(base={**BASE, "block": "preact", "schedule": "cosine", "dataset": "mnist"}), {},
     {"he2016identity", "loshchilov2017sgdr", "lecun1998gradient"}, {"pedregosa2011scikit"}),
])
def test_only_the_works_a_run_used_are_cited(tmp_path, case, doc, extra, want, unwanted):
    run = build_with(tmp_path, case, doc, **extra)
    m = methods(run, compare(run))
    keys = cited(m.text)
    assert want <= set(keys) and not set(keys) & unwanted, keys
    assert bib_keys(m.bib()) == keys == m.keys


def test_diagnostics_and_lesions_cite_their_papers_only_when_measured(tmp_path):
    run = build_with(tmp_path, "diag", spec_doc())
    rows = pd.DataFrame({"arm": [RES], "seed": [0]})
    diag = SimpleNamespace(landscape=rows, shattered=rows.iloc[:0], signal=rows, lesions_k=rows.iloc[:0])
    keys = cited(methods(run, compare(run), diag=diag).text)
    assert {"li2018visualizing", "brock2021characterizing"} <= set(keys)
    assert not {"balduzzi2017shattered", "veit2016residual"} & set(keys)
    assert "veit2016residual" in cited(methods(run, compare(run), lesion=True).text)


def test_every_bibtex_entry_is_complete_and_balanced():
    for key, entry in ENTRIES.items():
        assert entry.startswith("@") and entry.split("{", 1)[1].startswith(key + ",")
        assert entry.count("{") == entry.count("}"), key
        f = fields(key)
        assert f.get("author") and f.get("title") and re.fullmatch(r"(19|20)\d\d", f.get("year", "")), key
        assert "http" not in entry, key
