"""Lazy public names of a package, from one table (the model: huggingface_hub's ``_SUBMOD_ATTRS``).

A package lists which of its submodules defines each public name; the submodule is imported on first
use of the name. So ``import hf_transfer_seg.hub`` does not import huggingface_hub (whose endpoint is
read at import time), and ``import hf_transfer_seg.scoring`` or ``.finetune`` does not import torch::

    _SUBMOD_ATTRS = {"cards": ["read_card", "update_card"], "revisions": ["branch_sha"]}
    __getattr__, __dir__, __all__ = attach(__name__, _SUBMOD_ATTRS)

A submodule path may be absolute (``hf_transfer_seg.redact``) to re-export a name from elsewhere.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def attach(package: str, submod_attrs: dict[str, list[str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package`` serving the names of ``submod_attrs`` lazily."""
    where = {name: module for module, names in submod_attrs.items() for name in names}
    public = sorted(where)

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        path = module if module.startswith("hf_transfer_seg.") else f"{package}.{module}"
        value = getattr(importlib.import_module(path), name)
        setattr(sys.modules[package], name, value)  # the next access skips __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(public))

    return __getattr__, __dir__, public
