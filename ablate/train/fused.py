"""Fused trials: K trials that share one architecture, trained as one model batched over K with torch.func.

`torch.func.stack_module_state` stacks every member's parameters and buffers; `vmap` over
`functional_call` runs all members in one pass, each on its own batch (its own data order and
augmentation), with its own BatchNorm running statistics (the buffers are batched too). Each member takes
torch's SGD step on its own slices of the stacked weights (ablate.train.sgd, the function a single trial's
optimizer runs): its own learning rate at every step (schedule and warm-up), momentum, Nesterov, weight decay.
Everything else (data, seeds, evaluation, best-dev checkpoint, telemetry, results) is the shared training loop's
(ablate.train.loop.TrainingLoop): this module only supplies `FusedModel`, the batched forward pass and per-member
update the loop trains through.

A fused member is not bit for bit the same trial run alone: the batched kernels sum in another order, and
early training amplifies such rounding (tests/test_fused.py states the tolerance that holds). So a study
fuses only when asked (`study --fuse auto|K`; the default is off), and each fused trial's metrics.json,
registry row and trials.csv row name the trials it was fused with.
Supported: trials that differ only in FUSABLE settings, in fp32 and uncompiled (see `fusable`: autocast does
not reach vmapped operations), run to their end (no pause at rungs), on any device.
"""
from __future__ import annotations

import copy
import os

import torch
import torch.nn.functional as F

from ablate.errors import AblateError
from ablate.spec import TrialConfig, fusable
from ablate.train.telemetry import GradTelemetry, records_blocks
from ablate.train.result import TrialResult
from ablate.train.loop import TrainingLoop, copy_state
from ablate.train.sgd import MemberSgd


class FusedModel:
    """The members' weights stacked, and one step: a batched forward (vmap over functional_call) and each member's
    SGD step on its slices. The same interface as ablate.train.loop.SingleModel, which the loop trains through."""

    memory_format = torch.contiguous_format  # channels_last does not carry through vmap's stacked inputs

    def __init__(self, models: list[torch.nn.Module], configs: list[TrialConfig], device: torch.device,
                 input_shape: tuple[int, ...]) -> None:
        from torch.func import functional_call, stack_module_state, vmap

        why = fusable(configs)
        if why:
            raise AblateError(f"cannot fuse these trials: {why}")
        members = [m.to(device).train() for m in models]
        params, self.buffers = stack_module_state(members)
        self.params = {name: p.detach().clone() for name, p in params.items()}
        shell = copy.deepcopy(members[0]).to("meta")  # the architecture, without storage, for functional_call
        self.view = members[0]  # a real module to evaluate one member at a time (its state is loaded each time)
        self.batched = vmap(lambda p, b, x: functional_call(shell, (p, b), (x,)), in_dims=(0, 0, 0))
        cfg = configs[0]  # fp32 and uncompiled (see `fusable`)
        self.k = len(configs)
        # Each member its own SGD (ablate.train.sgd): its schedule and warm-up, momentum, weight decay, Nesterov.
        self.sgd = [MemberSgd(c, m) for m, c in enumerate(configs)]
        self.telemetry = ([GradTelemetry(self.view) for _ in configs]
                          if cfg.telemetry and records_blocks(self.view)
                          else None)

    def train_step(self, xs: list[torch.Tensor], ys: list[torch.Tensor], step: int, labels: tuple[int, ...],
                   record: list[int]) -> torch.Tensor:
        x, y = torch.stack(xs), torch.stack(ys)  # [K, B, ...]: each member its own images
        for p in self.params.values():
            p.requires_grad_(True)
            p.grad = None
        logits = self.batched(self.params, self.buffers, x)
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(self.k, -1).mean(1)
        losses.sum().backward()  # members share no parameter: each gradient is its own loss's
        if labels and self.telemetry is not None:
            for m in record:
                self._record_telemetry(m, x[m], labels)
        self.update(step)
        return losses.detach()

    def update(self, step: int) -> None:
        """Step `step`'s update from the gradients the stacked parameters hold: each member's torch SGD step (the one
        a single trial takes, ablate.train.sgd) on its own slices, at its own scheduled rate."""
        for member in self.sgd:
            member.step(self.params, step)
        for p in self.params.values():
            p.grad = None

    def _state_of(self, m: int) -> dict[str, torch.Tensor]:
        return {**{name: p[m] for name, p in self.params.items()}, **{name: b[m] for name, b in self.buffers.items()}}

    def _record_telemetry(self, m: int, x: torch.Tensor, labels: tuple[int, ...]) -> None:
        # The member alone, in train mode on its own batch: the block outputs its own training pass
        # produced; its running statistics are not touched (they are reloaded before every use).
        view, telemetry = self.current(m), self.telemetry[m]
        telemetry.arm()
        try:
            with torch.no_grad():
                view(x)
        finally:
            telemetry.disarm()
        for (name, w) in view.named_parameters():
            w.grad = self.params[name].grad[m]
        telemetry.record(labels)
        for w in view.parameters():
            w.grad = None

    def current(self, member: int) -> torch.nn.Module:
        self.view.load_state_dict(self._state_of(member))
        return self.view

    def snapshot(self, member: int, into: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        return copy_state(self._state_of(member), into)

    def load(self, member: int, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        self.view.load_state_dict(state)
        return self.view


def run_fused(configs: list[TrialConfig], *, device: str | torch.device | None = None,
              data_dir: str | os.PathLike | None = None, keep_best_state: bool = False,
              beat=None) -> list[TrialResult]:
    """Train `configs` (see `fusable`) together; one TrialResult per config, in order. `beat`: the heartbeat,
    as in ablate.train.loop.run_trial."""
    why = fusable(configs)  # before any data is loaded (FusedModel checks again, for other callers)
    if why:
        raise AblateError(f"cannot fuse these trials: {why}")
    return TrainingLoop(configs, FusedModel, device=device, data_dir=data_dir, keep_best_state=keep_best_state,
                        beat=beat).run()
