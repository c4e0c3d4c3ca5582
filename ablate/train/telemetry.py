"""Gradient telemetry: per-layer gradient/weight norms and per-block output std on chosen steps."""
from __future__ import annotations

import math
from typing import Any

import torch


def records_blocks(model: torch.nn.Module) -> bool:
    """Whether GradTelemetry can watch this model: any module with a weight matrix (a parameter of two or more
    dimensions) can; a model without one has nothing to record."""
    return any(p.dim() >= 2 for p in model.parameters())


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
    `position`), numbered in forward order: the order in which their modules are first called in the first recorded
    forward pass (pre-hooks on every module, that pass only; the order is kept with the records of a paused trial),
    a parameter of a module with children taking that module's place, one of a module never called itself
    (nn.MultiheadAttention's out_proj) its nearest called ancestor's. Before any recorded pass, the registration
    order stands. A layer inside a marked
    block's shortcut (ablate.Residual) takes the index of the first layer of that block's branch, as a ResNet's
    projection does. Blocks are the residual blocks the network marks (ablate.models.residual_blocks), by module
    name; its other layers belong to no block (block "").

    Cost model: nothing at all on unrecorded steps (no hooks are registered); on a recorded step
    one `_foreach_norm` over the gradients and one over the weights, a std per block from forward
    hooks, all kept on the device; everything is fetched to the host once, by `rows()`.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model
        self._order: list[str] | None = None  # a user's network: module names in forward order, once seen
        self._order_handles: list[Any] = []
        if _is_resnet(model):
            self._resnet_layout(model)
        else:
            self._module_layout(model, [])
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
        self.rows_order = list(range(len(self.layers)))
        self._block_first()

    def _block_first(self) -> None:
        self.block_first = [min((self.layers[i][1] for i in members), default=-1) for members in self.block_layers]

    def _module_layout(self, model: torch.nn.Module, order: list[str]) -> None:
        """The layers of a user's network, given the order its modules are first called in ([]: not seen yet).
        `weights`, and so each record, keep the registration order whatever the order: `layers[i]` describes
        `weights[i]`, and `rows_order` lists the layers in forward order."""
        from ablate.models import Residual, residual_blocks

        blocks = residual_blocks(model)
        rank = {name: i for i, name in enumerate(order)}
        entries = []  # (call rank, registration rank, layer name, owning module's name, parameter)
        for pname, param in model.named_parameters():
            if param.dim() < 2:
                continue
            owner = pname.rpartition(".")[0]
            layer = owner if pname.endswith(".weight") and owner else pname
            entries.append((_call_rank(rank, owner), len(entries), layer, owner, param))
        forward = sorted(entries, key=lambda e: (e[0], e[1]))

        def inside(name: str, module_name: str) -> bool:
            return module_name == "" or name == module_name or name.startswith(module_name + ".")

        def block_of(owner: str) -> str:
            return max((b for b, _ in blocks if inside(owner, b)), key=len, default="")

        shortcut_of = {}  # owner -> the block whose shortcut holds it
        for b, module in blocks:
            if isinstance(module, Residual) and module.shortcut is not None:
                for sub, _ in module.shortcut.named_modules():
                    shortcut_of[f"{b}.shortcut" + (f".{sub}" if sub else "")] = b
        main = [e for e in forward if e[3] not in shortcut_of]
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
        self.rows_order = [e[1] for e in forward]
        self.watched = list(blocks)
        self.block_layers = [[i for i, (_, _, b) in enumerate(self.layers) if b == name or b.startswith(name + ".")]
                             for name, _ in self.watched]
        self._block_first()

    def _learn_order(self, order: list[str]) -> None:
        self._order = order
        self._module_layout(self._model, order)

    def _capture_hook(self, i: int):
        def hook(_module, _inputs, output):
            self._stds[i] = output.detach().float().std()
        return hook

    def arm(self) -> None:
        """Capture block output stds during the next forward pass (and a user's network's module order, the first
        time)."""
        self._handles = [m.register_forward_hook(h) for (_, m), h in zip(self.watched, self._hooks)]
        if self._order is None and not _is_resnet(self._model):
            seen: list[str] = []

            def called(name: str) -> None:
                if name not in seen:
                    seen.append(name)

            self._order_handles = [m.register_forward_pre_hook(lambda _m, _args, name=name: called(name))
                                   for name, m in self._model.named_modules()]
            self._seen = seen

    def disarm(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._order_handles:
            for handle in self._order_handles:
                handle.remove()
            self._order_handles = []
            self._learn_order(self._seen)

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

    def state(self) -> dict[str, Any]:
        """The records so far as CPU tensors, and a user's network's module order, for a paused trial's checkpoint."""
        return {"records": [(step, values.cpu()) for step, values in self._records], "order": self._order}

    def load_state(self, state: dict[str, Any] | list, device: torch.device) -> None:
        """What `state` gave (a list of records alone: a checkpoint written before the order was kept)."""
        records, order = (state, None) if isinstance(state, list) else (state["records"], state.get("order"))
        self._records = [(int(step), values.to(device)) for step, values in records]
        if order is not None and not _is_resnet(self._model):
            self._learn_order(list(order))

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
            for i in self.rows_order:  # forward order
                name, index, block = self.layers[i]
                out.append({"step": step, "layer": name, "layer_index": index, "block": block, "kind": "layer",
                            "grad_norm": grad[i], "weight_norm": weight[i], "output_std": None})
            for (name, _), first, members, s in zip(self.watched, self.block_first, self.block_layers, std):
                out.append({
                    "step": step, "layer": name, "layer_index": first, "block": name, "kind": "block",
                    "grad_norm": math.sqrt(sum(grad[i] ** 2 for i in members)),
                    "weight_norm": math.sqrt(sum(weight[i] ** 2 for i in members)),
                    "output_std": s,
                })
        return out
