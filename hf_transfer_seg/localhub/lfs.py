"""The git-lfs side of the local hub (basic transfer), mixed into :class:`~.app.HubApp`.

``POST /{repo}.git/info/lfs/objects/batch`` answers where to PUT each object (a URL signed with an
HMAC, because the client PUTs without its Authorization header); ``PUT .../lfs-upload/{sha256}``
stores the raw bytes as a git blob while they arrive. Only used when the server runs with
``lfs_uploads=True`` (see the module doc of :mod:`.app`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from hf_transfer_seg.localhub import storage as st
from hf_transfer_seg.localhub.limits import drain
from hf_transfer_seg.localhub.params import Ctx
from hf_transfer_seg.localhub.responses import HTTPError, JSONResponse

LFS_WRITE_BATCH = 4 << 20  # LFS upload bytes handed to a worker thread at a time


class LfsRoutes:
    """The LFS handlers; expects ``self._lfs_key`` and ``self._repo`` from the app."""

    def _lfs_signature(self, repo_type: str, repo_id: str, oid: str, size: int) -> str:
        message = f"{repo_type}\0{repo_id}\0{oid}\0{size}".encode("utf-8")
        return hmac.new(self._lfs_key, message, hashlib.sha256).hexdigest()

    def lfs_batch(self, ctx: Ctx, repo_type: str, repo_id: str) -> Response:
        """``POST /{repo}.git/info/lfs/objects/batch``: where to PUT each object, or nothing when stored."""
        repo = self._repo(repo_type, repo_id)
        data = ctx.json()
        operation = data.get("operation")
        objects = data.get("objects")
        if operation not in ("upload", "download") or not isinstance(objects, list):
            raise HTTPError(400, "LFS batch: 'operation' must be 'upload' or 'download' and 'objects' a list")
        transfers = data.get("transfers") or ["basic"]
        if not isinstance(transfers, list) or "basic" not in transfers:
            raise HTTPError(400, "LFS batch: only the 'basic' transfer is served by the local hub")
        if (data.get("hash_algo") or "sha256") != "sha256":
            raise HTTPError(400, "LFS batch: only hash_algo 'sha256' is supported")
        answer = []
        for obj in objects:
            oid = obj.get("oid") if isinstance(obj, dict) else None
            size = obj.get("size") if isinstance(obj, dict) else None
            if not isinstance(oid, str) or not st._HEX64.match(oid) or not isinstance(size, int) or size < 0:
                raise HTTPError(400, "LFS batch: each object needs 'oid' (sha256, lowercase hex) and 'size' >= 0")
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if operation == "download":
                # downloads go through /resolve/ (the client never asks the batch API for them)
                item["error"] = {"code": 501, "message": "LFS downloads are served by /resolve/, not the batch API"}
            elif repo.lfs_blob(oid) is None:
                sig = self._lfs_signature(repo_type, repo_id, oid, size)
                href = f"{ctx.base}/api/{repo_type}s/{repo_id}/lfs-upload/{oid}?size={size}&sig={sig}"
                item["actions"] = {"upload": {"href": href, "expires_in": 86400}}
            # else: stored already, no "actions": the client skips the upload
            answer.append(item)
        return JSONResponse({"transfer": "basic", "objects": answer, "hash_algo": "sha256"},
                            media_type="application/vnd.git-lfs+json")

    async def lfs_upload(self, request: Request, _user: str, repo_type: str, repo_id: str, oid: str) -> Response:
        """``PUT .../lfs-upload/{sha256}?size=&sig=``: the raw bytes, stored as a git blob as they arrive.

        The git sha1, the sha256 and the deflate are computed in one pass; the object is kept only if
        both the size and the sha256 match what the URL promised.
        """
        try:
            size = int(request.query_params.get("size", ""))
        except ValueError:
            raise HTTPError(400, "LFS upload: missing or invalid 'size'") from None
        if not st._HEX64.match(oid) or size < 0:
            raise HTTPError(400, "LFS upload: invalid object id")
        expected = self._lfs_signature(repo_type, repo_id, oid, size)
        if not hmac.compare_digest(expected, request.query_params.get("sig", "")):
            raise HTTPError(403, "LFS upload: invalid or missing signature; ask the batch API for an upload URL")
        repo = self._repo(repo_type, repo_id)
        if repo.lfs_blob(oid) is not None:
            await drain(request)
            return Response(status_code=200)
        writer = await run_in_threadpool(st.BlobWriter, repo, size)
        sha256 = hashlib.sha256()

        async def digest(piece: bytes) -> None:
            # hashlib and the blob writer release the GIL: the sha256 and the git object (sha1,
            # Adler-32, write) are computed in two worker threads, i.e. on two cores
            await asyncio.gather(run_in_threadpool(sha256.update, piece), run_in_threadpool(writer.write, piece))

        working: asyncio.Future | None = None  # the previous piece, digested while the next one arrives
        try:
            pending: list[bytes] = []
            pending_size = 0
            async for chunk in request.stream():
                if not chunk:
                    continue
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= LFS_WRITE_BATCH:
                    piece, pending, pending_size = b"".join(pending), [], 0
                    if working is not None:
                        await working
                    working = asyncio.ensure_future(digest(piece))
            if working is not None:
                await working
            working = None
            if pending:
                await digest(b"".join(pending))
            blob = await run_in_threadpool(writer.finish)
        except st.BadRequest as exc:
            raise HTTPError(400, f"LFS upload of {oid}: {exc.message}") from None
        finally:
            if working is not None:  # never discard the file under a worker still writing it
                await asyncio.wait([working])
                if not working.cancelled():
                    working.exception()  # retrieved: the error being raised already says what went wrong
            writer.discard()
        if sha256.hexdigest() != oid:
            raise HTTPError(400, f"LFS upload: content sha256 {sha256.hexdigest()} is not {oid}")
        await run_in_threadpool(repo.record_lfs, oid, blob)
        return Response(status_code=200)
