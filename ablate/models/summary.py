"""The layer summary of a model: per leaf module its output shape, parameters and MACs (torch's FlopCounterMode)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ablate.errors import AblateError


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple
    params: int
    macs: int


@dataclass
class ModelSummary:
    rows: list[LayerRow]
    total_params: int
    total_macs: int


def _first_conv(model: nn.Module) -> nn.Conv2d | None:
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def summarize(model, in_channels=1, input_size=32) -> ModelSummary:
    """One eval-mode forward pass; MACs come from torch's FlopCounterMode (flops / 2)."""
    if not isinstance(in_channels, int) or in_channels < 1:
        raise AblateError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    if not isinstance(input_size, int) or input_size < 1:
        raise AblateError(f"input_size must be an integer >= 1, got {input_size!r}")
    conv = _first_conv(model)
    if conv is not None and conv.in_channels != in_channels:
        raise AblateError(
            f"model expects {conv.in_channels} input channels but in_channels={in_channels}; "
            f"pass in_channels={conv.in_channels}"
        )
    leaves = [(name, m) for name, m in model.named_modules() if name and not any(m.children())]
    shapes: dict[str, tuple] = {}

    def hook_for(name):
        def hook(_module, _inputs, output):
            # A module called twice (a block's ReLU) keeps the shape of its first call.
            shapes.setdefault(name, tuple(output.shape))
        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in leaves]
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, in_channels, input_size, input_size)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    counts = counter.get_flop_counts()
    # The counter names modules by path from the root, prefixed with the root's class name.
    prefix = type(model).__name__ + "."
    rows = []
    for name, m in leaves:
        if name not in shapes:
            continue  # registered but never called, so it neither computes nor shapes the output
        flops = sum(counts.get(prefix + name, {}).values())
        params = sum(p.numel() for p in m.parameters(recurse=False))
        rows.append(LayerRow(name, type(m).__name__, shapes[name], params, flops // 2))
    total_params = sum(p.numel() for p in model.parameters())
    return ModelSummary(rows, total_params, counter.get_total_flops() // 2)


def format_summary(summary: ModelSummary) -> str:
    header = ("Layer", "Type", "Output shape", "Params", "MACs")
    body = [
        (r.name, r.kind, "x".join(str(d) for d in r.output_shape), f"{r.params:,}", f"{r.macs:,}")
        for r in summary.rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    numeric = {3, 4}  # right-align numbers so digits line up

    def line(cells):
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "-" * len(line(header))
    lines = [line(header), rule, *(line(row) for row in body), rule]
    lines.append(f"Total params: {summary.total_params:,}")
    lines.append(f"Total MACs: {summary.total_macs:,} ({summary.total_macs / 1e6:.2f} M)")
    return "\n".join(lines)
