"""The HTTP side of the local Hub: an ASGI app (Starlette requests and responses) answering what huggingface_hub asks.

Routes are a table (:mod:`.routes`: method, pattern, handler) matched on the raw path's segments.
Every route reads the whole request body before answering, errors included (leftover bytes on a
keep-alive connection would corrupt the next request). Blocking git work runs in Starlette's thread
pool; commits stream their NDJSON body (:mod:`.commit_body`) line by line, so a large upload is
decoded and written as it arrives instead of being held in memory several times.

Uploads: preupload answers uploadMode "regular" (bytes base64 inside the commit) by default. With
``lfs_uploads=True`` files of at least ``lfs_threshold`` bytes get "lfs": the client hashes them
(sha256), asks ``/{repo}.git/info/lfs/objects/batch`` (basic transfer), PUTs the raw bytes to a
signed URL on this server (stored as a git blob while they arrive: sha1, sha256 and the object are
computed in one pass) and commits an ``lfsFile`` line. Off by default because huggingface_hub sends
every "lfs" file through Xet whenever ``hf_xet`` is importable and ``HF_HUB_DISABLE_XET`` is unset,
whatever the server says, and this server does not speak Xet.

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and
``X-Error-Message`` headers plus a JSON ``{"error": ...}`` body, which the client turns into its
typed exceptions.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import os
import re
from types import SimpleNamespace
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from hf_transfer_seg.localhub import limits, routes
from hf_transfer_seg.localhub import storage as st
from hf_transfer_seg.localhub.cards import add_card_fields, card_problems, read_card
from hf_transfer_seg.localhub.commit_body import CommitReader
from hf_transfer_seg.localhub.files import FileRoutes
from hf_transfer_seg.localhub.lfs import LfsRoutes
from hf_transfer_seg.localhub.params import Ctx, int_param, truthy
from hf_transfer_seg.localhub.responses import HTTPError, JSONResponse, error_response, header_value

log = logging.getLogger(__name__)

LFS_THRESHOLD = 1 << 20  # with lfs_uploads, files at least this big are uploaded through the LFS batch API
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


class HubApp(LfsRoutes, FileRoutes):
    """State shared by the routes: the storage, the optional token, page sizes."""

    def __init__(self, root, *, token: str | None = None, user: str = st.DEFAULT_USER,
                 commits_page_size: int = 50, tree_page_size: int = 1000, lfs_uploads: bool = False,
                 lfs_threshold: int = LFS_THRESHOLD):
        self.storage = st.Storage(root)
        # what a killed server left half-written (uploads, staging folders) is of no use to anyone
        removed = self.storage.clean_tmp()
        if removed:
            log.info("local hub: removed %d temporary upload file(s) left in %s", removed, self.storage.tmp_dir)
        self.token = token or None
        # answer uploadMode "lfs" to preupload for files of at least lfs_threshold bytes (see module doc)
        self.lfs_uploads = bool(lfs_uploads)
        self.lfs_threshold = max(int(lfs_threshold), 1)
        # signs upload URLs: the client PUTs LFS content without its Authorization header
        self._lfs_key = (token or os.urandom(32).hex()).encode("utf-8")
        self.user = user
        self.commits_page_size = commits_page_size
        self.tree_page_size = tree_page_size

    # -- entry point -----------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        try:
            return await self._answer(request)
        except limits.BodyTimeout as exc:
            # the client stopped sending its body, or sends it too slowly: answer and close
            return error_response(408, str(exc), headers={"Connection": "close"})

    async def _answer(self, request: Request) -> Response:
        try:
            return await self._dispatch(request)
        except ClientDisconnect:
            return Response(status_code=400)
        except limits.BodyTimeout:
            raise
        except HTTPError as exc:
            await limits.drain(request)
            return error_response(exc.status, exc.message, exc.code, exc.body, exc.headers)
        except st.StorageError as exc:
            await limits.drain(request)
            return error_response(exc.status, exc.message, exc.code)
        except OSError as exc:
            await limits.drain(request)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                log.error("local hub: %s %s: disk full under %s", request.method, request.url.path, self.storage.root)
                return error_response(507, st.DISK_FULL_HINT, st.DiskFull.code)
            log.exception("local hub: I/O error on %s %s", request.method, request.url.path)
            return error_response(500, f"I/O error in the local hub's storage: {exc.strerror or exc}")
        except Exception as exc:  # noqa: BLE001 - answer instead of dropping the connection
            log.exception("local hub: internal error on %s %s", request.method, request.url.path)
            await limits.drain(request)
            return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    async def _dispatch(self, request: Request) -> Response:
        seg = routes.segments(request.scope.get("raw_path") or request.scope["path"].encode())
        found = routes.match(request.method, seg)
        user = self._authenticate(request) if found is None or found[0].auth else self.user
        if found is None:
            raise routes.not_found(seg)
        route, args = found
        handler = getattr(self, route.handler)
        if route.kind == "stream":
            return await handler(request, user, *args)
        body = await limits.read_body(request)
        ctx = Ctx(request, seg, body, user)
        return await run_in_threadpool(handler, ctx, *args)

    def _authenticate(self, request: Request) -> str:
        if self.token is None:
            return self.user
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise HTTPError(401, "Authorization required: this local hub was started with a token; "
                                 "send it as a Bearer token (HF_TOKEN)")
        if not hmac.compare_digest(value.encode("utf-8", "replace"), self.token.encode("utf-8")):
            raise HTTPError(401, "Invalid credentials in Authorization header")
        return self.user

    # -- helpers ---------------------------------------------------------------------------------

    def repo_url(self, ctx_base: str, repo_type: str, repo_id: str) -> str:
        return f"{ctx_base}/{URL_PREFIX[repo_type]}{repo_id}"

    def _repo(self, repo_type: str, repo_id: str) -> st.Repo:
        return self.storage.get(repo_type, repo_id)

    # -- account and repositories ----------------------------------------------------------------

    def index(self, ctx: Ctx) -> Response:
        return JSONResponse({"localhub": True, "message": "hf-transfer-seg local Hub"})

    def agent_harnesses(self, ctx: Ctx) -> Response:
        """The client's user-agent registry: nothing to detect offline."""
        return JSONResponse({"standardEnvVars": [], "harnesses": {}})

    def xet_token(self, ctx: Ctx, repo_type: str, repo_id: str, _rest: str) -> Response:
        # hf_xet makes this request itself and shows only the status: say it in the log too
        log.warning("local hub: a client asked for a Xet token (%s); it needs HF_HUB_DISABLE_XET=1 "
                    "when the server runs with lfs_uploads=True", repo_id)
        raise HTTPError(
            501,
            "the local hub does not speak Xet. It answered uploadMode 'lfs' because it runs with "
            "lfs_uploads=True, which needs clients with Xet off: set HF_HUB_DISABLE_XET=1 in the "
            "client, or serve without lfs_uploads (uploads then go inline, base64 in the commit)",
        )

    def whoami(self, ctx: Ctx) -> Response:
        return JSONResponse({
            "type": "user", "id": ctx.user, "name": ctx.user, "fullname": ctx.user, "email": None,
            "emailVerified": False, "canPay": False, "isPro": False, "periodEnd": None, "avatarUrl": "",
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "local hub", "role": "write"}},
        })

    def _repo_id_from_body(self, ctx: Ctx, data: dict) -> tuple[str, str]:
        repo_type = st.check_repo_type(data.get("type") or data.get("repoType"))
        name = data.get("name")
        namespace = data.get("organization") or ctx.user
        if not isinstance(name, str) or not isinstance(namespace, str):
            raise HTTPError(400, "JSON fields 'name' (and 'organization') must be strings")
        return repo_type, f"{namespace}/{name}"

    def create_repo(self, ctx: Ctx) -> Response:
        data = ctx.json()
        repo_type, repo_id = self._repo_id_from_body(ctx, data)
        url = self.repo_url(ctx.base, repo_type, repo_id)
        private = bool(data.get("private")) or data.get("visibility") == "private"
        sdk = data.get("sdk") if repo_type == "space" else None
        if sdk is not None and (not isinstance(sdk, str) or not re.fullmatch(r"[a-z0-9_-]{1,32}", sdk)):
            raise HTTPError(400, f"invalid space sdk {sdk!r}")
        try:
            self.storage.create(repo_type, repo_id, private=private, sdk=sdk, author=ctx.user)
        except st.Conflict as exc:
            # the client reads "url" from the 409 body when exist_ok=True
            return error_response(409, exc.message, body={"url": url})
        return JSONResponse({"url": url, "name": repo_id, "id": repo_id})

    def delete_repo(self, ctx: Ctx) -> Response:
        repo_type, repo_id = self._repo_id_from_body(ctx, ctx.json())
        self.storage.delete(repo_type, repo_id)
        return JSONResponse({})

    def validate_yaml(self, ctx: Ctx) -> Response:
        content = ctx.json().get("content", "")
        if not isinstance(content, str):
            raise HTTPError(400, "'content' must be a string")
        problems = card_problems(content, ctx.json().get("repoType") or "model")
        if problems:
            message = "Invalid metadata in README.md: " + "; ".join(problems)
            return JSONResponse({"errors": [{"message": p} for p in problems], "warnings": []}, status_code=400,
                                headers={"X-Error-Message": header_value(message, 500)})
        return JSONResponse({"errors": [], "warnings": []})

    def list_repos(self, ctx: Ctx, repo_type: str) -> Response:
        author = ctx.query.get("author")
        search = (ctx.query.get("search") or "").lower()
        try:
            limit = int(ctx.query.get("limit") or 0)
        except ValueError:
            raise HTTPError(400, "'limit' must be an integer") from None
        items = []
        for repo in self.storage.list(repo_type, author=author):
            if search and search not in repo.repo_id.lower():
                continue
            item = {"_id": _object_id(repo), "id": repo.repo_id, "private": bool(repo.meta().get("private")),
                    "createdAt": repo.meta().get("createdAt"), "likes": 0, "downloads": 0, "tags": []}
            if repo_type == "model":
                item["modelId"] = repo.repo_id
            items.append(item)
            if limit and len(items) >= limit:
                break
        return JSONResponse(items)

    def auth_check(self, ctx: Ctx, repo_type: str, repo_id: str) -> Response:
        self._repo(repo_type, repo_id)
        return JSONResponse({})

    def repo_info(self, ctx: Ctx, repo_type: str, repo_id: str, revision: str | None = None) -> Response:
        repo = self._repo(repo_type, repo_id)
        sha = repo.resolve(revision or "main")
        tree = repo.tree(sha)
        commit = repo.commit_meta(sha)
        meta = repo.meta()
        files = sorted((e for e in tree.values() if e.kind == "file"), key=lambda e: e.path)
        card = read_card(repo, tree)
        info: dict[str, Any] = {
            "_id": _object_id(repo),
            "id": repo.repo_id,
            "author": repo.namespace,
            "sha": sha,
            "lastModified": commit.date,
            "createdAt": meta.get("createdAt", commit.date),
            "private": bool(meta.get("private")),
            "gated": False,
            "disabled": False,
            "likes": 0,
            "downloads": 0,
            "tags": [],
            "siblings": [{"rfilename": e.path, "size": e.size, "blobId": e.oid} for e in files],
            "usedStorage": sum(e.size for e in files),
        }
        add_card_fields(info, card, repo_type, meta)
        if repo_type == "model":
            info["modelId"] = repo.repo_id
        elif repo_type == "space":
            info["subdomain"] = f"{repo.namespace}-{repo.name}".lower().replace(".", "-").replace("_", "-")
        return JSONResponse(info)

    # -- uploads ---------------------------------------------------------------------------------

    def preupload(self, ctx: Ctx, repo_type: str, repo_id: str, revision: str) -> Response:
        repo = self._repo(repo_type, repo_id)
        if truthy(ctx.query.get("create_pr")):
            raise HTTPError(400, "pull requests are not supported by the local hub; commit to a branch instead")
        files = ctx.json().get("files")
        if not isinstance(files, list):
            raise HTTPError(400, "JSON field 'files' must be a list")
        sha = repo.resolve(revision)
        tree = repo.tree(sha)
        answer = []
        for item in files:
            if not isinstance(item, dict):
                raise HTTPError(400, "each entry of 'files' must be an object with a 'path'")
            path = st.check_path(item.get("path"))
            entry = tree.get(path)
            if entry is not None and entry.kind != "file":
                entry = None
            size = item.get("size")
            lfs = self.lfs_uploads and isinstance(size, int) and size >= self.lfs_threshold
            if not lfs:
                # "regular": the client sends the bytes inline (base64) in the commit; it compares the
                # blob sha of the file already there with its own, and skips unchanged files
                oid = entry.oid if entry is not None else None
            elif entry is not None and entry.size == size:
                # "lfs": the client compares sha256 instead (hashed once here, then remembered)
                oid = repo.blob_sha256(entry.oid, compute=True)
            else:
                oid = None
            answer.append({"path": item.get("path"), "uploadMode": "lfs" if lfs else "regular",
                           "shouldIgnore": False, "oid": oid})
        return JSONResponse({"files": answer, "commitOid": sha})

    async def commit(self, request: Request, user: str, repo_type: str, repo_id: str, revision: str) -> Response:
        """``POST /api/{type}s/{repo}/commit/{rev}``: an NDJSON body, processed as it arrives."""
        repo = self._repo(repo_type, repo_id)  # 404 before reading megabytes (the body is drained on error)
        if truthy(request.query_params.get("create_pr")):
            raise HTTPError(400, "pull requests are not supported by the local hub; commit to a branch instead")
        reader = CommitReader(repo)
        try:
            async for chunk in request.stream():
                if reader.error is None and chunk:
                    await reader.feed(chunk)
            await reader.finish()
        finally:
            reader.discard()
        header = reader.header
        readme = next((op.blob for op in reader.ops if op.path == "README.md" and op.blob), None)
        if readme is not None:  # the Hub refuses a commit whose card metadata breaks its rules
            problems = await run_in_threadpool(
                lambda: card_problems(repo.read_blob(readme).decode("utf-8", "replace"), repo_type))
            if problems:
                raise HTTPError(400, "Invalid metadata in README.md: " + "; ".join(problems))
        sha = await run_in_threadpool(
            repo.commit, revision, reader.ops, summary=header["summary"], description=header["description"],
            parent_commit=header["parent"], author=user,
        )
        base = str(request.base_url).rstrip("/")
        return JSONResponse({
            "success": True,
            "commitOid": sha,
            "commitUrl": f"{self.repo_url(base, repo_type, repo_id)}/commit/{sha}",
            "pullRequestUrl": None,
            "hookOutput": "",
        })

    # -- branches, tags, history -----------------------------------------------------------------

    def branch(self, ctx: Ctx, repo_type: str, repo_id: str, name: str) -> Response:
        repo = self._repo(repo_type, repo_id)
        if ctx.request.method == "DELETE":
            repo.delete_branch(name)
            return JSONResponse({})
        data = ctx.json()
        start = data.get("startingPoint")
        if start is not None and not isinstance(start, str):
            raise HTTPError(400, "'startingPoint' must be a string")
        if data.get("emptyBranch"):
            raise HTTPError(400, "empty branches are not supported by the local hub")
        repo.create_branch(name, start)
        return JSONResponse({})

    def tag(self, ctx: Ctx, repo_type: str, repo_id: str, name: str) -> Response:
        repo = self._repo(repo_type, repo_id)
        if ctx.request.method == "DELETE":
            repo.delete_tag(name)
            return JSONResponse({})
        data = ctx.json()
        tag, message = data.get("tag"), data.get("message")
        if not isinstance(tag, str) or (message is not None and not isinstance(message, str)):
            raise HTTPError(400, "JSON field 'tag' (and 'message') must be strings")
        repo.create_tag(tag, name, message, author=ctx.user)
        return JSONResponse({})

    def refs(self, ctx: Ctx, repo_type: str, repo_id: str) -> Response:
        refs = self._repo(repo_type, repo_id).refs()

        def items(table: str, prefix: str) -> list[dict]:
            return [{"name": name, "ref": f"{prefix}{name}", "targetCommit": sha}
                    for name, sha in sorted(refs[table].items())]

        body = {"branches": items("branches", "refs/heads/"), "tags": items("tags", "refs/tags/"), "converts": []}
        if truthy(ctx.query.get("include_prs")):
            body["pullRequests"] = items("prs", "refs/")
        return JSONResponse(body)

    def commits(self, ctx: Ctx, repo_type: str, repo_id: str, revision: str) -> Response:
        repo = self._repo(repo_type, repo_id)
        sha = repo.resolve(revision)
        page = int_param(ctx, "p", 0)
        limit = min(max(int_param(ctx, "limit", self.commits_page_size), 1), 1000)
        # a page past the end of history is empty (as on the Hub); git cannot even be asked past 2**31
        found = repo.log(sha, skip=page * limit, limit=limit + 1) if page * limit < (1 << 31) else []
        formatted = "formatted" in ctx.query.getlist("expand[]") + ctx.query.getlist("expand")
        items = []
        for meta in found[:limit]:
            item = {"id": meta.sha, "title": meta.title, "message": meta.message,
                    "authors": [{"user": meta.author, "avatar": None}], "date": meta.date}
            if formatted:
                item["formatted"] = {"title": _html(meta.title), "message": _html(meta.message)}
            items.append(item)
        headers = {}
        if len(found) > limit:
            # the next page is pinned to the sha: a branch moving meanwhile does not shift pages
            url = (f"{ctx.base}/api/{repo_type}s/{repo_id}/commits/{sha}?p={page + 1}&limit={limit}"
                   + ("&expand[]=formatted" if formatted else ""))
            headers["Link"] = f'<{url}>; rel="next"'
        return JSONResponse(items, headers=headers)

