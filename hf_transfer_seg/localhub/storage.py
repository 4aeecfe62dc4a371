"""Git-backed storage of Hub repositories (no HTTP here).

One *bare* git repository per Hub repository, ``ROOT/{models,datasets,spaces}/<namespace>/<name>.git``,
driven by the git CLI: branches, tags and commit shas are real git objects, so they survive restarts
and can be inspected with plain git. Commits are built without a work tree: a temporary
``GIT_INDEX_FILE`` is filled with ``read-tree`` and ``update-index --index-info`` (mode-0 lines remove
entries), turned into a tree with ``write-tree`` and a commit with ``commit-tree``; the branch is then
moved with ``update-ref REF NEW OLD``, an atomic compare-and-swap.

Blobs are written as loose objects by :meth:`Repo.write_blob` directly (the documented loose-object
format: zlib of ``"blob <size>\\0" + content``, named by its SHA-1) instead of piping them through
``git hash-object -w --stdin``: for a 100 MB weights file this avoids a pipe copy and git's
collision-detecting SHA-1, and lets large incompressible blobs be stored with zlib level 0. Such
objects are ordinary git objects (``git fsck`` checks them).

Every write to a repository holds a per-repository lock (an ``flock`` on ``hub.lock`` inside the
bare repository, which serializes threads and processes alike); ``update-ref``'s compare-and-swap
is the second line of defence. All public errors are :class:`StorageError` subclasses carrying the
HTTP status and the ``X-Error-Code`` the Hub would answer with.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

REPO_TYPES = ("model", "dataset", "space")
ZERO_OID = "0" * 40
_HEX40 = re.compile(r"^[0-9a-f]{40}\Z")
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_SHORT_HEX = re.compile(r"^[0-9a-fA-F]{5,40}\Z")
# Hub rules for a namespace or a repo name: letters, digits, '-', '_', '.'; no '--' or '..';
# '-' and '.' neither start nor end it; at most 96 characters.
_NAME_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?\Z")
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")

DEFAULT_USER = "local"
LARGE_BLOB = 1 << 20  # blobs at least this big are stored with zlib level 0 (weights do not compress)
_READ_CHUNK = 1 << 20

# What the Hub writes into a new repository (the files are stored here as plain git blobs, not LFS
# pointers; git-lfs passes non-pointer content through unchanged, so a clone still works).
HUB_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
"""


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
    """A file path inside a repository, normalized; :class:`BadRequest` for anything that could escape."""
    if not isinstance(path, str):
        raise BadRequest("file path must be a string")
    original = path
    path = path.strip("/") if allow_empty else path
    if path == "" and allow_empty:
        return ""
    if not path or len(path.encode("utf-8", "surrogatepass")) > 4096:
        raise BadRequest(f"invalid file path {original!r}: empty or too long")
    if path.startswith("/") or path.endswith("/"):
        raise BadRequest(f"invalid file path {original!r}: must be relative, without leading or trailing '/'")
    if any(ord(c) < 0x20 or c == "\x7f" for c in path) or "\\" in path:
        raise BadRequest(f"invalid file path {original!r}: control characters and backslashes are not allowed")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"invalid file path {original!r}: not valid UTF-8") from None
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise BadRequest(f"invalid file path {original!r}: empty, '.' or '..' components are not allowed")
        if part.lower() == ".git":
            raise BadRequest(f"invalid file path {original!r}: '.git' components are not allowed")
    return path


def check_ref_name(name: str, what: str = "branch") -> str:
    """A branch or tag name git accepts (checked without calling git)."""
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


def iso_date(timestamp: float) -> str:
    """Hub date format: ``2024-01-02T03:04:05.000Z``."""
    when = _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


# --------------------------------------------------------------------------------------------------
# git plumbing


def _git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
            "GIT_AUTHOR_NAME": DEFAULT_USER,
            "GIT_AUTHOR_EMAIL": f"{DEFAULT_USER}@localhub.invalid",
            "GIT_COMMITTER_NAME": DEFAULT_USER,
            "GIT_COMMITTER_EMAIL": f"{DEFAULT_USER}@localhub.invalid",
        }
    )
    if extra:
        env.update(extra)
    return env


