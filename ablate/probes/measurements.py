"""Measurements on one model, as the papers define them (see ablate.probes.diagnostics for running them on a study).

- Loss landscape (Li et al. 2018): the loss along filter-normalised random directions. A direction is
  Gaussian with the weights' shapes; each filter of it (a conv's output channel, a linear layer's
  output neuron) is rescaled to the norm of the same filter of the weights; 1-D parameters (biases,
  BatchNorm scale and shift) get direction 0. BatchNorm stays in eval mode (trained statistics).
- Top Hessian eigenvalue: power iteration with Hessian-vector products (double backpropagation), the
  eigenvalue of largest magnitude of the loss's Hessian in the weights (at a minimum the largest one).
- Shattered gradients (Balduzzi et al. 2017): the gradient of a scalar output with respect to the input
  at points along a line of inputs, and its autocorrelation against the lag. BatchNorm statistics are
  fixed first (`calibrate_batchnorm`), so each input's gradient depends on that input alone.
- Signal propagation (Brock, De & Smith 2021): per block, the average squared channel mean and average
  channel variance of its output, and the average channel variance of its residual branch measured at the
  branch's last convolution, before the BatchNorm that closes a basic block's branch (a train-mode BN with
  scale 1 makes that output's variance 1 by construction). Brock et al.'s plots are of pre-activation nets,
  whose branch ends in that convolution. A user's network: per block it marks as ablate.Residual, its output and
  its branch's output (channels: dimension 1 of an image tensor, the last of a (batch, tokens, features) one).
- Lesions of k blocks (Veit et al. 2016): accuracy with k blocks, drawn at random from the blocks of one
  type (same-shape, or downsampling), replaced by their skip path at once (ablate.probes.lesion.dropped).

Blocks are the residual blocks a network marks (ablate.models.residual: the shipped ResNets' blocks, a user's
ablate.Residual modules); a network that marks none has no signal-propagation or lesion rows.

Every function takes a model and tensors and returns plain numbers or arrays, so each can be checked on
models whose answer is known (a linear or quadratic model, a network whose residual branches are zero).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ablate.probes.batchnorm import estimate_statistics
from ablate.models import Block, residual_blocks
from ablate.probes.lesion import dropped, marked_blocks, replacement_for

EPS = 1e-10


# --- loss landscape --------------------------------------------------------------------------------
def filter_normalised_direction(model: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random direction in weight space, one tensor per parameter, filter-normalised (Li et al. 2018)."""
    out = {}
    for name, p in model.named_parameters():
        if p.dim() <= 1:
            out[name] = torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        w = p.detach().reshape(p.shape[0], -1).norm(dim=1)
        n = d.reshape(p.shape[0], -1).norm(dim=1)
        out[name] = d * (w / (n + EPS)).reshape(-1, *([1] * (p.dim() - 1)))
    return out


@contextlib.contextmanager
def _kept_weights(model: nn.Module):
    """Yields (params, originals); the weights are restored on exit, whatever was written into them."""
    params = dict(model.named_parameters())
    originals = {n: p.detach().clone() for n, p in params.items()}
    try:
        yield params, originals
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(originals[n])


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        return float(F.cross_entropy(model(x), y))


def loss_surface(model: nn.Module, x: torch.Tensor, y: torch.Tensor, directions: Sequence[dict[str, torch.Tensor]],
                 coords: Sequence[Sequence[float]]) -> list[float]:
    """Mean cross-entropy on (x, y) at weights w + sum_i c_i d_i, for each coordinate tuple c (one per direction).

    The model is evaluated in eval mode and left with its own weights and mode."""
    was_training = model.training
    model.eval()
    losses = []
    try:
        with _kept_weights(model) as (params, originals), torch.no_grad():
            for c in coords:
                for name, p in params.items():
                    p.copy_(originals[name] + sum(ci * d[name] for ci, d in zip(c, directions)))
                losses.append(_loss(model, x, y))
    finally:
        model.train(was_training)
    return losses


def curvature(alphas: Sequence[float], losses: Sequence[float], window: float = 0.25) -> float:
    """Second derivative at 0 of the least-squares parabola through the points with |alpha| <= window."""
    a, l = np.asarray(alphas, dtype=float), np.asarray(losses, dtype=float)
    keep = (np.abs(a) <= window + 1e-12) & np.isfinite(l)
    if keep.sum() < 3:
        return math.nan
    return float(2 * np.polyfit(a[keep], l[keep], 2)[0])


