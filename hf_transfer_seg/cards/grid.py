"""The robustness score grid of a revision card: headline in the YAML, the whole grid in a JSON file.

A revision scored on one target has 90-150 configurations (levels x distances x margins x flat/pooled), each
with an interval, plus the headline's per-image values: 37-39 KB of YAML, over the 8 KB the Hub expects of
card metadata. So the card keeps, per target, only :func:`card_configs` (the headline, the configurations the
paper's tables favour and any failed entry) in ``hf_transfer_seg.robustness[target]``, and the whole grid goes
to :func:`hf_transfer_seg.cards.schema.grid_path` (``robustness/grid_<target>.json``) in the same commit;
``hf_transfer_seg.robustness_targets[target].grid_file`` names that file.

Readers never open the file themselves: :func:`hf_transfer_seg.hub.cards.card_at_sha` / ``read_card``
return the card with ``hf_transfer_seg.robustness`` holding the whole grid again (:func:`merge`), the same
shape as before the move, and fall back to the YAML alone for older cards that still carry the grid there.
"""

from __future__ import annotations

import json
from typing import Any

from hf_transfer_seg.cards.schema import HEADLINE, HIGHLIGHTS, ROBUSTNESS, ROBUSTNESS_TARGETS, grid_path
from hf_transfer_seg.cards.shape import GRID_FILE  # key of robustness_targets[target] naming the JSON file

FORMAT = 1
YAML_DROPPED = ("per_image",)  # entry keys that never stay in the YAML


def card_configs(entries: dict[str, Any], headline: str = HEADLINE) -> dict[str, Any]:
    """The entries a card's YAML keeps: headline, favoured configurations and failures, without per-image values."""
    keep = {headline, *HIGHLIGHTS}
    out = {}
    for config, entry in entries.items():
        if config in keep or (isinstance(entry, dict) and entry.get("status") == "failed"):
            out[config] = {k: v for k, v in entry.items() if k not in YAML_DROPPED} if isinstance(entry, dict) else entry
    return out


def grid_bytes(target_key: str, entries: dict[str, Any]) -> bytes:
    """The JSON file of one target's whole grid (entries as the YAML used to hold them, per-image values included)."""
    return json.dumps({"format": FORMAT, "target": target_key, ROBUSTNESS: entries}, sort_keys=True).encode()


def parse_grid(raw: bytes | str) -> dict[str, Any]:
    """Entries of a grid file ({} for anything that is not one); a file over the bounded JSON loader's size or
    depth (:mod:`hf_transfer_seg.safe_json`) raises its :class:`~hf_transfer_seg.safe_json.JSONLimitError`."""
    from hf_transfer_seg.safe_json import JSONLimitError, loads

    try:
        data = loads(raw)
    except JSONLimitError:
        raise
    except (TypeError, ValueError):
        return {}
    entries = data.get(ROBUSTNESS) if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def merge(yaml_entries: dict[str, Any] | None, file_entries: dict[str, Any] | None) -> dict[str, Any]:
    """The whole grid of a target: the file's entries with the YAML's on top (the YAML is written last: a
    failed re-score marks the headline failed there without rewriting the file)."""
    out = dict(file_entries or {})
    for config, entry in (yaml_entries or {}).items():
        base = out.get(config)
        out[config] = {**base, **entry} if isinstance(base, dict) and isinstance(entry, dict) and entry.get("status") != "failed" else entry
    return out


def grid_files(namespace: dict[str, Any]) -> dict[str, str]:
    """``{target: path}`` of the grid files a card's mapping names."""
    targets = namespace.get(ROBUSTNESS_TARGETS) or {}
    if not isinstance(targets, dict):
        return {}
    return {t: str(info[GRID_FILE]) for t, info in targets.items() if isinstance(info, dict) and info.get(GRID_FILE)}


def target_info(description: str, synthetic: Any, target_key: str) -> dict[str, Any]:
    """``robustness_targets[target]`` of a revision card, naming the grid file."""
    return {"description": description, "synthetic": synthetic, GRID_FILE: grid_path(target_key)}
