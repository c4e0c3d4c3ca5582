"""A package's names loaded when first used (PEP 562), so that importing one module of a package does not import
its heavy neighbours (torch, Ray, plotting libraries): what spec parsing, planning and loading a run folder import
stays torch-free."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_names(package: str, modules: dict[str, list[str]]) -> tuple[Callable[[str], Any], list[str]]:
    """The module-level `__getattr__` of `package` and the names it exports: `modules` maps each submodule
    (relative to the package) to the names taken from it; a name is imported from there when first used and read
    from there on every use, so that the package's name is always the module's (one patched in the module, as a
    test injecting a fault does, is patched for importers of the package too). Use:
    `__getattr__, __all__ = lazy_names(__name__, {...})`."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return __getattr__, sorted(where)
