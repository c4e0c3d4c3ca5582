"""Fused trials: K trials that share one architecture, trained as one model batched over K with torch.func.

`torch.func.stack_module_state` stacks every member's parameters and buffers; `vmap` over
`functional_call` runs all members in one pass, each on its own batch (its own data order), with
its own BatchNorm running statistics (the buffers are batched too). Each member keeps its own
initialisation (the seeded `trial.model_for`), learning rate, momentum and weight decay (SGD is
applied per member with those values as vectors). Each member ends as the `TrialResult` the same
trial run alone would give, within float tolerance (the batched kernels sum in another order), and
is written, registered and reproduced as that single trial: fusing is an execution detail.

On a CPU fusing was measured slower than running the members one after another; it pays on a GPU,
where one small model leaves most of the device idle. The study engine fuses only on CUDA.
Supported: trials that differ only in FUSABLE settings, run to their end (no pause at rungs).
"""
from __future__ import annotations

import copy
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from ablate.spec.trial_config import TrialConfig, fusable
from ablate.train.telemetry import GradTelemetry
from ablate.train.result import TrialResult
from ablate.train.loop import _evaluate, data_record, model_for
from ablate.train.device import deterministic_cuda


def _per_member(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """A [K, 1, 1, ...] tensor that broadcasts one value per member over a stacked parameter."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))


def run_fused(configs: list[TrialConfig], *, device: str | torch.device | None = None,
              data_dir: str | os.PathLike | None = None, keep_best_state: bool = False) -> list[TrialResult]:
    """Train `configs` (see `fusable`) together; one TrialResult per config, in order."""
    from torch.func import functional_call, stack_module_state, vmap

    from ablate.data.splits import load_splits
    from ablate.errors import AblateError

    why = fusable(configs)
    if why:
        raise AblateError(f"cannot fuse these trials: {why}")
    t_start = time.perf_counter()
    cfg0, k = configs[0], len(configs)
    if cfg0.threads:
        torch.set_num_threads(cfg0.threads)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        deterministic_cuda()
    splits = load_splits(cfg0.dataset, data_dir, cfg0.train_size, cfg0.dev_size, cfg0.test_size,
                         seed=cfg0.data_seed, image_size=cfg0.image_size)
    members = [model_for(cfg, splits).to(device).train() for cfg in configs]
    params, buffers = stack_module_state(members)
    params = {name: p.detach().clone() for name, p in params.items()}
    shell = copy.deepcopy(members[0]).to("meta")  # the architecture, without storage, for functional_call
    view = members[0]  # a real module to evaluate one member at a time (its state is loaded each time)
    memory_format = torch.contiguous_format  # channels_last does not carry through vmap's stacked inputs

    def forward(p, b, x):
        return functional_call(shell, (p, b), (x,))

    batched = vmap(forward, in_dims=(0, 0, 0))
    train_x, train_y = splits.train.x.to(device), splits.train.y.to(device)
    dev_x, dev_y = splits.dev.x.to(device), splits.dev.y.to(device)
    test_x, test_y = splits.test.x.to(device), splits.test.y.to(device)
    n = train_y.numel()
    batches = cfg0.batches()
    steps_per_epoch, total_steps = len(batches), cfg0.total_steps()
    eval_at = set(cfg0.evaluation_steps())
    shuffles = [torch.Generator().manual_seed(cfg.seed) for cfg in configs]
    loss_buf = torch.zeros(total_steps, k, device=device)
    lr = {name: _per_member([c.lr for c in configs], p) for name, p in params.items()}
    wd = {name: _per_member([c.weight_decay for c in configs], p) for name, p in params.items()}
    mom = {name: _per_member([c.momentum for c in configs], p) for name, p in params.items()}
    momentum_buf: dict[str, torch.Tensor] = {}
    use_wd = any(c.weight_decay for c in configs)
    use_momentum = any(c.momentum for c in configs)

    results = [TrialResult(status="ok", device=str(device), threads=torch.get_num_threads(),
                           best_dev_acc=-1.0, best_step=0, test_acc=float("nan"), test_loss=float("nan"),
                           final_train_loss=float("nan"), train_seconds=0.0, total_seconds=0.0, steps=0,
                           **data_record(splits))
               for _ in configs]
    live = list(range(k))  # members that have not diverged
    checked = [0] * k
    best: list[dict[str, torch.Tensor] | None] = [None] * k
    telemetry = [GradTelemetry(view) for _ in configs] if cfg0.telemetry else None

    def state_of(m: int) -> dict[str, torch.Tensor]:
        return {**{name: p[m] for name, p in params.items()}, **{name: b[m] for name, b in buffers.items()}}

    def record_telemetry(m: int, x: torch.Tensor, labels: tuple[int, ...]) -> None:
        # The member alone, in train mode on its own batch: the block outputs its own training pass
        # produced; its running statistics are not touched (they are reloaded before every use).
        view.load_state_dict(state_of(m))
        telemetry[m].arm()
        try:
            with torch.no_grad():
                view(x)
        finally:
            telemetry[m].disarm()
        for (name, w) in view.named_parameters():
            w.grad = params[name].grad[m]
        telemetry[m].record(labels)
        for w in view.parameters():
            w.grad = None

    orders: list[torch.Tensor] = []
    t_train = time.perf_counter()
    step = 0
    while step < total_steps and live:
        if step % steps_per_epoch == 0:
            orders = [torch.randperm(n, generator=g).to(device) for g in shuffles]
        start, end = batches[step % steps_per_epoch]
        idx = torch.stack([order[start:end] for order in orders])  # [K, B]: each member its own images
        x, y = train_x[idx], train_y[idx]
        for p in params.values():
            p.requires_grad_(True)
            p.grad = None
        logits = batched(params, buffers, x)
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1)
        losses.sum().backward()  # members share no parameter: each gradient is its own loss's
        labels = ((0,) if step == 0 else ()) + ((step + 1,) if step + 1 in eval_at else ())
        if telemetry is not None and labels:
            for m in live:
                record_telemetry(m, x[m], labels)
        with torch.no_grad():
            for name, p in params.items():
                grad = p.grad
                if use_wd:
                    grad = grad + wd[name] * p
                if use_momentum:
                    if name not in momentum_buf:
                        momentum_buf[name] = grad.clone()
                    else:
                        momentum_buf[name].mul_(mom[name]).add_(grad)
                    grad = torch.where(mom[name] != 0, momentum_buf[name], grad)
                p.sub_(lr[name] * grad)
                p.grad = None
        loss_buf[step] = losses.detach()
        step += 1
        if step not in eval_at:
            continue
        seen = loss_buf[:step].T.tolist()
        for m in list(live):
            r = results[m]
            r.train_loss, r.steps = seen[m], step
            if not all(math.isfinite(v) for v in seen[m][checked[m]:]):
                r.status = "diverged"
                live.remove(m)
                continue
            checked[m] = step
            view.load_state_dict(state_of(m))
            dev_acc, dev_loss = _evaluate(view, dev_x, dev_y, memory_format)
            if r.record_evaluation(step, dev_acc, dev_loss):
                best[m] = {name: t.detach().clone() for name, t in state_of(m).items()}
    train_seconds = time.perf_counter() - t_train
    for m, (cfg, r) in enumerate(zip(configs, results)):
        r.train_seconds = train_seconds  # the members trained together: each took the whole time
        if telemetry is not None:
            r.grad_norms = telemetry[m].rows()
        if r.train_loss:
            r.final_train_loss = float(np.mean(r.train_loss[-steps_per_epoch:]))
        if r.status == "ok" and best[m] is not None:
            view.load_state_dict(state_of(m))
            r.final_test_acc, r.final_test_loss, r.test_pred_final = _evaluate(view, test_x, test_y, memory_format,
                                                                                predictions=True)
            view.load_state_dict(best[m])
            r.test_acc, r.test_loss, r.test_pred = _evaluate(view, test_x, test_y, memory_format, predictions=True)
            r.scored_train_acc, r.scored_train_loss = _evaluate(view, train_x, train_y, memory_format)
            r.test_labels = test_y.tolist()
        r.best_dev_acc = max(r.best_dev_acc, 0.0)
        if keep_best_state and best[m] is not None:
            r.best_state = {name: t.cpu() for name, t in best[m].items()}
        r.total_seconds = time.perf_counter() - t_start
    return results
