"""README.md cards as the local hub reads them: on commit (refused with the reason) and on read (never a 500).

Every card goes through the package's one bounded YAML loader (:mod:`hf_transfer_seg.safe_yaml`: front
matter size, node count, depth and aliases are capped). On commit, :func:`card_problems` lists what the
Hub would refuse (:mod:`.metadata_rules`, numbers included). On read, a card that cannot be read (pushed
with git past those checks, or written before them) leaves ``cardData`` out and the rest of ``repo_info``
answers 200; values JSON cannot hold are written as JSON's ``null``, as the Hub's JavaScript serializer
writes ``NaN`` and ``Infinity``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import yaml

from hf_transfer_seg import safe_yaml
from hf_transfer_seg.localhub import storage as st
from hf_transfer_seg.localhub.metadata_rules import MAX_NUMBER, check_metadata

log = logging.getLogger(__name__)

MAX_README_READ = 4 << 20  # a README.md larger than this is not read for its card on repo_info
CACHE_CARD_BELOW = 64 << 10  # parsed cards of READMEs smaller than this are kept (by blob sha); verdicts always
# README blob sha -> (card,): blobs are content-addressed, so a card refused once (up to ~1 s to find out for
# 100,000 nodes) is not parsed again by every repo_info
_CARDS = st._LRU(512)


def parse_card(text: str) -> dict | None:
    """YAML front matter of a README.md as a dict, or None (no block, or not a mapping).

    Too large, too many nodes, too deep, too many aliases or an alias expansion too large raise
    :class:`yaml.YAMLError` like any other bad YAML."""
    return safe_yaml.front_matter(text)


def card_problems(text: str, repo_type: str) -> list[str]:
    """What the Hub would refuse in the front matter of ``text`` (a README.md); empty when accepted."""
    try:
        return check_metadata(parse_card(text), repo_type)
    except yaml.YAMLError as exc:
        return [f"invalid YAML front matter: {safe_yaml.describe(exc)}"]


def json_safe(value: Any) -> Any:
    """``value`` as JSON can carry it: dates and other non-JSON scalars as strings, NaN, infinities and
    integers beyond a double as ``None`` (what ``JSON.stringify`` writes for them)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value if abs(value) <= MAX_NUMBER else None
    if value is None or isinstance(value, (str, bool)):
        return value
    return str(value)


def read_card(repo: st.Repo, tree: dict[str, st.Entry]) -> dict | None:
    """The JSON-safe front matter of ``README.md`` in ``tree``; None when absent, too large or unreadable."""
    entry = tree.get("README.md")
    if entry is None or entry.kind != "file" or entry.size > MAX_README_READ:
        return None
    cached = _CARDS.get(entry.oid)
    if cached is not None:
        return cached[0]
    card = None
    try:
        parsed = parse_card(repo.read_blob(entry.oid).decode("utf-8", "replace"))
        card = json_safe(parsed) if parsed is not None else None
    except yaml.YAMLError:
        pass
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:  # a read must answer, card or not
        log.warning("local hub: README.md of %s (%s) cannot be read as a card: %s", repo.repo_id, entry.oid,
                    type(exc).__name__)
    if card is None or entry.size < CACHE_CARD_BELOW:
        _CARDS.put(entry.oid, (card,))
    return card


def add_card_fields(info: dict, card: dict | None, repo_type: str, meta: dict) -> None:
    """The ``repo_info`` fields the Hub derives from the card: cardData, tags, library_name, sdk..."""
    if card is not None:
        info["cardData"] = card
        tags = card.get("tags")
        info["tags"] = [str(t) for t in tags] if isinstance(tags, list) else ([str(tags)] if tags else [])
    if repo_type == "model" and card:
        for key in ("library_name", "pipeline_tag"):
            if isinstance(card.get(key), str):
                info[key] = card[key]
                if key == "library_name" and card[key] not in info["tags"]:
                    info["tags"].append(card[key])
    elif repo_type == "space":
        info["sdk"] = (card or {}).get("sdk") or meta.get("sdk")
    elif repo_type == "dataset":
        info["description"] = (card or {}).get("pretty_name") or ""
