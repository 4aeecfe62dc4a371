"""Git objects of the local hub: the git environment, and loose blobs read and written without git.

Blobs are written as loose objects directly (the documented loose-object format: zlib of
``"blob <size>\\0" + content``, named by its SHA-1) instead of piping them through ``git hash-object``; large
blobs use zlib *stored* blocks. :class:`BlobStore` is the blob half of :class:`~.storage.Repo` (it needs
``path``, ``git`` and ``git_ok``); :class:`BlobWriter` writes one blob piece by piece as an upload arrives.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Iterator

from hf_transfer_seg.localhub.names import (
    _HEX40, _HEX64, DISK_FULL_HINT, BadRequest, DiskFull, EntryNotFound, GitError,
)

DEFAULT_USER = "local"
LARGE_BLOB = 1 << 20  # blobs at least this big are stored with zlib level 0 (weights do not compress)
_READ_CHUNK = 1 << 20


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
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        if "No space left on device" in stderr or "Disk quota exceeded" in stderr:
            raise DiskFull(f"{DISK_FULL_HINT} (git {args[0]}: {stderr[:200]})")
        raise GitError(f"git {args[0]} failed: {stderr[:500]}")
    return proc


class BlobStore:
    """Loose blobs and the LFS sha256 <-> blob maps of one bare repository (mixed into ``Repo``)."""

    path: Path

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



class BlobWriter:
    """Write one loose git blob of a size known in advance, piece by piece (e.g. as an upload arrives).

    The git sha1 (and, with ``sha256=True``, the content's sha256) are computed in the same pass as the
    deflate, so a large upload is read once. Blobs of at least :data:`LARGE_BLOB` bytes are written as
    zlib *stored* blocks directly (what ``zlib.compressobj(0)`` produces, at a fraction of its cost:
    only an Adler-32 and a copy; weights do not compress anyway). :meth:`finish` checks the size and
    links the object into place (a no-op when identical content exists); :meth:`discard` removes the
    temporary file.
    """

    def __init__(self, repo: BlobStore, size: int, *, sha256: bool = False):
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
