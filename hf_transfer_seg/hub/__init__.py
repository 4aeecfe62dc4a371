"""The Hub revision layer: every Hub call of hf-transfer-seg goes through here and huggingface_hub.

Attributes load lazily (:mod:`hf_transfer_seg._lazy`), so importing this package does not import
huggingface_hub: its endpoint (``HF_ENDPOINT``) is read at import time, and the demo sets it only once
the local hub is up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_transfer_seg._lazy import attach

_SUBMOD_ATTRS = {
    "cards": ["card_at_sha", "read_card", "robustness_grid", "update_card", "with_grid"],
    "retry": ["with_retries"],
    "revisions": [
        "RevisionInfo",
        "branch_sha",
        "check_write_access",
        "download_revision",
        "ensure_repo",
        "list_revisions",
        "parse_revision_name",
        "push_revision",
        "revision_name",
        "select_revisions",
    ],
    "hf_transfer_seg.redact": ["redact"],
}

__getattr__, __dir__, __all__ = attach(__name__, _SUBMOD_ATTRS)

if TYPE_CHECKING:  # pragma: no cover
    from hf_transfer_seg.hub.cards import card_at_sha, read_card, robustness_grid, update_card, with_grid
    from hf_transfer_seg.hub.retry import with_retries
    from hf_transfer_seg.hub.revisions import (
        RevisionInfo,
        branch_sha,
        check_write_access,
        download_revision,
        ensure_repo,
        list_revisions,
        parse_revision_name,
        push_revision,
        revision_name,
        select_revisions,
    )
    from hf_transfer_seg.redact import redact
