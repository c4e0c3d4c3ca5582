"""Gradient telemetry: per-layer gradient/weight norms and per-block output std on chosen steps."""
from __future__ import annotations

import math
from typing import Any

import torch


def records_blocks(model: torch.nn.Module) -> bool:
    """Whether GradTelemetry can watch this model: the shipped ResNet's stem, blocks() and fc (a user's network from
    its own factory has no such layout, and its trials record no grad_norms.csv)."""
    return all(hasattr(model, name) for name in ("stem", "blocks", "fc"))


class GradTelemetry:
    """Gradient and response statistics of one model, recorded on chosen steps only.

    Layers are the conv/linear modules in forward order. `layer_index` counts the main path from
    the input (0 = stem conv, depth - 1 = classifier), so a plain net and its residual twin share
    indices layer for layer; a 1x1 projection shortcut takes the index of its block's first conv
    (its input is that conv's input) and is told apart by `.shortcut.` in its name.
    Blocks are `stem`, each residual block by module name (`stages.1.0`), and `head` (the
    classifier; its output std is the std of the logits).

    Cost model: nothing at all on unrecorded steps (no hooks are registered); on a recorded step
    one `_foreach_norm` over the gradients and one over the weights, a std per block from forward
    hooks, all kept on the device; everything is fetched to the host once, by `rows()`.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        block_names = [name for name, _ in model.blocks()]
        self.layers: list[tuple[str, int, str]] = []  # (module name, layer_index, block)
        weights = []
        first_of_block: dict[str, int] = {}
        main_index = 0
        for name, module in model.named_modules():
            if not isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                continue
            if name.startswith("stem."):
                block = "stem"
            elif module is model.fc:
                block = "head"
            else:
                block = max((b for b in block_names if name.startswith(b + ".")), key=len)
            if ".shortcut." in name:
                index = first_of_block[block]
            else:
                index = main_index
                main_index += 1
                first_of_block.setdefault(block, index)
            self.layers.append((name, index, block))
            weights.append(module.weight)
        self.weights = weights
        self.watched: list[tuple[str, torch.nn.Module]] = [("stem", model.stem), *model.blocks(), ("head", model.fc)]
        self.block_first = [first_of_block[name] for name, _ in self.watched]
        self.block_layers = [[i for i, (_, _, b) in enumerate(self.layers) if b == name] for name, _ in self.watched]
        self._stds: list[torch.Tensor | None] = [None] * len(self.watched)
        self._hooks = [self._capture_hook(i) for i in range(len(self.watched))]
        self._handles: list[Any] = []
        self._records: list[tuple[int, torch.Tensor]] = []

    def _capture_hook(self, i: int):
        def hook(_module, _inputs, output):
            self._stds[i] = output.detach().float().std()
        return hook

    def arm(self) -> None:
        """Capture block output stds during the next forward pass."""
        self._handles = [m.register_forward_hook(h) for (_, m), h in zip(self.watched, self._hooks)]

    def disarm(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def record(self, steps: tuple[int, ...]) -> None:
        """Call after backward and before optimizer.step(); `steps` are the labels this record gets."""
        # A gradient or std that was never produced is written as nan rather than failing the trial.
        missing = self.weights[0].new_full((), float("nan"))  # filled on the device: no host copy
        with torch.no_grad():
            grads = [w.grad if w.grad is not None else missing for w in self.weights]
            stds = [s if s is not None else missing for s in self._stds]
            values = torch.cat([
                torch.stack(torch._foreach_norm(grads)).float(),
                torch.stack(torch._foreach_norm(self.weights)).float(),
                torch.stack(stds),
            ])
        self._stds = [None] * len(self.watched)
        for step in steps:
            self._records.append((step, values))

    def state(self) -> list[tuple[int, torch.Tensor]]:
        """The records so far as CPU tensors, for a paused trial's checkpoint."""
        return [(step, values.cpu()) for step, values in self._records]

    def load_state(self, records: list[tuple[int, torch.Tensor]], device: torch.device) -> None:
        self._records = [(int(step), values.to(device)) for step, values in records]

    def rows(self) -> list[dict[str, Any]]:
        """All records as tidy rows (the columns of grad_norms.csv: ablate.run_folder.trial_records.GRAD_NORM_COLUMNS),
        fetched from the device in one go."""
        if not self._records:
            return []
        table = torch.stack([v for _, v in self._records]).cpu().tolist()
        n = len(self.layers)
        out: list[dict[str, Any]] = []
        for (step, _), values in zip(self._records, table):
            grad, weight, std = values[:n], values[n : 2 * n], values[2 * n :]
            for (name, index, block), g, w in zip(self.layers, grad, weight):
                out.append({"step": step, "layer": name, "layer_index": index, "block": block, "kind": "layer",
                            "grad_norm": g, "weight_norm": w, "output_std": None})
            for (name, _), first, members, s in zip(self.watched, self.block_first, self.block_layers, std):
                out.append({
                    "step": step, "layer": name, "layer_index": first, "block": name, "kind": "block",
                    "grad_norm": math.sqrt(sum(grad[i] ** 2 for i in members)),
                    "weight_norm": math.sqrt(sum(weight[i] ** 2 for i in members)),
                    "output_std": s,
                })
        return out
