"""Read and edit the model card *of a given revision*, safely under concurrent writers.

``metadata_update(revision=...)`` reads main's card and overwrites the revision's own, so it is
never used here. Instead: resolve the branch head, download README.md at that sha, edit it,
commit with ``parent_commit=<that sha>``; on HTTP 412 (someone else committed first) start again.

Readers get a revision card's whole robustness grid back in ``hf_transfer_seg.robustness`` (the YAML holds only
the headline; the grid is a JSON file of the same commit, :mod:`hf_transfer_seg.cards.grid`): :func:`read_card`
and :func:`card_at_sha` merge it in (``grid=True``), :func:`robustness_grid` returns it alone. Writers
(:func:`update_card`) edit the card as stored, so the grid never comes back into the YAML.
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
from hf_transfer_seg.cards.grid import parse_grid
from hf_transfer_seg.safe_yaml import load_card

log = logging.getLogger(__name__)

CardEdit = Callable[[ModelCard], "ModelCard | None"]


def read_card(
    repo_id: str, revision: str = "main", *, repo_type: str = "model", grid: bool = True, api: HfApi | None = None
) -> tuple[ModelCard, str]:
    """The card at ``revision`` and the commit sha it was read from (an empty card if none exists); with
    ``grid`` (the default) ``hf_transfer_seg.robustness`` holds the whole grid (:func:`with_grid`)."""
    api = api or HfApi()
    sha = branch_sha(repo_id, revision, repo_type=repo_type, api=api)
    return card_at_sha(repo_id, sha, repo_type=repo_type, grid=grid), sha


def card_at_sha(repo_id: str, sha: str, *, repo_type: str = "model", grid: bool = True) -> ModelCard:
    """The card at commit ``sha`` (an empty card if none exists); no branch is resolved. With ``grid`` (the
    default) the robustness grid files the card names are merged into its mapping (:func:`with_grid`): read it,
    never write it back (:func:`update_card` reads with ``grid=False``)."""
    card = _stored_card(repo_id, sha, repo_type=repo_type)
    return with_grid(card, repo_id, sha, repo_type=repo_type) if grid else card


def _grid_entries(repo_id: str, sha: str, path: str, *, repo_type: str = "model") -> dict:
    """Entries of the grid file ``path`` at ``sha`` ({} when it is missing or unreadable: the YAML is kept)."""
    from hf_transfer_seg.cards.shape import BadCard
    from hf_transfer_seg.safe_json import JSONLimitError

    try:
        local = with_retries(
            lambda: hf_hub_download(repo_id, path, revision=sha, repo_type=repo_type),
            what=f"download {path} of {repo_id}@{sha[:10]}",
        )
        return parse_grid(Path(local).read_bytes())
    except JSONLimitError as exc:
        raise BadCard(f"the grid file {path} of {repo_id}@{sha[:10]} is not usable: {exc}; fix or re-push that card") from None
    except (EntryNotFoundError, OSError) as exc:
        log.warning("%s of %s@%s is not readable (%s); using the card's YAML only", path, repo_id, sha[:10], exc)
        return {}


def with_grid(card: ModelCard, repo_id: str, sha: str, *, repo_type: str = "model") -> ModelCard:
    """``card`` (read at ``sha``) with ``hf_transfer_seg.robustness[target]`` = the whole grid of each target whose
    grid file the card names, the YAML's entries on top; cards without grid files are returned unchanged.

    The card is checked first (:func:`hf_transfer_seg.cards.shape.check_card`): a mapping of the wrong shape or a
    ``grid_file`` outside the repository raises :class:`~hf_transfer_seg.cards.shape.BadCard`, as does a grid file
    over the bounded JSON loader's limits; nothing outside the repository is ever requested."""
    from hf_transfer_seg.cards.data import get_namespace, set_namespace
    from hf_transfer_seg.cards.grid import grid_files, merge
    from hf_transfer_seg.cards.schema import ROBUSTNESS
    from hf_transfer_seg.cards.shape import check_card

    check_card(card.data, f"{repo_id}@{sha[:10]}")
    files = grid_files(get_namespace(card.data))
    if not files:
        return card
    robustness = get_namespace(card.data, ROBUSTNESS, {}) or {}
    for target, path in files.items():
        robustness[target] = merge(robustness.get(target), _grid_entries(repo_id, sha, path, repo_type=repo_type))
    set_namespace(card.data, ROBUSTNESS, robustness)
    return card


def robustness_grid(repo_id: str, revision: str = "main", *, api: HfApi | None = None) -> dict[str, dict]:
    """``{target: {config: entry}}`` of a revision: the whole grid (grid files, else an older card's YAML)."""
    from hf_transfer_seg.cards.data import get_namespace
    from hf_transfer_seg.cards.schema import ROBUSTNESS

    card, _ = read_card(repo_id, revision, api=api)
    return get_namespace(card.data, ROBUSTNESS, {}) or {}


def _stored_card(repo_id: str, sha: str, *, repo_type: str = "model") -> ModelCard:
    """README.md at ``sha`` as stored (an empty card if none exists)."""
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
        card = _stored_card(repo_id, sha, repo_type=repo_type)
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
