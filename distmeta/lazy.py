"""Names of a package imported on first use (PEP 562), so that importing the package loads
neither torch nor Ray until a name that needs them is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_names(package: str, where: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` that imports `name` from the module `where[name]`."""

    def __getattr__(name: str) -> object:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module '{package}' has no attribute '{name}'")

    return __getattr__
