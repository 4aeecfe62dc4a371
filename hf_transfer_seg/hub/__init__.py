"""The Hub revision layer: every Hub call of hf-transfer-seg goes through here and huggingface_hub.

Attributes load lazily, so importing ``hf_transfer_seg.hub.redact`` (as the CLI does for every
command) does not import huggingface_hub: its endpoint (``HF_ENDPOINT``) is read at import time,
and the demo sets it only once the local hub is up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Eager, and light: a submodule import would otherwise leave the *module* ``redact`` as this package's
# attribute, shadowing the function of the same name.
from hf_transfer_seg.hub.redact import redact  # noqa: E402

_EXPORTS = {
    "read_card": "cards",
    "update_card": "cards",
    "with_retries": "retry",
    "RevisionInfo": "revisions",
    "branch_sha": "revisions",
    "check_write_access": "revisions",
    "download_revision": "revisions",
    "ensure_repo": "revisions",
    "list_revisions": "revisions",
    "parse_revision_name": "revisions",
    "push_revision": "revisions",
    "revision_name": "revisions",
    "select_revisions": "revisions",
}

__all__ = sorted([*_EXPORTS, "redact"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from hf_transfer_seg.hub.cards import read_card, update_card
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
