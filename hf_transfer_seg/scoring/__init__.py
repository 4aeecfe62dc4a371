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

from hf_transfer_seg._lazy import attach

_SUBMOD_ATTRS = {
    "robustness": ["robustness_values", "derangement", "DISTANCES", "MARGINS"],
    "configs": ["ScoreConfig", "grid_configs", "parse_config"],
    "hf_transfer_seg.cards.schema": ["HEADLINE"],
}

__getattr__, __dir__, __all__ = attach(__name__, _SUBMOD_ATTRS)
