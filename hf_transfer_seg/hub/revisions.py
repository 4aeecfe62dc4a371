"""Checkpoint revisions: one branch per scheduled checkpoint (``epoch-0005``), all through huggingface_hub."""

from __future__ import annotations

import logging
import math
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from hf_transfer_seg.errors import ConfigError, HubError, HubWriteAccessError, RevisionNotFound
from hf_transfer_seg.hub.retry import with_retries
from hf_transfer_seg.redact import redact

log = logging.getLogger(__name__)

_REVISION_RE = re.compile(r"^epoch-(\d{4,})(?:\.(\d+))?\Z")


def revision_name(epoch: float) -> str:
    """Branch name of the checkpoint taken at ``epoch``: ``epoch-0005``, or ``epoch-0000.25`` for fractions.

    Names sort lexicographically in epoch order.
    """
    if epoch < 0 or not math.isfinite(epoch):
        raise ConfigError(f"checkpoint epoch must be a finite number >= 0, got {epoch!r}")
    whole = int(math.floor(epoch))
    frac = round(epoch - whole, 6)
    if frac == 0:
        return f"epoch-{whole:04d}"
    digits = f"{frac:.6f}"[2:].rstrip("0")
    return f"epoch-{whole:04d}.{digits}"


def parse_revision_name(name: str) -> float | None:
    """Epoch of a checkpoint branch name, or None when ``name`` is not one."""
    match = _REVISION_RE.match(name)
    if not match:
        return None
    return float(f"{int(match.group(1))}.{match.group(2) or 0}")


@dataclass(frozen=True)
class RevisionInfo:
    name: str  # branch name, e.g. "epoch-0005"
    epoch: float
    sha: str  # commit sha the branch points at

    @property
    def epoch_label(self) -> str:
        return f"{self.epoch:g}"


def _api(api: HfApi | None) -> HfApi:
    return api or HfApi()


def ensure_repo(repo_id: str, *, repo_type: str = "model", private: bool = False, api: HfApi | None = None) -> str:
    """Create the repository if needed; return its URL."""
    api = _api(api)
    url = with_retries(
        lambda: api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True),
        what=f"create {repo_type} repo {repo_id}",
    )
    return str(url)


def check_write_access(repo_id: str, *, repo_type: str = "model", api: HfApi | None = None) -> None:
    """Fail in seconds, not hours, when the token cannot write to ``repo_id``.

    Creates the repo if it does not exist, then creates and deletes a scratch branch: the only
    way to prove write access that works on the Hub and on the local hub alike.
    """
    api = _api(api)
    try:
        ensure_repo(repo_id, repo_type=repo_type, api=api)
        scratch = f"hf-transfer-seg-write-check-{uuid.uuid4().hex[:12]}"  # unique: several checkers at once
        api.create_branch(repo_id, branch=scratch, repo_type=repo_type, exist_ok=True)
        try:
            api.delete_branch(repo_id, branch=scratch, repo_type=repo_type)
        except HfHubHTTPError as exc:  # a leftover scratch branch is harmless; write access is proven
            log.warning("could not delete scratch branch %s of %s: %s", scratch, repo_id, redact(exc))
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403) or isinstance(exc, RepositoryNotFoundError):
            raise HubWriteAccessError(
                f"cannot write to {repo_type} repo {repo_id!r} (HTTP {status}): {redact(exc)}. "
                "Set HF_TOKEN to a token with write access to that namespace, or choose a --repo-id you own."
            ) from exc
        raise


