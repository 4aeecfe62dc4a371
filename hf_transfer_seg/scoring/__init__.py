"""The label-free robustness score of checkpoint revisions (Hidy, Bakos and Lukács, arXiv 2410.18677).

- :func:`robustness_values` and :func:`derangement`: the score as pure tensor functions;
- :mod:`~hf_transfer_seg.scoring.plan`: images, views, negatives and bootstrap from one seed;
- :mod:`~hf_transfer_seg.scoring.grid`: every configuration from one pass;
- :mod:`~hf_transfer_seg.scoring.runner` / ``pipeline``: revisions pulled from the Hub, with prefetch;
- :mod:`~hf_transfer_seg.scoring.card`: results written into each revision's card and main's summary;
- :mod:`~hf_transfer_seg.scoring.live` (and ``live_cli``): scoring each checkpoint during pretraining.

The names below are loaded on first use, so importing a submodule that needs no torch (``live_cli``,
imported whenever ``hf-transfer-seg pretrain`` parses its flags) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "robustness_values": "robustness",
    "derangement": "robustness",
    "DISTANCES": "robustness",
    "MARGINS": "robustness",
    "HEADLINE": "configs",
    "ScoreConfig": "configs",
    "grid_configs": "configs",
    "parse_config": "configs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"hf_transfer_seg.scoring.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_transfer_seg.scoring' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
