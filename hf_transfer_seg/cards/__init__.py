"""Model cards: structured metadata (``data``) kept apart from the Markdown text (``render``)."""

from hf_transfer_seg.cards.data import (
    get_namespace,
    set_namespace,
    upsert_eval_result,
)
from hf_transfer_seg.cards.render import render_card, replace_section, get_section_text

__all__ = [
    "get_namespace",
    "set_namespace",
    "upsert_eval_result",
    "render_card",
    "replace_section",
    "get_section_text",
]