def push_revision(
    folder: str | Path,
    repo_id: str,
    epoch: float,
    *,
    commit_message: str | None = None,
    repo_type: str = "model",
    also_main: bool = False,
    owner: str | None = None,
    api: HfApi | None = None,
) -> RevisionInfo:
    """Push a local checkpoint folder as branch ``revision_name(epoch)``, created from main's first commit.

    The revision appears whole or not at all: every file goes into ONE ``create_commit`` (uploads,
    LFS or Xet, finish before the commit is made; ``upload_folder`` may split a large folder into
    several commits). A new revision is committed on a staging branch first, its file list checked at
    the new sha, and only then is ``epoch-NNNN`` created at that sha: a reader never sees the branch
    half-filled, and a kill at any point leaves either no branch or the whole checkpoint.

    Idempotent: pushing the same folder again makes no new commit (the client skips unchanged
    files), so a retried or resumed push never duplicates a revision. With ``also_main`` the
    same files are committed to ``main`` too (latest weights on the default branch), also in one commit.

    ``owner`` (a run identity, ``run-<12 hex>``) goes into the staging branch's name, so that the run can find
    and remove its own leftovers after a kill (:func:`remove_staging_branches`).
    """
    api = _api(api)
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"checkpoint folder {folder} does not exist")
    name = revision_name(epoch)
    files = _local_files(folder)
    if not files:
        raise ConfigError(f"checkpoint folder {folder} is empty")
    ensure_repo(repo_id, repo_type=repo_type, api=api)
    message = commit_message or f"Checkpoint at epoch {epoch:g}"
    existing = _branch_head(repo_id, name, repo_type=repo_type, api=api)
    if existing is not None:  # a retried push: complete the branch in place (unchanged files are skipped)
        sha = _commit_all(repo_id, name, files, message, repo_type=repo_type, api=api) or existing
    else:
        root = _initial_commit(repo_id, repo_type=repo_type, api=api)
        staging = f"{staging_prefix(owner)}{name}-{uuid.uuid4().hex[:8]}"  # not a checkpoint name: never listed
        with_retries(
            lambda: api.create_branch(repo_id, branch=staging, revision=root, repo_type=repo_type, exist_ok=True),
            what=f"create staging branch {staging} of {repo_id}",
        )
        try:
            sha = _commit_all(repo_id, staging, files, message, repo_type=repo_type, api=api) or root
            _verify(repo_id, sha, files, repo_type=repo_type, api=api)
            try:
                with_retries(
                    lambda: api.create_branch(repo_id, branch=name, revision=sha, repo_type=repo_type),
                    what=f"create branch {name} of {repo_id}",
                )
            except HfHubHTTPError as exc:  # another pusher created it meanwhile: complete that one
                if getattr(getattr(exc, "response", None), "status_code", None) != 409:
                    raise
                sha = _commit_all(repo_id, name, files, message, repo_type=repo_type, api=api) or sha
        finally:
            try:
                api.delete_branch(repo_id, branch=staging, repo_type=repo_type)
            except Exception as exc:  # noqa: BLE001 - a leftover staging branch is harmless (never listed)
                log.debug("could not delete staging branch %s: %s", staging, redact(exc))
    sha = branch_sha(repo_id, name, repo_type=repo_type, api=api)
    _verify(repo_id, sha, files, repo_type=repo_type, api=api)
    if also_main:
        main_files = {path: local for path, local in files.items() if path != "README.md"}
        _commit_all(repo_id, "main", main_files, f"Latest weights: {message}", repo_type=repo_type, api=api)
    log.info("pushed %s@%s (commit %s)", repo_id, name, sha)
    return RevisionInfo(name=name, epoch=float(epoch), sha=sha)


STAGING_PREFIX = "hf-transfer-seg-staging-"
_OWNER = re.compile(r"run-[0-9a-f]{12}")


def staging_prefix(owner: str | None = None) -> str:
    """``hf-transfer-seg-staging-`` (+ ``<owner>-`` for a run's own staging branches)."""
    if owner is None:
        return STAGING_PREFIX
    if not _OWNER.fullmatch(owner):
        raise ConfigError(f"staging owner {owner!r} is not a run identity (run-<12 hex>)")
    return f"{STAGING_PREFIX}{owner}-"


def staging_branches(repo_id: str, owner: str, *, repo_type: str = "model", api: HfApi | None = None) -> dict[str, str]:
    """Staging branches of ``repo_id`` that the run ``owner`` created: branch -> the revision it was staging.

    Only names of the exact form ``<prefix><owner>-<revision>-<8 hex>`` count (``revision`` a checkpoint name),
    so another run's staging branches, or a user's branch that merely starts alike, are never matched.
    """
    api = _api(api)
    prefix = staging_prefix(owner)
    refs = with_retries(lambda: api.list_repo_refs(repo_id, repo_type=repo_type), what=f"list refs of {repo_id}")
    found = {}
    for branch in refs.branches:
        if not branch.name.startswith(prefix):
            continue
        revision, _, tail = branch.name[len(prefix):].rpartition("-")
        if re.fullmatch(r"[0-9a-f]{8}", tail) and parse_revision_name(revision) is not None:
            found[branch.name] = revision
    return found


