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
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from hf_transfer_seg.localhub.gitobjects import (  # noqa: F401 - re-exported: the HTTP layer uses st.*
    DEFAULT_USER, LARGE_BLOB, BlobStore, BlobWriter, _git_env, _run_git,
)
from hf_transfer_seg.localhub.names import (  # noqa: F401 - re-exported: the HTTP layer uses st.*
    _BAD_REF_CHARS, _HEX40, _HEX64, _NAME_RE, _SHORT_HEX, DISK_FULL_HINT, REPO_TYPES, ZERO_OID, BadRequest, Conflict,
    DiskFull, EntryNotFound, Forbidden, GitError, PreconditionFailed, RepoNotFound, RevisionNotFound, StorageError, check_name_part, check_path,
    check_ref_name, check_repo_id, check_repo_type, MIN_ABBREV, is_commit_abbrev,
)


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


def iso_date(timestamp: float) -> str:
    """Hub date format: ``2024-01-02T03:04:05.000Z``."""
    when = _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


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


class Repo(BlobStore):
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
        """The commit a revision names: the one resolver of every route (info, tree, paths-info, resolve, commits).

        4 to 40 hex digits (any case) always name a commit, full or abbreviated, as in git: the only commit whose
        sha starts with them (two or more: :class:`BadRequest` naming them), never a branch or tag (no such ref
        can be created: :func:`check_ref_name`). Anything else is a branch, a tag or a ``refs/...`` name."""
        if not isinstance(revision, str) or not revision or _BAD_REF_CHARS.search(revision) or ".." in revision:
            raise RevisionNotFound(f"Invalid rev id: {revision!r}")
        try:
            revision.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a JSON body (startingPoint): no ref is named so
            raise RevisionNotFound(f"Invalid rev id: {revision!r}") from None
        if is_commit_abbrev(revision):
            return self._commit_by_prefix(revision.lower())
        refs = self.refs()
        if revision in refs["branches"]:
            return refs["branches"][revision]
        if revision in refs["tags"]:
            return refs["tags"][revision]
        for prefix, table in (("refs/heads/", "branches"), ("refs/tags/", "tags"), ("refs/", "prs")):
            if revision.startswith(prefix) and revision[len(prefix):] in refs[table]:
                return refs[table][revision[len(prefix):]]
        raise RevisionNotFound(f"Invalid rev id: {revision}")

    def _commit_by_prefix(self, prefix: str) -> str:
        """The commit whose sha starts with ``prefix`` (4 to 40 lowercase hex digits)."""
        if len(prefix) == 40:
            candidates = [prefix]
        else:  # every object (any type) whose name starts with the prefix
            candidates = self.git("rev-parse", f"--disambiguate={prefix}").decode().split()
        commits = []
        if candidates:
            out = self.git("cat-file", "--batch-check=%(objectname) %(objecttype)",
                           input="".join(c + "\n" for c in candidates).encode())
            commits = sorted(line.split()[0] for line in out.decode().splitlines() if line.endswith(" commit"))
        if len(commits) == 1:
            return commits[0]
        if not commits:
            raise RevisionNotFound(f"Invalid rev id: {prefix} (no commit sha starts with it; {MIN_ABBREV} to 40 hex "
                                   "digits always name a commit, never a branch or tag)")
        shown = ", ".join(commits[:10]) + (f" and {len(commits) - 10} more" if len(commits) > 10 else "")
        raise BadRequest(f"revision {prefix} is ambiguous: {len(commits)} commits start with it ({shown}); "
                         "give more digits")

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
            head = None if is_commit_abbrev(branch) else refs["branches"].get(branch)
            if head is None:
                if branch in refs["tags"] or is_commit_abbrev(branch):
                    raise BadRequest(f"cannot commit to {branch!r}: commits can only be made to a branch")
                raise RevisionNotFound(f"Invalid rev id: {branch} (no such branch)")
            if parent_commit:
                parent = parent_commit.lower()
                if not is_commit_abbrev(parent) or not head.startswith(parent):
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


def _valid_text(text: str) -> str:
    """``text`` without NULs, lone surrogates (``\\ud800`` from JSON) replaced by U+FFFD: git stores UTF-8, and
    that is what the Hub's JavaScript does when it encodes such a string."""
    text = (text or "").replace("\0", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _clean_message(summary: str, description: str) -> str:
    summary = _valid_text(summary).strip() or "Update files"
    description = _valid_text(description).strip()
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
            shutil.rmtree(staging, ignore_errors=True)
            stderr = proc.stderr.decode("utf-8", "replace")
            if "No space left on device" in stderr or "Disk quota exceeded" in stderr:
                raise DiskFull(f"{DISK_FULL_HINT} (git init: {stderr.strip()[:200]})")
            raise GitError(f"git init failed: {stderr[:500]}")
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
