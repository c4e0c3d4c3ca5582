"""The residual-block protocol: how any network tells ablate where its residual connections are.

A user's network marks each residual block by building it as `ablate.Residual(branch, shortcut)`:

    block = ablate.Residual(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d)), residual=residual)

computes `after(branch(x) + shortcut(x))` (`shortcut` None: the identity; `after` None: nothing), and with
`residual=False` the same block without its skip, `after(branch(x))`: the plain twin keeps the same modules, the same
names and the same initialisation, so the two arms differ by the additions alone. That is all a diagnostic needs:

- lesions (Veit et al. 2016) replace a block by its skip path, `bypass(x)` = `after(shortcut(x))` (`after(x)` for
  the identity); a plain block can be dropped where it keeps its input's shape (it becomes the identity);
- signal propagation (Brock et al. 2021) reads the block's output and its branch's output;
- gradient telemetry groups layers by block, and a layer inside a block's `shortcut` takes the index of the first
  layer of that block's branch (the main path's numbering goes through the branches).

The shipped ResNets' blocks (ablate.models.resnet.Block) follow the same protocol with their own modules (conv1,
bn1, conv2, ...): `residual_blocks(model)` lists either kind, in the order the modules were registered.
"""
from __future__ import annotations

import torch
from torch import nn


# Why a diagnostic that needs residual blocks was not run for a network: one line, with the fix.
NO_MARKED_BLOCKS = ("its network marks no residual blocks (build each as ablate.Residual(branch, shortcut, "
                    "residual=...) in the model factory: docs/your-own-network.md)")


class Residual(nn.Module):
    """A residual block: `after(branch(x) + shortcut(x))`, or `after(branch(x))` with residual=False.

    branch: the block's residual branch F (any module); shortcut: the skip path (None: the identity; a module where
    the branch changes the shape, e.g. a linear projection or a 1x1 conv); after: a module applied to the sum (e.g.
    the ReLU that ends a post-activation block; None: nothing). With residual=False the skip is not computed (a
    shortcut module given anyway keeps its parameters, untrained)."""

    def __init__(self, branch: nn.Module, shortcut: nn.Module | None = None, *, residual: bool = True,
                 after: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(branch, nn.Module):
            raise TypeError(f"Residual's branch must be a torch.nn.Module, got {type(branch).__name__}")
        for what, module in (("shortcut", shortcut), ("after", after)):
            if module is not None and not isinstance(module, nn.Module):
                raise TypeError(f"Residual's {what} must be a torch.nn.Module or None, got {type(module).__name__}")
        # The shortcut is registered before the branch and runs first, so that in forward order its layers come
        # before the branch's, as a block's input side.
        self.shortcut = shortcut
        self.branch = branch
        self.after = after
        self.residual = bool(residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = (x if self.shortcut is None else self.shortcut(x)) if self.residual else None
        out = self.branch(x)
        if skip is not None:
            out = out + skip
        return out if self.after is None else self.after(out)

    def bypass(self, x: torch.Tensor) -> torch.Tensor:
        """The block with its branch removed: after(shortcut(x)), after(x) for the identity skip (and for a plain
        block without a shortcut). The input is copied first: `after` may work in place."""
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip.clone() if self.after is None else self.after(skip.clone())

    @property
    def branch_output(self) -> nn.Module:
        """The module whose output is the residual branch F(x) (for hooks)."""
        return self.branch

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(module name, block) of every residual block the model marks by the protocol: its ablate.Residual modules
    and the shipped ResNets' blocks (ablate.models.resnet.Block), in registration order. An empty list when it marks
    none."""
    from ablate.models.resnet import Block

    return [(name, m) for name, m in model.named_modules() if isinstance(m, (Residual, Block))]