def _run_git(git_dir: Path, args: list[str], *, input: bytes | None = None, env: dict | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["git", "-c", "safe.directory=*", "--git-dir", str(git_dir), *args]
    proc = subprocess.run(cmd, input=input, capture_output=True, env=_git_env(env))
    if check and proc.returncode != 0:
        raise GitError(f"git {args[0]} failed: {proc.stderr.decode('utf-8', 'replace').strip()[:500]}")
    return proc


@dataclass(frozen=True)
class Entry:
    """One entry of a commit's tree: ``kind`` is 'file' or 'directory'."""

    path: str
    kind: str
    oid: str
    size: int
    mode: str


@dataclass(frozen=True)
class CommitMeta:
    sha: str
    parents: tuple[str, ...]
    author: str
    timestamp: int
    title: str
    message: str

    @property
    def date(self) -> str:
        return iso_date(self.timestamp)


class _LRU:
    """A small thread-safe LRU for immutable, content-addressed data (trees and commits by sha)."""

    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            value = self.data.get(key)
            if value is not None:
                self.data.move_to_end(key)
            return value

    def put(self, key, value):
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


_TREES = _LRU(128)
_COMMITS = _LRU(4096)


@dataclass
class FileOp:
    """A change in a commit: ``blob`` set adds/replaces ``path``; ``blob`` None deletes it.

    ``folder`` deletes everything under ``path``.
    """

    path: str
    blob: str | None = None
    folder: bool = False


class Repo:
    """One Hub repository: a bare git repository plus ``hub.json`` (visibility, creation date, sdk)."""

    def __init__(self, storage: "Storage", repo_type: str, namespace: str, name: str, path: Path):
        self.storage = storage
        self.repo_type = repo_type
        self.namespace = namespace
        self.name = name
        self.path = path

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"

    # -- low level -------------------------------------------------------------------------------

    def git(self, *args: str, input: bytes | None = None, env: dict | None = None) -> bytes:
        return _run_git(self.path, list(args), input=input, env=env).stdout

    def git_ok(self, *args: str, input: bytes | None = None, env: dict | None = None) -> bool:
        return _run_git(self.path, list(args), input=input, env=env, check=False).returncode == 0

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive per-repository lock, across threads and processes (flock on a fresh descriptor)."""
        try:
            fd = os.open(self.path / "hub.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            raise RepoNotFound(f"repository {self.repo_id} was deleted") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not self.path.is_dir():  # deleted while we waited
                raise RepoNotFound(f"repository {self.repo_id} was deleted")
            yield
        finally:
            os.close(fd)

    def meta(self) -> dict:
        try:
            return json.loads((self.path / "hub.json").read_text())
        except (OSError, ValueError):
            return {}

    # -- refs ------------------------------------------------------------------------------------

    def refs(self) -> dict[str, dict[str, str]]:
        """``{"branches": {name: sha}, "tags": {name: commit sha}, "prs": {name: sha}}``."""
        out = self.git("for-each-ref", "--format=%(refname)%00%(objectname)%00%(*objectname)")
        branches: dict[str, str] = {}
        tags: dict[str, str] = {}
        prs: dict[str, str] = {}
        for line in out.decode("utf-8", "replace").splitlines():
            ref, obj, peeled = (line.split("\0") + ["", ""])[:3]
            target = peeled or obj
            if ref.startswith("refs/heads/"):
                branches[ref[len("refs/heads/"):]] = target
            elif ref.startswith("refs/tags/"):
                tags[ref[len("refs/tags/"):]] = target
            elif ref.startswith("refs/pr/"):
                prs[ref[len("refs/"):]] = target
        return {"branches": branches, "tags": tags, "prs": prs}

    def branch_head(self, branch: str) -> str | None:
        return self.refs()["branches"].get(branch)

    def resolve(self, revision: str) -> str:
        """Commit sha of a branch, tag, ``refs/...`` name or (possibly short) commit sha."""
        if not isinstance(revision, str) or not revision or _BAD_REF_CHARS.search(revision) or ".." in revision:
            raise RevisionNotFound(f"Invalid rev id: {revision!r}")
        refs = self.refs()
        if revision in refs["branches"]:
            return refs["branches"][revision]
        if revision in refs["tags"]:
            return refs["tags"][revision]
        for prefix, table in (("refs/heads/", "branches"), ("refs/tags/", "tags"), ("refs/", "prs")):
            if revision.startswith(prefix) and revision[len(prefix):] in refs[table]:
                return refs[table][revision[len(prefix):]]
        if _SHORT_HEX.match(revision):
            proc = _run_git(self.path, ["rev-parse", "--verify", "--quiet", f"{revision.lower()}^{{commit}}"],
                            check=False)
            if proc.returncode == 0:
                return proc.stdout.decode().strip()
        raise RevisionNotFound(f"Invalid rev id: {revision}")

    # -- reading ---------------------------------------------------------------------------------

    def tree(self, commit: str) -> dict[str, Entry]:
        """Every file and directory of ``commit`` by path (cached: commits are immutable)."""
        key = (str(self.path), commit)
        cached = _TREES.get(key)
        if cached is not None:
            return cached
        out = self.git("ls-tree", "-r", "-t", "-l", "-z", "--full-tree", commit)
        entries: dict[str, Entry] = {}
        for record in out.split(b"\0"):
            if not record:
                continue
            info, _, raw_path = record.partition(b"\t")
            mode, kind, oid, size = info.decode().split(maxsplit=3)
            path = raw_path.decode("utf-8", "surrogateescape")
            if kind == "tree":
                entries[path] = Entry(path, "directory", oid, 0, mode)
            elif kind == "blob":
                entries[path] = Entry(path, "file", oid, int(size.strip()), mode)
            # submodules ("commit") never occur: this server does not create them
        _TREES.put(key, entries)
        return entries

    def root_tree_oid(self, commit: str) -> str:
        return self.git("rev-parse", f"{commit}^{{tree}}").decode().strip()

    def commit_meta(self, sha: str) -> CommitMeta:
        cached = _COMMITS.get(sha)
        if cached is None:
            cached = self.log(sha, limit=1)[0]
        return cached

    def log(self, commit: str, *, skip: int = 0, limit: int = 50) -> list[CommitMeta]:
        """Commits reachable from ``commit``, newest first."""
        out = self.git(
            "log", "-z", f"--skip={int(skip)}", f"--max-count={int(limit)}",
            "--format=%H%x00%P%x00%an%x00%at%x00%s%x00%b", commit, "--",
        )
        fields = out.decode("utf-8", "replace").split("\0")
        commits = []
        for i in range(0, len(fields) - 5, 6):
            sha, parents, author, at, title, body = fields[i:i + 6]
            meta = CommitMeta(sha.strip(), tuple(parents.split()), author, int(at), title, body.rstrip("\n"))
            _COMMITS.put(meta.sha, meta)
            commits.append(meta)
        return commits

    def count_commits(self, commit: str) -> int:
        return int(self.git("rev-list", "--count", commit).decode().strip())

    def blob_path(self, oid: str) -> Path:
        return self.path / "objects" / oid[:2] / oid[2:]

    def blob_size(self, oid: str) -> int:
        """Content size of a blob, from its object header."""
        try:
            with open(self.blob_path(oid), "rb") as handle:
                head = zlib.decompressobj().decompress(handle.read(64), 64)
            kind, _, rest = head.partition(b" ")
            if kind == b"blob" and b"\0" in rest:
                return int(rest.split(b"\0", 1)[0])
        except (OSError, ValueError, zlib.error):
            pass
        return int(self.git("cat-file", "-s", oid).decode().strip())

    def read_blob(self, oid: str) -> bytes:
        return b"".join(self.iter_blob(oid))

    def iter_blob(self, oid: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of a blob, streamed in chunks of about 1 MiB.

        Loose objects (all objects this server writes) are inflated here directly; anything else
        (e.g. after a manual ``git gc``) is streamed from ``git cat-file``.
        """
        if not _HEX40.match(oid):
            raise EntryNotFound(f"invalid blob id {oid!r}")
        try:
            handle = open(self.blob_path(oid), "rb")
        except FileNotFoundError:
            yield from self._iter_blob_git(oid, start, end)
            return
        with handle:
            inflater = zlib.decompressobj()
            header: bytes | None = b""
            pos = 0  # offset in the content of the next byte inflated
            pending = b""
            eof = False
            while not eof:
                if not pending:
                    pending = handle.read(_READ_CHUNK)
                if pending:
                    data = inflater.decompress(pending, _READ_CHUNK)
                    pending = inflater.unconsumed_tail
                else:
                    data, eof = inflater.flush(), True
                if header is not None:
                    header += data
                    nul = header.find(b"\0")
                    if nul < 0:
                        if len(header) > 64:
                            raise GitError(f"corrupt object {oid}")
                        continue
                    if not header.startswith(b"blob "):
                        raise EntryNotFound(f"object {oid} is not a file")
                    data, header = header[nul + 1:], None
                chunk_start, pos = pos, pos + len(data)
                lo = max(start, chunk_start)
                hi = pos if end is None else min(end, pos)
                if hi > lo:
                    yield data[lo - chunk_start: hi - chunk_start]
                if end is not None and pos >= end:
                    return

    def _iter_blob_git(self, oid: str, start: int, end: int | None) -> Iterator[bytes]:
        cmd = ["git", "-c", "safe.directory=*", "--git-dir", str(self.path), "cat-file", "blob", oid]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_git_env())
        try:
            pos = 0
            assert proc.stdout is not None
            while True:
                data = proc.stdout.read(_READ_CHUNK)
                if not data:
                    break
                chunk_start, pos = pos, pos + len(data)
                lo = max(start, chunk_start)
                hi = pos if end is None else min(end, pos)
                if hi > lo:
                    yield data[lo - chunk_start: hi - chunk_start]
                if end is not None and pos >= end:
                    break
        finally:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    # -- writing ---------------------------------------------------------------------------------

    def write_blob(self, data: bytes | memoryview) -> str:
        """Store ``data`` as a loose git blob and return its sha (a no-op if it exists already)."""
        view = memoryview(data)
        digest = hashlib.sha1(b"blob %d\0" % len(view))
        digest.update(view)
        oid = digest.hexdigest()
        if self.blob_path(oid).exists():
            return oid
        pieces = (view[i: i + 8 * _READ_CHUNK] for i in range(0, len(view), 8 * _READ_CHUNK))
        return self._write_object(len(view), pieces)

    def write_blob_from_file(self, path: str | os.PathLike, size: int) -> str:
        """Store the file at ``path`` (``size`` bytes) as a loose git blob in one read pass; return its sha."""
        with open(path, "rb") as handle:
            pieces = iter(lambda: handle.read(8 * _READ_CHUNK), b"")
            oid = self._write_object(size, pieces)
        return oid

    def _write_object(self, size: int, pieces) -> str:
        """Hash and deflate ``pieces`` (``size`` bytes in all) into a temporary file, then link it into place."""
        writer = BlobWriter(self, size)
        try:
            for piece in pieces:
                writer.write(piece)
            return writer.finish()
        finally:
            writer.discard()

    # -- LFS objects (sha256 -> git blob) ---------------------------------------------------------
    #
    # Files uploaded through the LFS batch API are stored as ordinary git blobs like every other file;
    # ``lfs/sha256/<sha256>`` holds the blob's sha1 (so a commit's ``lfsFile`` line finds its blob) and
    # ``lfs/blob/<sha1>`` the sha256 (so preupload and resolve can report it). Both are written
    # atomically and only ever describe content-addressed data, so concurrent writers agree.

    def _lfs_path(self, kind: str, key: str) -> Path:
        return self.path / "lfs" / kind / key

    def _lfs_read(self, kind: str, key: str, pattern: re.Pattern) -> str | None:
        try:
            value = self._lfs_path(kind, key).read_text().strip()
        except OSError:
            return None
        return value if pattern.match(value) else None

    def lfs_blob(self, sha256: str) -> str | None:
        """The git blob holding the LFS object ``sha256``, if it was uploaded (and is still stored)."""
        if not _HEX64.match(sha256 or ""):
            return None
        blob = self._lfs_read("sha256", sha256, _HEX40)
        return blob if blob is not None and self.has_blob(blob) else None

    def blob_sha256(self, blob: str, *, compute: bool = False) -> str | None:
        """sha256 of a blob's content when known (or, with ``compute``, hashed now and remembered)."""
        if not _HEX40.match(blob or ""):
            return None
        known = self._lfs_read("blob", blob, _HEX64)
        if known is not None or not compute:
            return known
        digest = hashlib.sha256()
        for chunk in self.iter_blob(blob):
            digest.update(chunk)
        sha256 = digest.hexdigest()
        self.record_lfs(sha256, blob)
        return sha256

    def record_lfs(self, sha256: str, blob: str) -> None:
        for kind, key, value in (("sha256", sha256, blob), ("blob", blob, sha256)):
            path = self._lfs_path(kind, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            try:
                with os.fdopen(fd, "w") as out:
                    out.write(value + "\n")
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    def has_blob(self, oid: str) -> bool:
        if self.blob_path(oid).exists():
            return True
        return self.git_ok("cat-file", "-e", f"{oid}^{{blob}}")

    def commit(
        self,
        branch: str,
        ops: list[FileOp],
        *,
        summary: str,
        description: str = "",
        parent_commit: str | None = None,
        author: str = DEFAULT_USER,
    ) -> str:
        """Apply ``ops`` on top of ``branch`` as one commit; return the new commit sha.

        Raises :class:`PreconditionFailed` when ``parent_commit`` is not the branch head (any more).
        """
        with self.lock():
            refs = self.refs()
            head = refs["branches"].get(branch)
            if head is None:
                if branch in refs["tags"] or _SHORT_HEX.match(branch):
                    raise BadRequest(f"cannot commit to {branch!r}: commits can only be made to a branch")
                raise RevisionNotFound(f"Invalid rev id: {branch} (no such branch)")
            if parent_commit:
                parent = parent_commit.lower()
                if not _SHORT_HEX.match(parent) or not head.startswith(parent):
                    raise PreconditionFailed(
                        f"A commit has happened since. Please refresh and try again. "
                        f"(parentCommit {parent_commit} is not the head {head} of {branch})"
                    )
            lines = self._index_lines(head, ops)
            new = self._write_commit(head, lines, summary, description, author)
            if not self.git_ok("update-ref", f"refs/heads/{branch}", new, head):
                raise PreconditionFailed(
                    f"A commit has happened since. Please refresh and try again. ({branch} moved during the commit)"
                )
            return new

    def _index_lines(self, head: str, ops: list[FileOp]) -> list[str]:
        """``update-index --index-info`` lines turning ``head``'s tree into the committed one."""
        tree = self.tree(head)
        files = {p for p, e in tree.items() if e.kind == "file"}
        changes: dict[str, str | None] = {}  # path -> blob sha, or None for a removal

        def present(path: str) -> bool:
            return changes[path] is not None if path in changes else path in files

        for op in ops:
            if op.folder:
                prefix = op.path.rstrip("/") + "/"
                doomed = [p for p in files | set(changes) if p.startswith(prefix) and present(p)]
                if not doomed:
                    raise EntryNotFound(f"A folder with this name doesn't exist: {op.path}")
                for p in doomed:
                    changes[p] = None
            elif op.blob is None:
                if not present(op.path):
                    raise EntryNotFound(f"A file with this name doesn't exist: {op.path}")
                changes[op.path] = None
            else:
                changes[op.path] = op.blob
        # directory/file clashes: git would silently drop one side
        final_files = {p for p in files | set(changes) if present(p)}
        for path, blob in changes.items():
            if blob is None:
                continue
            parts = path.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in final_files:
                    raise BadRequest(f"cannot add {path}: {'/'.join(parts[:i])} is a file")
            prefix = path + "/"
            if any(p.startswith(prefix) for p in final_files):
                raise BadRequest(f"cannot add {path}: a folder with this name exists")
        lines = []
        for path, blob in changes.items():
            if blob is None:
                lines.append(f"0 {ZERO_OID}\t{path}")
            else:
                lines.append(f"100644 {blob}\t{path}")
        return lines

    def _write_commit(self, parent: str | None, lines: list[str], summary: str, description: str,
                      author: str, when: float | None = None) -> str:
        with tempfile.TemporaryDirectory(prefix="index-", dir=self.storage.tmp_dir) as tmp:
            env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
            if parent:
                self.git("read-tree", parent, env=env)
            if lines:
                payload = "".join(line + "\0" for line in lines).encode("utf-8", "surrogateescape")
                self.git("update-index", "-z", "--index-info", input=payload, env=env)
            tree = self.git("write-tree", env=env).decode().strip()
        message = _clean_message(summary, description)
        stamp = f"{int(when if when is not None else time.time())} +0000"
        env = {
            "GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": f"{author}@localhub.invalid",
            "GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": f"{author}@localhub.invalid",
            "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp,
        }
        args = ["commit-tree", tree]
        if parent:
            args += ["-p", parent]
        return self.git(*args, input=message.encode("utf-8"), env=env).decode().strip()

    def create_branch(self, branch: str, starting_point: str | None) -> str:
        check_ref_name(branch, "branch")
        with self.lock():
            refs = self.refs()
            if branch in refs["branches"]:
                raise Conflict(f"Reference already exists: refs/heads/{branch}")
            if branch in refs["tags"]:
                raise Conflict(f"A tag named {branch!r} exists; choose another branch name")
            if any(b.startswith(branch + "/") or branch.startswith(b + "/") for b in refs["branches"]):
                raise Conflict(f"branch {branch!r} clashes with an existing branch name")
            start = self.resolve(starting_point or "main")
            if not self.git_ok("update-ref", f"refs/heads/{branch}", start, ZERO_OID):
                raise Conflict(f"Reference already exists: refs/heads/{branch}")
            return start

    def delete_branch(self, branch: str) -> None:
        with self.lock():
            head = self.refs()["branches"].get(branch)
            if head is None:
                raise RevisionNotFound(f"Invalid rev id: {branch} (no such branch)")
            if branch == "main":
                raise Forbidden("cannot delete the default branch 'main'")
            if not self.git_ok("update-ref", "-d", f"refs/heads/{branch}", head):
                raise PreconditionFailed(f"branch {branch} moved while being deleted; retry")

    def create_tag(self, tag: str, revision: str, message: str | None, author: str = DEFAULT_USER) -> str:
        check_ref_name(tag, "tag")
        with self.lock():
            refs = self.refs()
            if tag in refs["tags"]:
                raise Conflict(f"Tag {tag} already exists")
            if tag in refs["branches"]:
                raise Conflict(f"A branch named {tag!r} exists; choose another tag name")
            target = self.resolve(revision)
            if message:
                env = {"GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": f"{author}@localhub.invalid"}
                self.git("tag", "-a", "-m", _clean_message(message, ""), "--", tag, target, env=env)
            elif not self.git_ok("update-ref", f"refs/tags/{tag}", target, ZERO_OID):
                raise Conflict(f"Tag {tag} already exists")
            return target

    def delete_tag(self, tag: str) -> None:
        with self.lock():
            if tag not in self.refs()["tags"]:
                raise RevisionNotFound(f"Invalid rev id: {tag} (no such tag)")
            self.git("update-ref", "-d", f"refs/tags/{tag}")


class BlobWriter:
    """Write one loose git blob of a size known in advance, piece by piece (e.g. as an upload arrives).

    The git sha1 (and, with ``sha256=True``, the content's sha256) are computed in the same pass as the
    deflate, so a large upload is read once. Blobs of at least :data:`LARGE_BLOB` bytes are written as
    zlib *stored* blocks directly (what ``zlib.compressobj(0)`` produces, at a fraction of its cost:
    only an Adler-32 and a copy; weights do not compress anyway). :meth:`finish` checks the size and
    links the object into place (a no-op when identical content exists); :meth:`discard` removes the
    temporary file.
    """

    def __init__(self, repo: Repo, size: int, *, sha256: bool = False):
        if size < 0:
            raise BadRequest("negative size")
        self.repo, self.size, self.written = repo, size, 0
        header = b"blob %d\0" % size
        self.sha1 = hashlib.sha1(header)
        self.sha256 = hashlib.sha256() if sha256 else None
        fd, self.tmp = tempfile.mkstemp(prefix="tmp_obj_", dir=repo.path / "objects")
        self.out = os.fdopen(fd, "wb")
        if size >= LARGE_BLOB:
            self.packer = None
            self.adler = 1
            self.out.write(b"\x78\x01")  # zlib header: deflate, 32K window, no dictionary, level "fastest"
            self._store(header)
        else:
            self.packer = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION)
            self.out.write(self.packer.compress(header))

    def _store(self, data: bytes | memoryview) -> None:
        """Append ``data`` as non-final stored deflate blocks (at most 65535 bytes each)."""
        view = memoryview(data)
        self.adler = zlib.adler32(view, self.adler)
        parts: list = []
        for i in range(0, len(view), 0xFFFF):
            block = view[i: i + 0xFFFF]
            parts.append(struct.pack("<BHH", 0, len(block), 0xFFFF ^ len(block)))
            parts.append(block)
        self.out.write(b"".join(parts))

    def write(self, piece: bytes | memoryview) -> None:
        self.written += len(piece)
        if self.written > self.size:
            raise BadRequest(f"more than the announced {self.size} bytes")
        self.sha1.update(piece)
        if self.sha256 is not None:
            self.sha256.update(piece)
        if self.packer is None:
            self._store(piece)
        else:
            self.out.write(self.packer.compress(piece))

    def finish(self) -> str:
        if self.packer is None:
            self.out.write(b"\x01\x00\x00\xff\xff" + struct.pack(">I", self.adler))  # empty final block
        else:
            self.out.write(self.packer.flush())
        self.out.close()
        if self.written != self.size:
            raise BadRequest(f"received {self.written} bytes, expected {self.size}")
        oid = self.sha1.hexdigest()
        final = self.repo.blob_path(oid)
        final.parent.mkdir(exist_ok=True)
        os.chmod(self.tmp, 0o444)
        try:
            os.link(self.tmp, final)
        except FileExistsError:
            pass  # identical content is already stored
        return oid

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.out.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


