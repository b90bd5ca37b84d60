"""Lazy public names: a package maps each name to the module that defines it, imported on first use.

So that ``import hf_hardneg`` (or one of its subpackages) imports neither torch nor transformers until
a name that needs them is used, and a missing optional dependency fails only the names that need it.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``.

    ``exports`` maps a public name to its module (absolute, or relative to ``package`` with a leading
    dot); the value found is stored in ``namespace`` (the package's ``globals()``), so each import
    happens once.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__