def _local_files(folder: Path) -> dict[str, Path]:
    """Repository path -> local file, for every file under ``folder`` (hidden files and folders left out)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = path
    return out


def _branch_head(repo_id: str, branch: str, *, repo_type: str, api: HfApi) -> str | None:
    refs = with_retries(lambda: api.list_repo_refs(repo_id, repo_type=repo_type), what=f"list refs of {repo_id}")
    return next((b.target_commit for b in refs.branches if b.name == branch), None)


def _commit_all(repo_id: str, branch: str, files: dict[str, Path], message: str, *, repo_type: str,
                api: HfApi) -> str | None:
    """One commit with every file of ``files`` on ``branch``; its sha (None when nothing changed)."""
    from huggingface_hub import CommitOperationAdd

    def commit():
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(local)) for path, local in files.items()]
        return api.create_commit(repo_id, operations=operations, commit_message=message, revision=branch,
                                 repo_type=repo_type)

    info = with_retries(commit, what=f"commit {len(files)} file(s) to {repo_id}@{branch}")
    return getattr(info, "oid", None)


def _verify(repo_id: str, sha: str, files: dict[str, Path], *, repo_type: str, api: HfApi) -> None:
    """Every file of ``files`` is at ``sha`` with its local size, or HubError (nothing is reported pushed)."""
    from huggingface_hub.hf_api import RepoFile

    tree = with_retries(
        lambda: list(api.list_repo_tree(repo_id, revision=sha, recursive=True, repo_type=repo_type)),
        what=f"list files of {repo_id}@{sha[:10]}",
    )
    remote = {item.path: item.size for item in tree if isinstance(item, RepoFile)}
    wrong = [path for path, local in files.items() if remote.get(path) != local.stat().st_size]
    if wrong:
        raise HubError(
            f"after the push, {repo_id}@{sha[:10]} lacks or differs in {len(wrong)} file(s) ({', '.join(wrong[:5])}); "
            "the checkpoint stays pending and will be pushed again (`hf-transfer-seg push-pending`)"
        )


def _initial_commit(repo_id: str, *, repo_type: str, api: HfApi) -> str:
    """The repo's first commit on main: checkpoint branches start there, so they hold only their own files
    (not main's summary card or plots)."""
    commits = with_retries(
        lambda: api.list_repo_commits(repo_id, repo_type=repo_type), what=f"list commits of {repo_id}"
    )
    return commits[-1].commit_id


def branch_sha(repo_id: str, revision: str, *, repo_type: str = "model", api: HfApi | None = None) -> str:
    """Commit sha that ``revision`` (branch, tag or sha) points at now."""
    api = _api(api)
    try:
        info = with_retries(
            lambda: api.repo_info(repo_id, revision=revision, repo_type=repo_type),
            what=f"read {repo_id}@{revision}",
        )
    except RevisionNotFoundError as exc:
        raise RevisionNotFound(
            f"revision {revision!r} not found in {repo_id}; list the checkpoints with `hf-transfer-seg score "
            f"--repo-id {repo_id} --revisions all` or check the name"
        ) from exc
    return info.sha


def list_revisions(repo_id: str, *, repo_type: str = "model", api: HfApi | None = None) -> list[RevisionInfo]:
    """Checkpoint branches of ``repo_id`` in epoch order, each with its commit sha."""
    api = _api(api)
    refs = with_retries(lambda: api.list_repo_refs(repo_id, repo_type=repo_type), what=f"list refs of {repo_id}")
    found = []
    for branch in refs.branches:
        epoch = parse_revision_name(branch.name)
        if epoch is not None:
            found.append(RevisionInfo(name=branch.name, epoch=epoch, sha=branch.target_commit))
    return sorted(found, key=lambda r: r.epoch)


def select_revisions(
    repo_id: str, spec: str = "all", *, repo_type: str = "model", api: HfApi | None = None
) -> list[RevisionInfo]:
    """Resolve ``all`` or a comma list of branch names / epochs (``epoch-0005,20``) to revisions."""
    available = list_revisions(repo_id, repo_type=repo_type, api=api)
    if spec.strip() in ("", "all"):
        if not available:
            raise RevisionNotFound(f"{repo_id} has no checkpoint revisions (branches named epoch-NNNN)")
        return available
    by_name = {r.name: r for r in available}
    chosen = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        name = item
        if parse_revision_name(item) is None:
            try:
                name = revision_name(float(item))
            except (ValueError, OverflowError):  # not a number, or nan/inf: looked up as a name (and not found)
                name = item
        if name not in by_name:
            names = ", ".join(by_name) or "none"
            raise RevisionNotFound(f"revision {item!r} is not a checkpoint of {repo_id}; available: {names}")
        chosen.append(by_name[name])
    if not chosen:
        raise RevisionNotFound(f"--revisions {spec!r} names no revision; give 'all' or a comma list such as epoch-0005,20")
    return sorted(set(chosen), key=lambda r: r.epoch)


def download_revision(
    repo_id: str,
    sha: str,
    *,
    repo_type: str = "model",
    allow_patterns: list[str] | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Local folder with the files of ``repo_id`` at commit ``sha``.

    Cached by sha: a second call costs no transfer, and with ``HF_HUB_OFFLINE=1`` it resolves
    from the cache alone.
    """
    path = with_retries(
        lambda: snapshot_download(
            repo_id, revision=sha, repo_type=repo_type, allow_patterns=allow_patterns, cache_dir=cache_dir
        ),
        what=f"download {repo_id}@{sha[:10]}",
    )
    return Path(path)
