"""A single trial's SGD (ablate.train.sgd.Sgd, stepped by SingleModel) is torch.optim.SGD's step, bit for bit, without
the optimizer object: torch.optim.SGD's methods import torch._dynamo (inductor, sympy, triton: about 150 MB of every
trial worker, docs/benchmarks.md "Worker memory"), which a trial now never imports."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ablate.spec.trial_config import TrialConfig
from ablate.train.loop import SingleModel, model_for

ROOT = Path(__file__).resolve().parents[1]
BASE = TrialConfig(dataset="digits", family="cifar", depth=20, image_size=16, train_size=64, dev_size=32, test_size=32,
                   batch_size=16, epochs=2, eval_every=2, lr=0.05, threads=1, channels_last=False)
RECIPES = {"constant": BASE,
           "cosine-warmup-nesterov-decay": BASE.replace(schedule="cosine", warmup_steps=3, momentum=0.9, nesterov=True,
                                                        weight_decay=1e-3),
           "step-momentum": BASE.replace(schedule="step", milestones=(0.5,), momentum=0.5)}
DATA = SimpleNamespace(in_channels=1, num_classes=10)


def _pair(cfg: TrialConfig) -> tuple[SingleModel, torch.nn.Module, torch.optim.SGD]:
    """A trial's SingleModel and an identical model stepped by torch.optim.SGD at the trial's settings."""
    single = SingleModel([model_for(cfg, DATA)], [cfg], torch.device("cpu"), (cfg.batch_size, 1, 16, 16))
    twin = model_for(cfg, DATA)
    opt = torch.optim.SGD(twin.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    return single, twin, opt


def _steps(singles: list[SingleModel], twin: torch.nn.Module, opt: torch.optim.SGD, cfg: TrialConfig,
           steps: range, gen: torch.Generator) -> None:
    """The same random gradients into every model, then step `step`'s update of each at the scheduled rate."""
    rates = cfg.learning_rates()
    for step in steps:
        for name, p in twin.named_parameters():
            p.grad = torch.randn(p.shape, generator=gen)
            for single in singles:
                dict(single.model.named_parameters())[name].grad = p.grad.clone()
        for single in singles:
            single.update(step)
        for group in opt.param_groups:
            group["lr"] = cfg.lr if rates is None else rates[step]
        opt.step()


def _same(single: SingleModel, twin: torch.nn.Module) -> bool:
    named = dict(twin.named_parameters())
    return all(torch.equal(p, named[name]) for name, p in single.model.named_parameters())


@pytest.mark.parametrize("name", list(RECIPES))
def test_a_single_trials_update_is_torch_optim_sgds_bit_for_bit(name):
    cfg = RECIPES[name]
    single, twin, opt = _pair(cfg)
    assert _same(single, twin)
    _steps([single], twin, opt, cfg, range(cfg.total_steps()), torch.Generator().manual_seed(0))
    assert _same(single, twin)
    moved = dict(model_for(cfg, DATA).named_parameters())
    assert not all(torch.equal(p, moved[n]) for n, p in single.model.named_parameters())  # the steps did move them
    # the momentum buffers are torch's, in the layout its state_dict gives
    ours, theirs = single.state()["optimizer"]["state"], opt.state_dict()["state"]
    assert ours.keys() == theirs.keys() and bool(ours) == (cfg.momentum != 0)
    assert all(torch.equal(ours[i]["momentum_buffer"], theirs[i]["momentum_buffer"]) for i in ours)


def test_a_checkpoint_written_while_torch_optim_sgd_stepped_the_trial_continues_as_torch_would():
    """A trial paused before this change holds torch.optim.SGD's state_dict: restored, the next steps are the steps
    torch.optim.SGD would have taken (the momentum buffers carried over, not restarted)."""
    cfg = RECIPES["cosine-warmup-nesterov-decay"]
    _, twin, opt = _pair(cfg)
    gen = torch.Generator().manual_seed(1)
    _steps([], twin, opt, cfg, range(3), gen)  # torch's SGD steps; then trials restart from its checkpoint
    weights = {k: v.clone() for k, v in twin.state_dict().items()}
    restarted, without = (SingleModel([model_for(cfg, DATA)], [cfg], torch.device("cpu"), (cfg.batch_size, 1, 16, 16))
                          for _ in range(2))
    restarted.restore({"model": weights, "optimizer": opt.state_dict()})
    without.restore({"model": weights, "optimizer": {"state": {}, "param_groups": []}})
    _steps([restarted, without], twin, opt, cfg, range(3, cfg.total_steps()), gen)
    assert _same(restarted, twin)
    assert not _same(without, twin)  # without the buffers the continuation differs: the check can tell


def test_a_trial_imports_no_compiler(tmp_path):
    """A whole trial (training with telemetry, dev evaluations, test scoring) in a fresh process leaves torch._dynamo,
    inductor and sympy unimported; a compiled trial (compile: default) is what needs them."""
    code = ("import sys\nfrom ablate.spec.trial_config import TrialConfig\nfrom ablate.train.loop import run_trial\n"
            "r = run_trial(TrialConfig.from_yaml_file(sys.argv[1]))\nassert r.status == 'ok', r.status\n"
            "print(sorted(m for m in ('torch._dynamo', 'torch._inductor', 'sympy') if m in sys.modules))")
    (tmp_path / "config.yaml").write_text(BASE.to_yaml())
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "config.yaml")], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "[]"