def _clean_message(summary: str, description: str) -> str:
    summary = (summary or "").replace("\0", "").strip() or "Update files"
    description = (description or "").replace("\0", "").strip()
    return f"{summary}\n\n{description}\n" if description else f"{summary}\n"


class Storage:
    """All repositories under one root folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = self.root / ".tmp"
        self.tmp_dir.mkdir(exist_ok=True)
        if shutil.which("git") is None:
            raise RuntimeError("the local hub needs the git command line tool on PATH")

    def clean_tmp(self) -> int:
        """Remove what a killed server left in ``ROOT/.tmp`` (uploads, staging); called at server start,
        so one root is served by one server at a time. Returns how many entries were removed."""
        removed = 0
        for entry in list(self.tmp_dir.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
            removed += not entry.exists()
        return removed

    def _dir(self, repo_type: str, namespace: str, name: str) -> Path:
        path = self.root / f"{repo_type}s" / namespace / f"{name}.git"
        # names are validated, but make sure nothing ever lands outside the root
        if self.root not in path.parents:
            raise BadRequest("invalid repository path")
        return path

    def get(self, repo_type: str, repo_id: str) -> Repo:
        repo_type = check_repo_type(repo_type)
        namespace, name = check_repo_id(repo_id)  # BadRequest (400) for names that could never exist
        path = self._dir(repo_type, namespace, name)
        if not (path / "HEAD").is_file():
            raise RepoNotFound(f"Repository Not Found: {repo_type} {repo_id} does not exist")
        return Repo(self, repo_type, namespace, name, path)

    def exists(self, repo_type: str, repo_id: str) -> bool:
        try:
            self.get(repo_type, repo_id)
        except StorageError:
            return False
        return True

    def create(self, repo_type: str, repo_id: str, *, private: bool = False, sdk: str | None = None,
               author: str = DEFAULT_USER) -> Repo:
        """Create a bare repository with ``main`` holding the Hub's initial commit; :class:`Conflict` if it exists."""
        repo_type = check_repo_type(repo_type)
        namespace, name = check_repo_id(repo_id)
        final = self._dir(repo_type, namespace, name)
        if (final / "HEAD").exists():
            raise Conflict(f"You already created this {repo_type} repo: {repo_id}")
        staging = self.tmp_dir / f"new-{uuid.uuid4().hex}.git"
        proc = subprocess.run(
            ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(staging)],
            capture_output=True, env=_git_env(),
        )
        if proc.returncode != 0:
            raise GitError(f"git init failed: {proc.stderr.decode('utf-8', 'replace')[:500]}")
        try:
            meta = {"private": bool(private), "createdAt": iso_date(time.time())}
            if sdk:
                meta["sdk"] = sdk
            (staging / "hub.json").write_text(json.dumps(meta))
            (staging / "description").write_text(f"{repo_type} {repo_id} (hf-transfer-seg local hub)\n")
            repo = Repo(self, repo_type, namespace, name, staging)
            files = {".gitattributes": HUB_GITATTRIBUTES.encode()}
            if repo_type == "space":
                files["README.md"] = _space_readme(name, sdk).encode()
            lines = [f"100644 {repo.write_blob(data)}\t{path}" for path, data in files.items()]
            first = repo._write_commit(None, lines, "initial commit", "", author)
            repo.git("update-ref", "refs/heads/main", first, ZERO_OID)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, final)
            except OSError:
                raise Conflict(f"You already created this {repo_type} repo: {repo_id}") from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return Repo(self, repo_type, namespace, name, final)

    def delete(self, repo_type: str, repo_id: str) -> None:
        repo = self.get(repo_type, repo_id)
        trash = self.tmp_dir / f"deleted-{uuid.uuid4().hex}"
        with repo.lock():
            os.rename(repo.path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(OSError):
            repo.path.parent.rmdir()  # the namespace folder, once empty

    def list(self, repo_type: str, author: str | None = None) -> list[Repo]:
        repo_type = check_repo_type(repo_type)
        base = self.root / f"{repo_type}s"
        found = []
        if not base.is_dir():
            return found
        for ns_dir in sorted(base.iterdir()):
            if author and ns_dir.name != author:
                continue
            for repo_dir in sorted(ns_dir.glob("*.git")):
                if (repo_dir / "HEAD").is_file():
                    found.append(Repo(self, repo_type, ns_dir.name, repo_dir.name[:-4], repo_dir))
        return found


def _space_readme(name: str, sdk: str | None) -> str:
    lines = ["---", f"title: {name}", f"sdk: {sdk or 'gradio'}"]
    if (sdk or "gradio") in ("gradio", "streamlit"):
        lines.append("app_file: app.py")
    lines += ["pinned: false", "---", ""]
    return "\n".join(lines)
