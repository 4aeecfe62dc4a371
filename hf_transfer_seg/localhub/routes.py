"""The local hub's URL table: (methods, pattern, handler), matched on raw path segments.

Routing works on the *raw* request path, split on '/' before percent-decoding, because the client
sends revisions URL-encoded as one segment (``refs%2Fpr%2F1``, ``feature%2Fx``) and file paths as
the segments after it. A pattern is a tuple of tokens, each matching segments:

- a plain string: that exact segment;
- ``{type}``: ``models``/``datasets``/``spaces`` (captured as ``model``/``dataset``/``space``);
- ``{prefix}``: ``datasets``/``spaces`` in front of a repo URL (captured as the repo type);
- ``{repo}``: two segments ``namespace/name``; ``{repo.git}`` the same with ``.git`` after the name;
- ``{segment}``: any one segment;
- ``{rest}``: every remaining segment joined with '/' (``{rest+}``: at least one, non-empty;
  ``{rev}``: the joined rest or ``main`` when empty; ``{revpath}``: a revision then a file path,
  captured as two values).

The first route whose pattern matches decides: a method it does not list is answered 405.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from hf_transfer_seg.localhub.responses import HTTPError

TYPE_BY_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
READ = ("GET", "HEAD")


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    pattern: tuple[str, ...]
    handler: str  # name of a HubApp method
    # "sync": the body is read first and the handler runs in a worker thread with a Ctx;
    # "stream": an async handler receiving (request, user, *captured) reads the body itself
    kind: str = "sync"
    auth: bool = True  # False: no token needed (the index; LFS uploads carry a signature instead)
    fixed: tuple = field(default=())  # values passed before the captured ones


def _b(*methods: str) -> tuple[str, ...]:
    return tuple(methods)


ROUTES: tuple[Route, ...] = (
    Route(ALL_METHODS, (), "index", auth=False),
    # git-lfs batch API: /{prefix}{repo}.git/info/lfs/objects/batch
    Route(_b("POST"), ("{repo.git}", "info", "lfs", "objects", "batch"), "lfs_batch", fixed=("model",)),
    Route(_b("POST"), ("{prefix}", "{repo.git}", "info", "lfs", "objects", "batch"), "lfs_batch"),
    Route(_b("PUT"), ("api", "{type}", "{repo}", "lfs-upload", "{segment}"), "lfs_upload", kind="stream",
          auth=False),
    Route(_b("POST"), ("api", "{type}", "{repo}", "commit", "{rev}"), "commit", kind="stream"),
    Route(READ, ("api", "whoami-v2"), "whoami"),
    Route(_b("POST"), ("api", "repos", "create"), "create_repo"),
    Route(_b("DELETE", "POST"), ("api", "repos", "delete"), "delete_repo"),
    Route(READ, ("api", "agent-harnesses"), "agent_harnesses"),
    Route(_b("POST"), ("api", "validate-yaml"), "validate_yaml"),
    Route(READ, ("api", "{type}"), "list_repos"),
    Route(READ, ("api", "{type}", "{repo}"), "repo_info"),
    Route(READ, ("api", "{type}", "{repo}", "revision", "{rest+}"), "repo_info"),
    Route(_b("POST"), ("api", "{type}", "{repo}", "preupload", "{rev}"), "preupload"),
    Route(_b("POST", "DELETE"), ("api", "{type}", "{repo}", "branch", "{rest+}"), "branch"),
    Route(_b("POST", "DELETE"), ("api", "{type}", "{repo}", "tag", "{rest+}"), "tag"),
    Route(READ, ("api", "{type}", "{repo}", "refs"), "refs"),
    Route(READ, ("api", "{type}", "{repo}", "commits", "{rev}"), "commits"),
    Route(READ, ("api", "{type}", "{repo}", "tree", "{revpath}"), "tree"),
    Route(_b("POST"), ("api", "{type}", "{repo}", "paths-info", "{rev}"), "paths_info"),
    Route(ALL_METHODS, ("api", "{type}", "{repo}", "xet-write-token", "{rest}"), "xet_token"),
    Route(ALL_METHODS, ("api", "{type}", "{repo}", "xet-read-token", "{rest}"), "xet_token"),
    Route(READ, ("api", "{type}", "{repo}", "auth-check"), "auth_check"),
    # file downloads: /{repo}/resolve/..., /datasets/{repo}/resolve/..., /spaces/{repo}/resolve/...
    Route(READ, ("{prefix}", "{repo}", "resolve", "{revpath}"), "resolve"),
    Route(READ, ("{repo}", "resolve", "{revpath}"), "resolve", fixed=("model",)),
)

_REST = ("{rest}", "{rest+}", "{rev}", "{revpath}")


def _capture(pattern: tuple[str, ...], seg: list[str]) -> list | None:
    """The values captured by ``pattern`` from ``seg``, or None when it does not match."""
    out: list = []
    i = 0
    for n, token in enumerate(pattern):
        if token in _REST:
            if n != len(pattern) - 1:
                raise ValueError(f"{token} must end a pattern")
            rest = seg[i:]
            joined = "/".join(rest)
            if token == "{rest+}" and not joined:
                return None
            if token == "{revpath}":
                out.extend(split_revision(rest))
            else:
                out.append((joined or "main") if token == "{rev}" else joined)
            return out
        if token in ("{repo}", "{repo.git}"):
            if len(seg) < i + 2:
                return None
            namespace, name = seg[i], seg[i + 1]
            if token == "{repo.git}":
                if not name.endswith(".git"):
                    return None
                name = name[:-4]
            out.append(f"{namespace}/{name}")
            i += 2
            continue
        if i >= len(seg):
            return None
        value = seg[i]
        if token == "{type}":
            if value not in TYPE_BY_PLURAL:
                return None
            out.append(TYPE_BY_PLURAL[value])
        elif token == "{prefix}":
            if value not in ("datasets", "spaces"):
                return None
            out.append(TYPE_BY_PLURAL[value])
        elif token == "{segment}":
            out.append(value)
        elif token != value:
            return None
        i += 1
    return out if i == len(seg) else None


def match(method: str, seg: list[str], routes: tuple[Route, ...] = ROUTES) -> tuple[Route, tuple] | None:
    """The route for ``seg`` and its arguments; None when no pattern matches (405 on a wrong method)."""
    if seg == [""]:
        seg = []
    for route in routes:
        captured = _capture(route.pattern, seg)
        if captured is None:
            continue
        if method not in route.methods:
            raise HTTPError(405, f"method {method} not allowed here", headers={"Allow": ", ".join(route.methods)})
        return route, (*route.fixed, *captured)
    return None


def not_found(seg: list[str]) -> HTTPError:
    if seg and seg[0] == "api":
        return HTTPError(404, f"unknown API route /{'/'.join(seg)} (not served by the local hub)")
    return HTTPError(404, f"unknown route /{'/'.join(seg)} (not served by the local hub)")


def segments(raw_path: bytes) -> list[str]:
    """Path segments, each percent-decoded on its own (so ``%2F`` stays inside its segment)."""
    raw = raw_path.split(b"?", 1)[0]
    parts = raw.split(b"/")[1:] if raw.startswith(b"/") else raw.split(b"/")
    out = []
    for part in parts:
        try:
            out.append(unquote_to_bytes(part).decode("utf-8"))
        except UnicodeDecodeError:
            raise HTTPError(400, "request path is not valid UTF-8") from None
    return out


def split_revision(args: list[str]) -> tuple[str, str]:
    """``[rev, *path]``; a revision given unencoded as ``refs/pr/1`` (or ``refs/convert/x``) takes three."""
    if not args or not args[0]:
        raise HTTPError(400, "missing revision in the URL")
    if args[0] == "refs" and len(args) >= 3:
        return "/".join(args[:3]), "/".join(args[3:])
    return args[0], "/".join(args[1:])