def top_hessian_eigenvalue(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], iterations: int = 20,
                           tolerance: float = 1e-3, generator: torch.Generator | None = None) -> tuple[float, int]:
    """(eigenvalue, iterations run): the eigenvalue of largest magnitude of the Hessian of `loss_fn()` in `params`,
    by power iteration on Hessian-vector products (the gradient is taken once with its graph; each product is one
    more backward pass through it), stopped when the Rayleigh quotient changes by less than `tolerance` relative."""
    params = [p for p in params if p.requires_grad]
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    norm = torch.sqrt(sum((x * x).sum() for x in v))
    v = [x / norm for x in v]
    value, done = math.nan, 0
    for done in range(1, iterations + 1):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        new = float(sum((h * x).sum() for h, x in zip(hv, v)))
        norm = torch.sqrt(sum((h * h).sum() for h in hv))
        if float(norm) == 0.0:
            return 0.0, done
        v = [h.detach() / norm for h in hv]
        converged = math.isfinite(value) and abs(new - value) <= tolerance * max(abs(new), 1e-12)
        value = new
        if converged:
            break
    return value, done


def hessian_top(model: nn.Module, x: torch.Tensor, y: torch.Tensor, iterations: int = 20, seed: int = 0,
                tolerance: float = 1e-3) -> tuple[float, int]:
    """top_hessian_eigenvalue of the mean cross-entropy on (x, y), BatchNorm in eval mode (trained statistics, as
    loss_surface); the model is left in its own mode with no gradients kept. Attention runs through PyTorch's math
    kernel of scaled_dot_product_attention here: its fused CPU kernels have no second derivative."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    was_training = model.training
    model.eval()
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            return top_hessian_eigenvalue(lambda: F.cross_entropy(model(x), y), list(model.parameters()), iterations,
                                          tolerance, generator=torch.Generator().manual_seed(seed))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


# --- shattered gradients ---------------------------------------------------------------------------
def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to the batch statistics of x, then switch to eval mode, so that
    afterwards each input is normalised by fixed numbers and inputs do not interact."""
    estimate_statistics(model, x, chunk=max(len(x), 1))


