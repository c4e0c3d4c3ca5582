"""Gradient telemetry: per-layer gradient/weight norms and per-block output std on chosen steps."""
from __future__ import annotations

import math
from typing import Any

import torch


def records_blocks(model: torch.nn.Module) -> bool:
    """Whether GradTelemetry can watch this model: any module with a weight matrix (a parameter of two or more
    dimensions) can; a model without one has nothing to record."""
    return any(p.dim() >= 2 for p in model.parameters())


def forward_order(model: torch.nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """The names of the model's modules in the order they are first called by one forward pass, on a storage-free
    (meta) copy of it and an input of `input_shape` (batch first): no computation, no random number drawn, the
    model itself untouched. Modules the pass never calls are left out; a network that cannot run on the meta
    device gives [] (its layers then keep their registration order)."""
    import copy

    meta = copy.deepcopy(model).to("meta")
    order: list[str] = []
    seen: set[str] = set()

    def called(name: str) -> None:
        if name not in seen:
            seen.add(name)
            order.append(name)

    for name, module in meta.named_modules():
        module.register_forward_pre_hook(lambda m, args, name=name: called(name))
    try:
        with torch.no_grad():
            meta(torch.empty((min(input_shape[0], 2), *input_shape[1:]), device="meta"))
    except Exception:  # an operation without a meta kernel: the registration order stands
        return []
    return order


def _call_rank(rank: dict[str, int], owner: str) -> int:
    """Where a parameter's module comes in forward order: its own first call, else (a module whose weight its
    parent uses directly, as nn.MultiheadAttention does its out_proj's) its nearest called ancestor's; after every
    called module when none was called."""
    name = owner
    while True:
        if name in rank:
            return rank[name]
        if not name:
            return len(rank)
        name = name.rpartition(".")[0]


def _is_resnet(model: torch.nn.Module) -> bool:
    from ablate.models import ResNet

    return isinstance(model, ResNet)


class GradTelemetry:
    """Gradient and response statistics of one model, recorded on chosen steps only.

    A shipped ResNet: layers are the conv/linear modules in forward order, named by module. `layer_index` counts the
    main path from the input (0 = stem conv, depth - 1 = classifier), so a plain net and its residual twin share
    indices layer for layer; a 1x1 projection shortcut takes the index of its block's first conv (its input is that
    conv's input) and is told apart by `.shortcut.` in its name. Blocks are `stem`, each residual block by module
    name (`stages.1.0`), and `head` (the classifier; its output std is the std of the logits).

    Any other network (a user's): layers are its weight matrices (each parameter of two or more dimensions), named by
    the parameter's name without a trailing `.weight` (`blocks.0.branch.1`, `blocks.0.attn.in_proj_weight`,
    `position`), numbered in forward order: the order in which their modules are first called in one forward pass
    (`forward_order`), a parameter of a module with children taking that module's place, one of a module never
    called itself (nn.MultiheadAttention's out_proj) its nearest called ancestor's. A layer inside a marked
    block's shortcut (ablate.Residual) takes the index of the first layer of that block's branch, as a ResNet's
    projection does. Blocks are the residual blocks the network marks (ablate.models.residual_blocks), by module
    name; its other layers belong to no block (block "").

    Cost model: nothing at all on unrecorded steps (no hooks are registered); on a recorded step
    one `_foreach_norm` over the gradients and one over the weights, a std per block from forward
    hooks, all kept on the device; everything is fetched to the host once, by `rows()`.
    """

    def __init__(self, model: torch.nn.Module, input_shape: tuple[int, ...] | None = None) -> None:
        if _is_resnet(model):
            self._resnet_layout(model)
        else:
            self._module_layout(model, input_shape)
        self.block_first = [min((self.layers[i][1] for i in members), default=-1) for members in self.block_layers]
        self._stds: list[torch.Tensor | None] = [None] * len(self.watched)
        self._hooks = [self._capture_hook(i) for i in range(len(self.watched))]
        self._handles: list[Any] = []
        self._records: list[tuple[int, torch.Tensor]] = []

    def _resnet_layout(self, model: torch.nn.Module) -> None:
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
        self.block_layers = [[i for i, (_, _, b) in enumerate(self.layers) if b == name] for name, _ in self.watched]

    def _module_layout(self, model: torch.nn.Module, input_shape: tuple[int, ...] | None) -> None:
        from ablate.models import Residual, residual_blocks

        blocks = residual_blocks(model)
        order = forward_order(model, input_shape) if input_shape is not None else []
        rank = {name: i for i, name in enumerate(order)}
        owners = dict(model.named_modules())
        entries = []  # (call rank, registration rank, layer name, owning module's name, parameter)
        for position, (pname, param) in enumerate(model.named_parameters()):
            if param.dim() < 2:
                continue
            owner = pname.rpartition(".")[0]
            layer = owner if pname.endswith(".weight") and owner else pname
            entries.append((_call_rank(rank, owner), position, layer, owner, param))
        entries.sort(key=lambda e: (e[0], e[1]))

        def inside(name: str, module_name: str) -> bool:
            return module_name == "" or name == module_name or name.startswith(module_name + ".")

        def block_of(owner: str) -> str:
            return max((b for b, _ in blocks if inside(owner, b)), key=len, default="")

        shortcut_of = {}  # owner -> the block whose shortcut holds it
        for b, module in blocks:
            if isinstance(module, Residual) and module.shortcut is not None:
                for sub, _ in module.shortcut.named_modules():
                    shortcut_of[f"{b}.shortcut" + (f".{sub}" if sub else "")] = b
        main = [e for e in entries if e[3] not in shortcut_of]
        index_of = {id(e): i for i, e in enumerate(main)}
        first_main: dict[str, int] = {}
        for e in main:
            b = block_of(e[3])
            if b:
                first_main.setdefault(b, index_of[id(e)])
        self.layers = []
        for e in entries:
            owner = e[3]
            if owner in shortcut_of:
                block = shortcut_of[owner]
                index = first_main.get(block, len(main))
            else:
                block, index = block_of(owner), index_of[id(e)]
            self.layers.append((e[2], index, block))
        self.weights = [e[4] for e in entries]
        self.watched = list(blocks)
        self.block_layers = [[i for i, (_, _, b) in enumerate(self.layers) if b == name or b.startswith(name + ".")]
                             for name, _ in self.watched]

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
                torch.stack(stds) if stds else missing.new_empty(0),  # a network that marks no block
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
