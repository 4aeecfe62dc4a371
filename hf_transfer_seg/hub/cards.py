"""Read and edit the model card *of a given revision*, safely under concurrent writers.

``metadata_update(revision=...)`` reads main's card and overwrites the revision's own, so it is
never used here. Instead: resolve the branch head, download README.md at that sha, edit it,
commit with ``parent_commit=<that sha>``; on HTTP 412 (someone else committed first) start again.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Callable

from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

from hf_transfer_seg.errors import CardConflictError
from hf_transfer_seg.hub.retry import with_retries
from hf_transfer_seg.hub.revisions import branch_sha
from hf_transfer_seg.safe_yaml import load_card

log = logging.getLogger(__name__)

CardEdit = Callable[[ModelCard], "ModelCard | None"]


def read_card(
    repo_id: str, revision: str = "main", *, repo_type: str = "model", api: HfApi | None = None
) -> tuple[ModelCard, str]:
    """The card at ``revision`` and the commit sha it was read from (an empty card if none exists)."""
    api = api or HfApi()
    sha = branch_sha(repo_id, revision, repo_type=repo_type, api=api)
    return card_at_sha(repo_id, sha, repo_type=repo_type), sha


def card_at_sha(repo_id: str, sha: str, *, repo_type: str = "model") -> ModelCard:
    """The card at commit ``sha`` (an empty card if none exists); no branch is resolved."""
    try:
        path = with_retries(
            lambda: hf_hub_download(repo_id, "README.md", revision=sha, repo_type=repo_type),
            what=f"download README.md of {repo_id}@{sha[:10]}",
        )
    except EntryNotFoundError:
        return ModelCard("---\n{}\n---\n")
    return load_card(Path(path), where=f"README.md of {repo_id}@{sha[:10]}")


def _is_conflict(exc: BaseException) -> bool:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return isinstance(exc, HfHubHTTPError) and status in (409, 412)


def update_card(
    repo_id: str,
    revision: str,
    edit: CardEdit,
    *,
    commit_message: str,
    extra_files: dict[str, bytes] | None = None,
    repo_type: str = "model",
    attempts: int = 12,
    api: HfApi | None = None,
) -> str:
    """Apply ``edit`` to the card of branch ``revision`` and commit it there; return the new commit sha.

    ``edit`` receives the card as it is at the branch head and returns the edited card (or edits it
    in place and returns None). It may run several times if other writers win the race, so it must
    be a pure function of the card it is given. ``extra_files`` (path -> bytes, e.g. a plot) are
    committed in the same commit. Raises :class:`CardConflictError` if every attempt lost the race.
    """
    api = api or HfApi()
    for attempt in range(1, attempts + 1):
        sha = branch_sha(repo_id, revision, repo_type=repo_type, api=api)
        card = card_at_sha(repo_id, sha, repo_type=repo_type)
        edited = edit(card) or card
        with tempfile.TemporaryDirectory() as tmp:
            readme = Path(tmp) / "README.md"
            edited.save(readme)
            operations = [CommitOperationAdd("README.md", readme.read_bytes())]
            for path, data in (extra_files or {}).items():
                operations.append(CommitOperationAdd(path, data))
            try:
                info = with_retries(
                    lambda: api.create_commit(
                        repo_id,
                        operations=operations,
                        commit_message=commit_message,
                        revision=revision,
                        repo_type=repo_type,
                        parent_commit=sha,
                    ),
                    what=f"commit card of {repo_id}@{revision}",
                )
            except HfHubHTTPError as exc:
                if not _is_conflict(exc):
                    raise
                delay = min(2.0, 0.05 * 2 ** min(attempt, 6)) * (0.5 + random.random())
                log.debug("card of %s@%s changed under us (attempt %d); retrying", repo_id, revision, attempt)
                time.sleep(delay)
                continue
        if info is None:  # nothing changed: the client skipped an empty commit
            return sha
        return info.oid
    raise CardConflictError(
        f"gave up editing the card of {repo_id}@{revision} after {attempts} attempts: other writers kept "
        "committing first. Nothing was lost; run the command again."
    )