def line_between(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    """n inputs evenly spaced on the segment from a to b (both included)."""
    t = torch.linspace(0, 1, n, dtype=a.dtype, device=a.device).reshape(n, *([1] * a.dim()))
    return (1 - t) * a.unsqueeze(0) + t * b.unsqueeze(0)


def input_gradients(model: nn.Module, x: torch.Tensor, projection: torch.Tensor, chunk: int = 64) -> np.ndarray:
    """d(projection . model(x_i)) / d x_i for each input, flattened: an array (len(x), numel of one input).

    The model must not mix inputs (eval-mode BatchNorm), so the chunks give the same gradients as one batch."""
    out = []
    for start in range(0, len(x), chunk):
        xi = x[start:start + chunk].detach().clone().requires_grad_(True)
        (model(xi) @ projection).sum().backward()
        out.append(xi.grad.reshape(len(xi), -1).double().cpu().numpy())
    model.zero_grad(set_to_none=True)
    return np.concatenate(out)


def autocorrelation(g: np.ndarray, max_lag: int) -> np.ndarray:
    """r(k), k = 0..max_lag, of a sequence of vectors g[t]: sum_t <c_t, c_t+k> / sum_t |c_t|^2 with c = g minus its
    mean over t (the usual estimator, components pooled). NaN throughout when g does not vary along t."""
    g = np.asarray(g, dtype=float).reshape(len(g), -1)
    c = g - g.mean(axis=0)
    denom = float((c * c).sum())
    if denom <= 1e-24 * max(float((g * g).sum()), 1e-300):
        return np.full(max_lag + 1, np.nan)
    return np.array([float((c[: len(c) - k] * c[k:]).sum()) / denom for k in range(max_lag + 1)])


# --- signal propagation ----------------------------------------------------------------------------
def channel_stats(t: torch.Tensor) -> tuple[float, float]:
    """(average over channels of the squared channel mean, average channel variance); means and (population)
    variances over everything but the channel: an N x C x H x W (or N x C x L) tensor's channels are dimension 1,
    an N x T x D tensor (a transformer's tokens) has its D features last, an N x D tensor its D features."""
    t = t.detach().double()
    if t.dim() == 3:
        t = t.transpose(1, 2)  # (N, T, D) -> (N, D, T): the features are the channels
    t = t.transpose(0, 1).reshape(t.shape[1], -1)
    mean = t.mean(dim=1)
    return float((mean ** 2).mean()), float(t.var(dim=1, unbiased=False).mean())


def branch_point(block: nn.Module) -> nn.Module:
    """Where a block's residual branch is read: a shipped ResNet block's last convolution (conv2), before the
    BatchNorm that closes a basic block's branch; an ablate.Residual's branch output."""
    return block.conv2 if isinstance(block, Block) else block.branch_output


def signal_propagation(model: nn.Module, x: torch.Tensor) -> list[dict]:
    """One forward pass of x in the model's current mode; per marked residual block (ablate.models.residual_blocks,
    in order) the statistics of its output, and the variance of its residual branch (for a plain block, its main
    path) at branch_point: a shipped basic block's conv2, before its closing BatchNorm, whose train-mode output has
    variance 1 by construction (a pre-activation block's branch ends in that convolution); an ablate.Residual's
    branch output. Empty when the model marks no block."""
    captured: dict[str, dict[str, torch.Tensor]] = {}

    def keep(name: str, what: str):
        def hook(_m, _inputs, output):
            captured.setdefault(name, {})[what] = output.detach().clone()
        return hook

    blocks = residual_blocks(model)
    if not blocks:
        return []
    handles = []
    for name, block in blocks:
        handles.append(block.register_forward_hook(keep(name, "out")))
        handles.append(branch_point(block).register_forward_hook(keep(name, "branch")))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    rows = []
    for index, (name, block) in enumerate(blocks):
        sq_mean, var = channel_stats(captured[name]["out"])
        rows.append({"block": name, "block_index": index, "residual": block.residual, "sq_mean": sq_mean,
                     "variance": var, "branch_variance": channel_stats(captured[name]["branch"])[1]})
    return rows


# --- lesions of k blocks ---------------------------------------------------------------------------
def k_values(n: int, most: int = 12) -> list[int]:
    """The numbers of blocks to delete: every k from 1 to n when n <= most, else `most` values spread over 1..n."""
    if n <= most:
        return list(range(1, n + 1))
    return sorted({int(round(v)) for v in np.linspace(1, n, most)})


def k_lesions(model: nn.Module, score: Callable[[], float], samples: int, rng: np.random.Generator,
              most: int = 12, x: torch.Tensor | None = None) -> list[dict]:
    """Accuracy (`score()`) with k blocks of one type dropped at once, for each type (same-shape blocks, replaced by
    the identity; downsampling blocks, replaced by a shortcut: two different operations, reported apart) and k in
    k_values(blocks of that type), `samples` distinct random sets each (all of them when fewer exist); first row
    k = 0, the intact model (block_type "none"). The blocks are those the model marks (ablate.models.residual_blocks)
    that can be dropped; `x`: an input batch, needed to tell an ablate.Residual's shape change (marked_blocks)."""
    blocks = [(name, b, reshaping) for name, b, reshaping in marked_blocks(model, x)
              if replacement_for(b, reshaping) is not None]
    rows = [{"block_type": "none", "n_blocks": len(blocks), "k": 0, "sample": 0, "dropped": "", "accuracy": score()}]
    for kind in ("same-shape", "downsampling"):
        members = [i for i, (_, _, reshaping) in enumerate(blocks) if reshaping == (kind == "downsampling")]
        n = len(members)
        for k in k_values(n, most) if n else []:
            draws = min(samples, math.comb(n, k))
            sets: list[tuple[int, ...]] = []
            while len(sets) < draws:
                chosen = tuple(sorted(members[j] for j in rng.choice(n, size=k, replace=False).tolist()))
                if chosen not in sets:
                    sets.append(chosen)
            for sample, chosen in enumerate(sets):
                with contextlib.ExitStack() as stack:
                    for i in chosen:
                        stack.enter_context(dropped(blocks[i][1], blocks[i][2]))
                    acc = score()
                rows.append({"block_type": kind, "n_blocks": n, "k": k, "sample": sample,
                             "dropped": " ".join(blocks[i][0] for i in chosen), "accuracy": acc})
    return rows
