"""The Hub revision layer: every Hub call of hf-transfer-seg goes through here and huggingface_hub."""

from hf_transfer_seg.hub.cards import read_card, update_card
from hf_transfer_seg.hub.redact import redact
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

__all__ = [
    "RevisionInfo",
    "branch_sha",
    "check_write_access",
    "download_revision",
    "ensure_repo",
    "list_revisions",
    "parse_revision_name",
    "push_revision",
    "read_card",
    "redact",
    "revision_name",
    "select_revisions",
    "update_card",
    "with_retries",
]