# --------------------------------------------------------------------------------------------------
# request plumbing


def _object_id(repo: st.Repo) -> str:
    return hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24]


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class HubASGI:
    """The ASGI application: every HTTP request goes to :meth:`HubApp.handle` (no Starlette router in
    between: its path pattern does not match a decoded path holding a newline, and would answer such a
    request with a bare 404 of its own)."""

    def __init__(self, hub: HubApp, body_idle_seconds: float = limits.BODY_IDLE_SECONDS,
                 body_min_rate: float | None = limits.BODY_MIN_RATE, body_grace_seconds: float = limits.BODY_GRACE_SECONDS):
        self.hub = hub
        self.state = SimpleNamespace(hub=hub)
        self._app = limits.BodyTimeouts(self._http, seconds=body_idle_seconds, min_rate=body_min_rate,
                                        grace=body_grace_seconds)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not served
            return
        await self._app(scope, receive, send)

    async def _http(self, scope, receive, send) -> None:
        response = await self.hub.handle(Request(scope, receive, send))
        await response(scope, receive, send)


def create_app(root, *, token: str | None = None, user: str = st.DEFAULT_USER, commits_page_size: int = 50,
               tree_page_size: int = 1000, lfs_uploads: bool = False, lfs_threshold: int = LFS_THRESHOLD,
               body_idle_seconds: float = limits.BODY_IDLE_SECONDS, body_min_rate: float | None = limits.BODY_MIN_RATE,
               body_grace_seconds: float = limits.BODY_GRACE_SECONDS) -> HubASGI:
    """The ASGI application serving the repositories under ``root``.

    ``lfs_uploads=True`` answers uploadMode "lfs" for files of at least ``lfs_threshold`` bytes, so the
    client PUTs their raw bytes instead of base64 inside the commit. Only for clients that will not use
    Xet: huggingface_hub uploads every "lfs" file through Xet whenever ``hf_xet`` is importable and
    ``HF_HUB_DISABLE_XET`` is unset, and this server does not speak Xet (such an upload fails).
    ``body_idle_seconds``: a request body that sends nothing for this long is answered 408 and closed; so is
    one averaging less than ``body_min_rate`` bytes/s after ``body_grace_seconds`` (None: no rate clock).
    """
    hub = HubApp(root, token=token, user=user, commits_page_size=commits_page_size, tree_page_size=tree_page_size,
                 lfs_uploads=lfs_uploads, lfs_threshold=lfs_threshold)
    return HubASGI(hub, body_idle_seconds, body_min_rate, body_grace_seconds)
