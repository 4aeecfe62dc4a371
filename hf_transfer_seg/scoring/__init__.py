"""The label-free robustness score of checkpoint revisions (Hidy, Bakos and Lukács, arXiv 2410.18677).

- :func:`robustness_values` and :func:`derangement`: the score as pure tensor functions;
- :mod:`~hf_transfer_seg.scoring.plan`: images, views, negatives and bootstrap from one seed;
- :mod:`~hf_transfer_seg.scoring.grid`: every configuration from one pass;
- :mod:`~hf_transfer_seg.scoring.runner`: revisions pulled from the Hub, with prefetch;
- :mod:`~hf_transfer_seg.scoring.card`: results written into each revision's card and main's summary;
- :mod:`~hf_transfer_seg.scoring.live`: scoring each checkpoint during pretraining, with early stopping.

Only the pure functions are imported here; the other modules load torch-heavy code on demand.
"""

from hf_transfer_seg.scoring.configs import HEADLINE, ScoreConfig, grid_configs, parse_config
from hf_transfer_seg.scoring.robustness import DISTANCES, MARGINS, derangement, robustness_values

__all__ = [
    "DISTANCES",
    "HEADLINE",
    "MARGINS",
    "ScoreConfig",
    "derangement",
    "grid_configs",
    "parse_config",
    "robustness_values",
]
