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


# ------------------------------------------------------------------------------------- lean imports
#
# MONAI and evaluate import optional libraries eagerly at their own import, whichever part is used: any
# ``monai.*`` runs ``monai/__init__`` (which imports every subpackage; MONAI's subpackages import each other in
# a circle, so one cannot be imported alone), and ``monai.utils`` alone pulls pandas, matplotlib.pyplot,
# scikit-learn and scipy.signal through ``optional_import``; ``import evaluate`` pulls transformers' pipelines
# and scipy.stats for its ``evaluator``. The metrics and sliding windows this project calls use none of them.
# A command-line process (``cli.main`` turns this on) imports those two libraries with the unused optional
# libraries reported absent, so their ``optional_import`` / ``try: import`` fall back to the placeholders they
# have for a missing package: about 2.9 CPU-seconds less per fine-tune process (benchmarks/import_time.py).
# Side effect, in that process only: the parts of MONAI / evaluate that need those libraries (monai.visualize,
# MONAI's profiling and embedding-collapse metric, evaluate.evaluator) say the library is missing. Library
# users (``import hf_transfer_seg`` in their own code) get the full imports: the switch is off by default.

MONAI_UNUSED = ("sklearn", "pandas", "matplotlib", "scipy.signal", "transformers", "nibabel", "pydicom", "skimage", "ignite")
EVALUATE_UNUSED = ("transformers", "scipy.stats")
_lean = False


def lean_imports(on: bool = True) -> None:
    """Import MONAI and evaluate without their unused optional libraries from now on (see above)."""
    global _lean
    _lean = on


def import_lean(module: str, unused: tuple[str, ...]):
    """``importlib.import_module(module)``; when lean imports are on and ``module``'s package is not imported yet,
    the libraries in ``unused`` that are not imported yet are reported absent while it imports (and only then:
    importing them afterwards works as usual). Not thread-safe against another thread importing them meanwhile."""
    if not _lean or module.partition(".")[0] in sys.modules:
        return importlib.import_module(module)
    blocked = [name for name in unused if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "absent" marker
    try:
        return importlib.import_module(module)
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
