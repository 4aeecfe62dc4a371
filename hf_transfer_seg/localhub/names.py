"""Names, paths and refs the local hub accepts, and the errors its storage raises (no git, no HTTP here).

Every error is a :class:`StorageError` subclass carrying the HTTP status and the ``X-Error-Code`` the Hub would
answer with; the HTTP layer turns them into responses.
"""

from __future__ import annotations

import re

from hf_transfer_seg.repo_paths import RepoPathError, check_repo_path

REPO_TYPES = ("model", "dataset", "space")
ZERO_OID = "0" * 40
_HEX40 = re.compile(r"^[0-9a-f]{40}\Z")
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
# a revision of 4 to 40 hex digits is a commit (abbreviated or full), never a ref: git's minimum abbreviation
# is 4 digits, and a ref named so could serve other content under a commit's name
MIN_ABBREV = 4
_SHORT_HEX = re.compile(r"^[0-9a-fA-F]{4,40}\Z")
# Hub rules for a namespace or a repo name: letters, digits, '-', '_', '.'; no '--' or '..';
# '-' and '.' neither start nor end it; at most 96 characters.
_NAME_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?\Z")
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")

# --------------------------------------------------------------------------------------------------
# errors


class StorageError(Exception):
    """A request the storage refuses; ``status`` and ``code`` are what the HTTP layer answers."""

    status = 400
    code: str | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(StorageError):
    status = 400


class Forbidden(StorageError):
    status = 403


class RepoNotFound(StorageError):
    status = 404
    code = "RepoNotFound"


class RevisionNotFound(StorageError):
    status = 404
    code = "RevisionNotFound"


class EntryNotFound(StorageError):
    status = 404
    code = "EntryNotFound"


class Conflict(StorageError):
    status = 409


class PreconditionFailed(StorageError):
    status = 412


class GitError(StorageError):
    status = 500


class DiskFull(StorageError):
    """The filesystem under the hub root is full (or over quota): nothing was changed."""

    status = 507
    code = "InsufficientStorage"


DISK_FULL_HINT = ("no space left on the local hub's disk (its root folder); nothing was changed. "
                  "Free space there (or raise the quota) and retry")


# --------------------------------------------------------------------------------------------------
# validation


def check_repo_type(repo_type: str | None) -> str:
    repo_type = repo_type or "model"
    if repo_type not in REPO_TYPES:
        raise BadRequest(f"invalid repo type {repo_type!r}: expected one of {', '.join(REPO_TYPES)}")
    return repo_type


def check_name_part(part: str, what: str) -> str:
    if (
        not isinstance(part, str)
        or not _NAME_RE.match(part)
        or "--" in part
        or ".." in part
        or part.lower().endswith(".git")
    ):
        raise BadRequest(
            f"invalid {what} {part!r}: use letters, digits, '-', '_' or '.', no '--' or '..', "
            "not starting or ending with '-' or '.', at most 96 characters"
        )
    return part


def check_repo_id(repo_id: str) -> tuple[str, str]:
    """``namespace/name`` -> (namespace, name), or :class:`BadRequest`."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise BadRequest(f"invalid repo id {repo_id!r}: expected 'namespace/name'")
    namespace, name = repo_id.split("/")
    return check_name_part(namespace, "namespace"), check_name_part(name, "repo name")


def check_path(path: str, *, allow_empty: bool = False) -> str:
    """A file path inside a repository, normalized; :class:`BadRequest` for anything that could escape (the
    package's one rule, :func:`hf_transfer_seg.repo_paths.check_repo_path`, which card readers apply too)."""
    try:
        return check_repo_path(path, allow_empty=allow_empty)
    except RepoPathError as exc:
        raise BadRequest(str(exc)) from None


def is_commit_abbrev(text) -> bool:
    """True for 4 to 40 hex digits (any case): text that :meth:`Repo.resolve` reads as a commit, never a ref."""
    return isinstance(text, str) and bool(_SHORT_HEX.match(text))


def check_ref_name(name: str, what: str = "branch") -> str:
    """A branch or tag name git accepts (checked without calling git) and that cannot shadow a commit.

    A name of 4 to 40 hex digits could be read as a commit abbreviation (git's minimum is 4), so it is
    refused, as is a name starting with ``refs/``: ``resolve/<hex>`` must always mean a commit. (The Hub
    itself refuses only 7 and 40 digits; a branch named as a 10-digit prefix of a commit then serves its
    own content under that commit's abbreviation.)"""
    if isinstance(name, str) and (is_commit_abbrev(name) or name.startswith("refs/")):
        raise BadRequest(f"invalid {what} name {name!r}: a name of {MIN_ABBREV} to 40 hex digits reads as a commit "
                         "sha (abbreviated or full), and one starting with 'refs/' as a ref; choose another name "
                         "(e.g. add a letter outside a-f)")
    if isinstance(name, str):
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(f"invalid {what} name {name!r}: not valid UTF-8 (a lone surrogate?)") from None
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 255
        or _BAD_REF_CHARS.search(name)
        or name.startswith(("-", "/", "."))
        or name.endswith(("/", ".", ".lock"))
        or ".." in name
        or "//" in name
        or "@{" in name
        or name == "@"
        or any(part.startswith(".") or part.endswith(".lock") for part in name.split("/"))
    ):
        raise BadRequest(f"invalid {what} name {name!r}")
    return name
