"""SGD, one implementation for every trial: torch's (`torch.optim.sgd.sgd`, the update torch.optim.SGD.step runs:
weight decay, momentum, Nesterov, and torch's choice of kernels for the device), with the settings a trial config
gives it in one place (`settings`).

A single trial steps a torch.optim.SGD over its model's parameters (`optimizer`, `set_rate`: ablate.train.loop);
fused trials (ablate.train.fused) apply the same function to each member's slice of the stacked weights
(`MemberSgd`), with the member's own learning rate, momentum, weight decay and momentum buffers, so that a fused
member's update is, bit for bit, the update it gets alone from the same gradients.
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


def optimizer(params, config: TrialConfig) -> torch.optim.SGD:
    """A single trial's SGD, at the config's learning rate until `set_rate` changes it."""
    return torch.optim.SGD(params, lr=config.lr, **settings(config))


def set_rate(opt: torch.optim.SGD, rate: float) -> None:
    """The learning rate of the next step (a schedule's, ablate.spec.trial_config.TrialConfig.learning_rate)."""
    for group in opt.param_groups:
        group["lr"] = rate


class MemberSgd:
    """One fused member's SGD over its slices of the stacked parameters: what torch.optim.SGD.step does for a
    single trial (the same function, on the parameters that have gradients, with momentum buffers kept per
    parameter), on views of the stacked weights and gradients."""

    def __init__(self, config: TrialConfig, member: int) -> None:
        self.config, self.member = config, member
        self.settings = settings(config)
        self.rates = config.learning_rates()  # None: lr at every step
        self.buffers: dict[str, torch.Tensor | None] = {}

    def step(self, stacked: dict[str, torch.Tensor], step: int) -> None:
        """Update step `step` of this member, from the gradients the stacked parameters hold."""
        m = self.member
        names = [name for name, p in stacked.items() if p.grad is not None]
        buffers = [self.buffers.get(name) for name in names]
        with torch.no_grad():
            sgd([stacked[name][m] for name in names], [stacked[name].grad[m] for name in names], buffers,
                lr=self.config.lr if self.rates is None else self.rates[step], **self.settings)
        if self.config.momentum != 0:
            self.buffers.update(zip(names, buffers))
