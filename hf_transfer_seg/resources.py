"""Locate the folders shipped beside the package: model card templates, the Space, accelerate configs.

In a wheel they live in ``hf_transfer_seg/_resources/``; in a source checkout (editable install)
they are the top-level ``model_cards/``, ``spaces/`` and ``accelerate_configs/`` folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_path(name: str) -> Path:
    """Path of the shipped folder ``name`` (``model_cards``, ``spaces`` or ``accelerate_configs``)."""
    for candidate in (_PACKAGE / "_resources" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"resource folder {name!r} is missing from this installation; reinstall hf-transfer-seg")
