"""SGD, one implementation for every trial: torch's (`torch.optim.sgd.sgd`, the update torch.optim.SGD.step runs:
weight decay, momentum, Nesterov, and torch's choice of kernels for the device), with the settings a trial config
gives it in one place (`settings`).

`Sgd` applies it to named parameters, keeping a momentum buffer per name as torch.optim.SGD keeps one per
parameter: a single trial steps one over its model's parameters (ablate.train.loop.SingleModel); fused trials
(ablate.train.fused) step one per member over the member's slices of the stacked weights (`MemberSgd`), with
the member's own learning rate, momentum, weight decay and buffers, so that a fused member's update is, bit for
bit, the update it gets alone from the same gradients, and both are torch.optim.SGD's.

Why not torch.optim.SGD itself: its methods (`add_param_group` when it is built, `zero_grad`, `step`,
`state_dict`) are wrapped by torch._disable_dynamo, whose first call imports torch._dynamo and with it inductor,
sympy and triton: about 150 MB of every trial worker's memory for a compiler an eager trial never uses
(docs/benchmarks.md, "Worker memory"). The function they run is called here directly.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.optim.sgd import sgd

from ablate.spec import TrialConfig


def settings(config: TrialConfig) -> dict[str, Any]:
    """The trial's SGD settings besides the learning rate."""
    return {"momentum": config.momentum, "weight_decay": config.weight_decay, "nesterov": config.nesterov,
            "dampening": 0, "maximize": False}


class Sgd:
    """SGD over named parameters at a trial config's settings and learning rate per step: what torch.optim.SGD.step
    does (the same function on the parameters that have gradients, in the order given, with a momentum buffer kept
    per parameter), without the optimizer object. `state_dict` keeps the momentum buffers as
    torch.optim.SGD.state_dict does (its "state", keyed by the parameter's position) and `load_state_dict` reads
    either, so a trial paused while torch.optim.SGD stepped it continues as it would have."""

    def __init__(self, config: TrialConfig) -> None:
        self.config = config
        self.settings = settings(config)
        self.rates = config.learning_rates()  # None: lr at every step
        self.buffers: dict[str, torch.Tensor | None] = {}

    def apply(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], step: int) -> None:
        """Step `step`'s update of `params` (name -> tensor, updated in place) from `grads` (the same names)."""
        names = list(params)
        buffers = [self.buffers.get(name) for name in names]
        with torch.no_grad():
            sgd([params[name] for name in names], [grads[name] for name in names], buffers,
                lr=self.config.lr if self.rates is None else self.rates[step], **self.settings)
        if self.config.momentum != 0:
            self.buffers.update(zip(names, buffers))

    def state_dict(self, names: list[str]) -> dict[str, Any]:
        """The momentum buffers as torch.optim.SGD.state_dict gives them for parameters `names` (in that order):
        keyed by position, on the CPU."""
        state = {i: {"momentum_buffer": self.buffers[name].detach().cpu().clone()}
                 for i, name in enumerate(names) if self.buffers.get(name) is not None}
        return {"state": state, "param_groups": [{"lr": self.config.lr, **self.settings, "params": list(range(len(names)))}]}

    def load_state_dict(self, state: dict[str, Any], params: dict[str, torch.Tensor]) -> None:
        """Buffers from `state_dict` (or torch.optim.SGD's) for `params` (name -> parameter, in the order saved)."""
        names = list(params)
        self.buffers = {names[int(i)]: s["momentum_buffer"].to(params[names[int(i)]], copy=True) for i, s in state["state"].items()
                        if s.get("momentum_buffer") is not None}


class MemberSgd(Sgd):
    """One fused member's SGD over its slices of the stacked parameters: what a single trial's Sgd does, on views
    of the stacked weights and gradients."""

    def __init__(self, config: TrialConfig, member: int) -> None:
        super().__init__(config)
        self.member = member

    def step(self, stacked: dict[str, torch.Tensor], step: int) -> None:
        """Update step `step` of this member, from the gradients the stacked parameters hold."""
        m, names = self.member, [name for name, p in stacked.items() if p.grad is not None]
        self.apply({name: stacked[name][m] for name in names}, {name: stacked[name].grad[m] for name in names}, step)
