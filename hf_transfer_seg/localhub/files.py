"""File routes of the local hub: list a tree, paths-info, and ``resolve`` (downloads, with ranges).

A mixin of :class:`~hf_transfer_seg.localhub.app.HubApp` (like :class:`~hf_transfer_seg.localhub.lfs.LfsRoutes`):
handlers receive the request context and the captured URL parts, run in a worker thread, and resolve
the revision with :meth:`Repo.resolve` (a full commit sha first, so no branch can shadow a commit).
"""

from __future__ import annotations

import mimetypes
from urllib.parse import parse_qs, quote

from starlette.responses import Response, StreamingResponse

from hf_transfer_seg.localhub import storage as st
from hf_transfer_seg.localhub.params import int_param, parse_range, truthy
from hf_transfer_seg.localhub.responses import HTTPError, JSONResponse


class FileRoutes:
    """``GET .../tree/{rev}/{path}``, ``POST .../paths-info/{rev}``, ``GET|HEAD /{repo}/resolve/{rev}/{path}``."""

    lfs_threshold: int
    tree_page_size: int

    @staticmethod
    def _entry_json(entry: st.Entry) -> dict:
        return {"type": entry.kind, "oid": entry.oid, "size": entry.size, "path": entry.path}

    def tree(self, ctx, repo_type: str, repo_id: str, revision: str, path: str) -> Response:
        repo = self._repo(repo_type, repo_id)
        path = st.check_path(path, allow_empty=True)
        sha = repo.resolve(revision)
        tree = repo.tree(sha)
        if path:
            entry = tree.get(path)
            if entry is None:
                raise HTTPError(404, f"Entry not found: {path} does not exist at {revision}", "EntryNotFound")
            if entry.kind != "directory":
                raise HTTPError(404, f"Entry not found: {path} is a file, not a folder", "EntryNotFound")
        recursive = truthy(ctx.query.get("recursive"))
        prefix = f"{path}/" if path else ""
        selected = [
            e for p, e in tree.items()
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])
        ]
        selected.sort(key=lambda e: e.path)
        limit = min(max(int_param(ctx, "limit", self.tree_page_size), 1), 10000)
        start = int_param(ctx, "cursor", 0)
        page = selected[start: start + limit]
        headers = {}
        if start + limit < len(selected):
            encoded = f"/{quote(path, safe='')}" if path else ""
            url = (f"{ctx.base}/api/{repo_type}s/{repo_id}/tree/{sha}{encoded}?recursive={str(recursive).lower()}"
                   f"&expand={str(truthy(ctx.query.get('expand'))).lower()}&limit={limit}&cursor={start + limit}")
            headers["Link"] = f'<{url}>; rel="next"'
        return JSONResponse([self._entry_json(e) for e in page], headers=headers)

    def paths_info(self, ctx, repo_type: str, repo_id: str, revision: str) -> Response:
        repo = self._repo(repo_type, repo_id)
        content_type = ctx.request.headers.get("content-type", "")
        if "json" in content_type:
            paths = ctx.json().get("paths", [])
        elif "multipart/" in content_type:
            raise HTTPError(415, "send paths-info as a urlencoded form or JSON")
        else:
            try:
                paths = parse_qs(ctx.body.decode("utf-8"), keep_blank_values=True).get("paths", [])
            except UnicodeDecodeError:
                raise HTTPError(400, "paths-info form is not UTF-8") from None
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list):
            raise HTTPError(400, "'paths' must be a list of file paths")
        sha = repo.resolve(revision)
        tree = repo.tree(sha)
        found = []
        for raw in paths:
            path = st.check_path(raw.strip("/") if isinstance(raw, str) else raw, allow_empty=True)
            entry = tree.get(path) if path else None
            if entry is not None:
                found.append(self._entry_json(entry))
        return JSONResponse(found)

    def resolve(self, ctx, repo_type: str, repo_id: str, revision: str, path: str) -> Response:
        repo = self._repo(repo_type, repo_id)
        try:
            path = st.check_path(path)
        except st.BadRequest as exc:
            raise HTTPError(400, exc.message) from None
        sha = repo.resolve(revision)
        entry = repo.tree(sha).get(path)
        if entry is None or entry.kind != "file":
            raise HTTPError(404, f"Entry not found: {path} does not exist at {revision}", "EntryNotFound",
                            headers={"X-Repo-Commit": sha})
        size = entry.size
        # the Hub's ETag of an LFS file is its sha256 (X-Linked-Etag/-Size name the content behind it)
        sha256 = repo.blob_sha256(entry.oid) if size >= self.lfs_threshold else None
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{sha256 or entry.oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": mimetypes.guess_type(path)[0] or "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1], safe='')}",
            "Cache-Control": "private, max-age=0, must-revalidate",
        }
        start, end, status = 0, size, 200
        range_header = ctx.request.headers.get("range")
        if range_header and ctx.request.method == "GET":
            parsed = parse_range(range_header, size)
            if parsed is None:
                raise HTTPError(416, f"Range {range_header!r} not satisfiable for {size} bytes",
                                headers={"Content-Range": f"bytes */{size}", **headers})
            if parsed != (0, size) or range_header.strip() != "bytes=0-":
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        if sha256 is not None:
            headers["X-Linked-Etag"] = f'"{sha256}"'
            headers["X-Linked-Size"] = str(size)
        headers["Content-Length"] = str(end - start)
        if ctx.request.method == "HEAD":
            return Response(b"", status_code=200, headers=headers)
        return StreamingResponse(repo.iter_blob(entry.oid, start, end), status_code=status, headers=headers)
