"""The one rule for a file path inside a repository, for what is uploaded and for what a card names.

The local hub refuses an upload with such a path (:func:`hf_transfer_seg.localhub.names.check_path` answers 400
with this message), and readers refuse a card that names one (a ``grid_file`` of ``../../etc/passwd`` or
``/etc/passwd``): a path is relative, made of non-empty components other than ``.``, ``..`` and ``.git``, without
control characters or backslashes, valid UTF-8, and at most :data:`MAX_PATH_BYTES` bytes.
"""

from __future__ import annotations

MAX_PATH_BYTES = 4096


class RepoPathError(ValueError):
    """A path that is not a plain relative path inside a repository; the message says which rule it breaks."""


def check_repo_path(path: object, *, allow_empty: bool = False) -> str:
    """``path`` normalised (with ``allow_empty``: leading/trailing ``/`` dropped, ``""`` for the root), or
    :class:`RepoPathError` for anything that could escape the repository."""
    if not isinstance(path, str):
        raise RepoPathError(f"file path must be a string, not {type(path).__name__}")
    original = path
    path = path.strip("/") if allow_empty else path
    if path == "" and allow_empty:
        return ""
    shown = repr(original) if len(original) <= 200 else f"{original[:200]!r}... ({len(original):,} characters)"
    if not path or len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise RepoPathError(f"invalid file path {shown}: empty or too long")
    if path.startswith("/") or path.endswith("/"):
        raise RepoPathError(f"invalid file path {shown}: must be relative, without leading or trailing '/'")
    if any(ord(c) < 0x20 or c == "\x7f" for c in path) or "\\" in path:
        raise RepoPathError(f"invalid file path {shown}: control characters and backslashes are not allowed")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise RepoPathError(f"invalid file path {shown}: not valid UTF-8") from None
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise RepoPathError(f"invalid file path {shown}: empty, '.' or '..' components are not allowed")
        if part.lower() == ".git":
            raise RepoPathError(f"invalid file path {shown}: '.git' components are not allowed")
    return path
