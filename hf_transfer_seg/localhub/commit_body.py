"""The body of ``POST /api/{type}s/{repo}/commit/{rev}``: NDJSON, decoded chunk by chunk as it arrives.

Lines are ``{"key": ..., "value": ...}`` objects: one ``header`` first, then ``file`` (path, base64
content), ``deletedFile``, ``deletedFolder`` and ``lfsFile``. A large ``file`` line is streamed: its
base64 content is decoded into a temporary file under the storage's ``.tmp`` while it is received.
"""

from __future__ import annotations

import binascii
import contextlib
import os
import tempfile

from starlette.concurrency import run_in_threadpool

from hf_transfer_seg.localhub import storage as st
from hf_transfer_seg.localhub.limits import MAX_LINE, loads
from hf_transfer_seg.localhub.responses import HTTPError

# a commit line longer than this that starts like STREAM_PREFIX has its content decoded as it arrives
STREAM_LINE = 1 << 20
STREAM_PREFIX = b'{"key": "file", "value": {"content": "'


class _StreamedContent:
    """The base64 ``content`` of one large ``file`` line, decoded into a temporary file as it arrives."""

    def __init__(self, repo: st.Repo):
        fd, self.path = tempfile.mkstemp(prefix="upload-", dir=repo.storage.tmp_dir)
        self.out = os.fdopen(fd, "wb")
        self.size = 0
        self.pending = b""  # base64 characters not yet decodable (fewer than 4), or a split escape
        self.padded = False

    def feed(self, data: bytes) -> None:
        if self.pending:
            data = self.pending + data
        hold = b""
        if b"\\" in data:  # JSON may escape '/' as '\/'; any other escape is invalid base64 anyway
            if data.endswith(b"\\"):
                data, hold = data[:-1], b"\\"
            data = data.replace(b"\\/", b"/")
        usable = len(data) - len(data) % 4
        self.pending = data[usable:] + hold
        if usable <= 0:
            return
        if self.padded:
            raise HTTPError(400, "file content is not valid base64 (data after padding)")
        try:
            decoded = binascii.a2b_base64(data[:usable], strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise HTTPError(400, f"file content is not valid base64 ({exc})") from None
        self.padded = data[usable - 1: usable] == b"="
        self.out.write(decoded)
        self.size += len(decoded)

    def close(self) -> None:
        self.out.close()
        if self.pending:
            raise HTTPError(400, "file content is not valid base64 (length is not a multiple of 4)")

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.out.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class CommitReader:
    """Parse a commit's NDJSON body chunk by chunk.

    Lines are ``{"key": ..., "value": ...}`` objects: one ``header`` first, then ``file`` (path,
    base64 content), ``deletedFile``, ``deletedFolder``. Small lines are parsed whole. A ``file`` line
    that grows past :data:`STREAM_LINE` bytes and starts the way huggingface_hub writes it
    (``{"key": "file", "value": {"content": "``) is streamed: its base64 content is decoded while it
    is received and the rest of the line (path, encoding) parsed at its end, so a 100 MB upload is
    never held as one 133 MB line plus a 133 MB string plus the decoded bytes.

    The first error is kept in :attr:`error` (the caller keeps draining the body) and raised by
    :meth:`finish`.
    """

    def __init__(self, repo: st.Repo):
        self.repo = repo
        self.header: dict | None = None
        self.ops: list[st.FileOp] = []
        self.error: Exception | None = None
        self.lines = 0
        self.buffer = bytearray()
        self.scan_from = 0
        self.streamed: _StreamedContent | None = None
        self.tail: bytearray | None = None  # rest of a streamed line, after its content

    async def feed(self, chunk: bytes) -> None:
        """Consume the next piece of the body (ignored once an error was found: the caller drains)."""
        if self.error is not None:
            return
        try:
            await self._feed(chunk)
        except (HTTPError, st.StorageError) as exc:
            self.error = exc
            self.buffer = bytearray()
            self.discard()

    async def _feed(self, chunk: bytes) -> None:
        if self.streamed is not None and self.tail is None:
            quote_at = chunk.find(b'"')
            if quote_at < 0:
                self.streamed.feed(chunk)
                return
            self.streamed.feed(chunk[:quote_at])
            self.tail = bytearray()
            chunk = chunk[quote_at + 1:]
        if self.tail is not None:
            newline = chunk.find(b"\n")
            self.tail += chunk if newline < 0 else chunk[:newline]
            if len(self.tail) > (1 << 16):
                raise HTTPError(400, f"commit body line {self.lines + 1}: file entry too long after its content")
            if newline < 0:
                return
            await self._finish_streamed()
            chunk = chunk[newline + 1:]
        self.scan_from = len(self.buffer)
        self.buffer += chunk
        while True:
            newline = self.buffer.find(b"\n", self.scan_from)
            if newline < 0:
                break
            line = bytes(self.buffer[:newline])
            del self.buffer[: newline + 1]
            self.scan_from = 0
            await self._line(line)
        if len(self.buffer) > MAX_LINE:
            raise HTTPError(413, f"commit body line {self.lines + 1} is longer than {MAX_LINE} bytes")
        if len(self.buffer) > STREAM_LINE and self.header is not None and self.buffer.startswith(STREAM_PREFIX):
            self.streamed = _StreamedContent(self.repo)
            rest = bytes(self.buffer[len(STREAM_PREFIX):])
            self.buffer = bytearray()
            self.scan_from = 0
            await self._feed(rest)

    async def _finish_streamed(self) -> None:
        self.lines += 1
        streamed, tail = self.streamed, bytes(self.tail or b"")
        self.streamed, self.tail = None, None
        try:
            streamed.close()
            item = _parse_line(STREAM_PREFIX + b'"' + tail, self.lines)
            value = item["value"]
            path = st.check_path(value.get("path"))
            if item["key"] != "file" or (value.get("encoding") or "").lower() != "base64":
                raise HTTPError(400, f"file {path}: large file contents must be sent base64-encoded")
            blob = await run_in_threadpool(self.repo.write_blob_from_file, streamed.path, streamed.size)
        finally:
            streamed.discard()
        self.ops.append(st.FileOp(path, blob))

    async def finish(self) -> None:
        if self.error is None:
            try:
                if self.streamed is not None:
                    if self.tail is None:
                        raise HTTPError(400, "commit body ends inside a file's content")
                    await self._finish_streamed()
                if self.buffer.strip():
                    await self._line(bytes(self.buffer))
            except (HTTPError, st.StorageError) as exc:
                self.error = exc
        if self.error is not None:
            raise self.error
        if self.header is None:
            raise HTTPError(400, "commit body has no 'header' line (NDJSON: one JSON object per line)")

    def discard(self) -> None:
        if self.streamed is not None:
            self.streamed.discard()
        self.streamed, self.tail = None, None

    async def _line(self, line: bytes) -> None:
        self.lines += 1
        if not line.strip():
            return
        if len(line) > (1 << 20):
            item = await run_in_threadpool(_parse_line, line, self.lines)
        else:
            item = _parse_line(line, self.lines)
        key, value = item["key"], item["value"]
        if key == "header":
            if self.header is not None:
                raise HTTPError(400, "commit body has two 'header' lines")
            summary, description = value.get("summary"), value.get("description") or ""
            parent = value.get("parentCommit")
            if not isinstance(summary, str) or not summary.strip():
                raise HTTPError(400, "commit header needs a non-empty 'summary'")
            if not isinstance(description, str) or (parent is not None and not isinstance(parent, str)):
                raise HTTPError(400, "commit header: 'description' and 'parentCommit' must be strings")
            self.header = {"summary": summary, "description": description, "parent": parent}
            return
        if self.header is None:
            raise HTTPError(400, "the first line of a commit body must be the 'header'")
        if key == "file":
            path = st.check_path(value.get("path"))
            content = value.get("content")
            encoding = (value.get("encoding") or "utf-8").lower()
            if not isinstance(content, str):
                raise HTTPError(400, f"file {path}: 'content' must be a string")
            if encoding not in ("base64", "utf-8", "utf8"):
                raise HTTPError(400, f"file {path}: unknown encoding {encoding!r} (expected base64)")
            if len(content) > (1 << 20):
                blob = await run_in_threadpool(_store_content, self.repo, path, content, encoding)
            else:
                blob = _store_content(self.repo, path, content, encoding)
            self.ops.append(st.FileOp(path, blob))
        elif key == "deletedFile":
            self.ops.append(st.FileOp(st.check_path(value.get("path"))))
        elif key == "deletedFolder":
            path = value.get("path")
            path = st.check_path(path.rstrip("/") if isinstance(path, str) else path)
            self.ops.append(st.FileOp(path, folder=True))
        elif key == "lfsFile":
            path = st.check_path(value.get("path"))
            oid, size = value.get("oid"), value.get("size")
            if (value.get("algo") or "sha256") != "sha256" or not isinstance(oid, str):
                raise HTTPError(400, f"lfsFile {path}: needs 'algo' sha256 and an 'oid'")
            blob = await run_in_threadpool(self.repo.lfs_blob, oid)
            if blob is None:
                raise HTTPError(
                    400,
                    f"lfsFile {path}: LFS object {oid[:80]} has not been uploaded to this repository (upload it "
                    "through the LFS batch API first; HfApi does this when preupload answers uploadMode 'lfs')",
                )
            if size is not None and size != await run_in_threadpool(self.repo.blob_size, blob):
                raise HTTPError(400, f"lfsFile {path}: size {size} does not match the uploaded object")
            self.ops.append(st.FileOp(path, blob))
        else:
            raise HTTPError(400, f"unknown commit operation {key!r} on line {self.lines}")



def _parse_line(line: bytes, number: int) -> dict:
    item = loads(line, f"commit body line {number}")
    if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not isinstance(item.get("value"), dict):
        raise HTTPError(400, f"commit body line {number} must be an object with 'key' (string) and 'value' (object)")
    return item


def _store_content(repo: st.Repo, path: str, content: str, encoding: str) -> str:
    if encoding == "base64":
        try:
            data = binascii.a2b_base64(content, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise HTTPError(400, f"file {path}: content is not valid base64 ({exc})") from None
    else:
        data = content.encode("utf-8", "surrogatepass")
    del content
    return repo.write_blob(data)
