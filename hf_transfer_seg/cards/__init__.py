"""Model cards: the schema every stage reads and writes (``schema``), structured metadata (``data``) kept
apart from the Markdown text (``render``), model-index dataset ids (``dataset_ref``: Hub ids only), the
revision card's robustness grid file (``grid``) and every pushed repo's license (``license``).

``hf_transfer_seg.cards.schema`` imports nothing heavy; the helpers below load on first use
(:mod:`hf_transfer_seg._lazy`), so importing the schema does not import huggingface_hub.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_transfer_seg._lazy import attach

_SUBMOD_ATTRS = {
    "data": ["drop_results", "eval_results_by", "get_namespace", "set_namespace", "upsert_eval_result"],
    "render": ["get_section_text", "render_card", "replace_section"],
}

__getattr__, __dir__, __all__ = attach(__name__, _SUBMOD_ATTRS)

if TYPE_CHECKING:  # pragma: no cover
    from hf_transfer_seg.cards.data import drop_results, eval_results_by, get_namespace, set_namespace, upsert_eval_result
    from hf_transfer_seg.cards.render import get_section_text, render_card, replace_section
