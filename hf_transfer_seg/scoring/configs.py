"""Names of score configurations: ``{distance}_m{margin}_L{level}_{flat|pooled}``, e.g. ``cosine_m0.5_L-1_flat``.

``level`` counts feature stages from the deepest (``-1`` = deepest). Names parse back exactly. The headline
name and the highlighted ones are part of the card contract: :mod:`hf_transfer_seg.cards.schema`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hf_transfer_seg.errors import ConfigError
from hf_transfer_seg.scoring.robustness import DISTANCES, MARGINS

_NAME_RE = re.compile(r"^(cosine|l2|inv_pearson)_m([0-9]+(?:\.[0-9]+)?)_L(-[1-9][0-9]*)_(flat|pooled)\Z")


@dataclass(frozen=True, order=True)
class ScoreConfig:
    distance: str
    margin: float
    level: int  # negative: -1 = deepest stage
    pooled: bool

    @property
    def name(self) -> str:
        return f"{self.distance}_m{self.margin:g}_L{self.level}_{'pooled' if self.pooled else 'flat'}"

    def __str__(self) -> str:
        return self.name


def grid_configs(num_levels: int) -> list[ScoreConfig]:
    """Every configuration of the grid for an encoder with ``num_levels`` feature stages, deepest first."""
    return [
        ScoreConfig(distance, margin, -depth, pooled)
        for depth in range(1, num_levels + 1)
        for pooled in (False, True)
        for distance in DISTANCES
        for margin in MARGINS
    ]


def _valid_names_hint(num_levels: int | None) -> str:
    levels = f"-1..-{num_levels}" if num_levels else "-1 (deepest), -2, ... down to the number of encoder stages"
    examples = ", ".join(c.name for c in grid_configs(1)[:3] + grid_configs(2)[-3:])
    return (
        f"valid names are {{distance}}_m{{margin}}_L{{level}}_{{flat|pooled}} with distance in "
        f"{', '.join(DISTANCES)}, margin in {', '.join(f'{m:g}' for m in MARGINS)}, level in {levels}; "
        f"e.g. {examples}"
    )


def parse_config(name: str, num_levels: int | None = None) -> ScoreConfig:
    """The configuration a name stands for; :class:`ConfigError` listing the valid names otherwise."""
    match = _NAME_RE.match(str(name).strip())
    if not match:
        raise ConfigError(f"unknown score configuration {name!r}; {_valid_names_hint(num_levels)}")
    distance, margin, level, pooling = match.groups()
    margin_value = float(margin)
    if margin_value not in MARGINS:
        raise ConfigError(f"unknown score configuration {name!r}: margin {margin} is not in the grid; {_valid_names_hint(num_levels)}")
    config = ScoreConfig(distance, margin_value, int(level), pooling == "pooled")
    if num_levels is not None and -config.level > num_levels:
        valid = ", ".join(c.name for c in grid_configs(num_levels) if c.distance == distance and c.margin == margin_value and c.pooled == config.pooled)
        raise ConfigError(
            f"score configuration {name!r} asks for level {config.level} but this encoder has only {num_levels} "
            f"feature stages; valid here: {valid} (and the same with other distances/margins/pooling)"
        )
    return config
