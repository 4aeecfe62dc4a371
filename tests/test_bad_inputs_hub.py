"""Hostile and careless inputs to the local hub, round two (issue 19, items 1-5), against a real server.

Each case goes through the genuine huggingface_hub client where it can send it, and through raw sockets
or httpx where it cannot (a half-sent header, a commit that skips the client's validate-yaml call, a
second client address). Cards that the server refuses on commit are put in place "as git push would"
(straight into the bare repository) to check that reads stay robust. Nothing here asserts a timing:
``benchmarks/hub_hostile.py`` prints the figures.

Run with ``-s`` to see the tally (cases tried, and how each ended).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from hf_transfer_seg.localhub import local_hub
from hf_transfer_seg.localhub import storage as st

TALLY: dict[str, int] = {}
CAP = 6  # connections per client in these tests' server
SECONDS = 1.0  # header, keep-alive and body idle timeouts in these tests' server


def _count(outcome: str) -> None:
    TALLY[outcome] = TALLY.get(outcome, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _report_tally():
    yield
    print(f"\nhostile hub cases: {sum(TALLY.values())} ({', '.join(f'{k} {v}' for k, v in sorted(TALLY.items()))})")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-hub-2")
    with local_hub(root, header_timeout=SECONDS, keep_alive_timeout=SECONDS, max_connections_per_client=CAP,
                   body_idle_seconds=SECONDS) as endpoint:
        yield endpoint, root, HfApi(endpoint=endpoint)


def _new_repo(api: HfApi) -> str:
    repo_id = f"hostile/r-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id)
    return repo_id


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _refused(call, *words: str) -> None:
    """Run ``call``; it must fail with a 4xx whose message holds ``words``."""
    with pytest.raises(HfHubHTTPError) as info:
        call()
    status = _status(info.value)
    assert status is not None and 400 <= status < 500, (status, str(info.value)[:500])
    for word in words:
        assert word in str(info.value), (word, str(info.value)[:500])
    _count("clean 4xx")


def _card_refused(api: HfApi, repo_id: str, card: bytes, *words: str) -> None:
    """Upload ``card`` as README.md with the genuine client: its validate-yaml call gets a 400 and the client
    raises ValueError("Invalid metadata in README.md ...") with the server's reasons, before any commit."""
    with pytest.raises((HfHubHTTPError, ValueError)) as info:
        api.upload_file(path_or_fileobj=card, path_in_repo="README.md", repo_id=repo_id)
    assert "Invalid metadata in README.md" in str(info.value), str(info.value)[:500]
    for word in words:
        assert word in str(info.value), (word, str(info.value)[:500])
    _count("clean 4xx")


def _with_git(root: Path, repo_id: str, path: str, data: bytes, branch: str = "main") -> str:
    """Commit straight into the server's git repository (as `git push` would), past the HTTP checks."""
    repo = st.Storage(root).get("model", repo_id)
    return repo.commit(branch, [st.FileOp(path, repo.write_blob(data))], summary=f"{path} pushed with git")


def _card(front: str) -> bytes:
    return f"---\n{front}\n---\n# card\n".encode()


def _raw_commit(endpoint: str, repo_id: str, path: str, data: bytes, summary: str = "raw") -> httpx.Response:
    """A commit as huggingface_hub sends it, without its validate-yaml call first."""
    lines = [{"key": "header", "value": {"summary": summary, "description": ""}},
             {"key": "file", "value": {"content": base64.b64encode(data).decode(), "path": path, "encoding": "base64"}}]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return httpx.post(f"{endpoint}/api/models/{repo_id}/commit/main", content=body,
                      headers={"Content-Type": "application/x-ndjson"}, timeout=60)


def _clean_4xx(response: httpx.Response) -> bool:
    message = response.headers.get("x-error-message", "")
    try:
        said = response.json().get("error")
    except ValueError:
        said = None
    return 400 <= response.status_code < 500 and bool(message) and message.isascii() and bool(said)


# --------------------------------------------------------------------------------------------------
# 1. a branch or tag named like a commit must not shadow it


SHA_LIKE = ["0123456789abcdef0123456789abcdef01234567", "abcdef1", "ABCDEF1234567890ABCDEF1234567890ABCDEF12",
            "refs/heads/main", "refs/pr/1"]


@pytest.mark.parametrize("name", SHA_LIKE)
def test_branch_and_tag_names_that_look_like_shas_or_refs_are_refused(hub, name):
    _, _, api = hub
    repo_id = _new_repo(api)
    _refused(lambda: api.create_branch(repo_id, branch=name), "commit sha")
    _refused(lambda: api.create_tag(repo_id, tag=name), "commit sha")
    assert {b.name for b in api.list_repo_refs(repo_id).branches} == {"main"}


def test_a_full_sha_resolves_to_its_commit_even_when_a_branch_has_its_name(hub, tmp_path):
    """A sha-pinned download returns that commit's file, not a same-named branch's (made with git directly)."""
    endpoint, root, api = hub
    repo_id = _new_repo(api)
    first = api.upload_file(path_or_fileobj=b"first weights", path_in_repo="w.bin", repo_id=repo_id).oid
    second = api.upload_file(path_or_fileobj=b"other weights", path_in_repo="w.bin", repo_id=repo_id).oid
    repo = st.Storage(root).get("model", repo_id)
    repo.git("update-ref", f"refs/heads/{first}", second)  # what the API now refuses to create
    path = hf_hub_download(repo_id, "w.bin", revision=first, endpoint=endpoint, cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == b"first weights"
    assert api.model_info(repo_id, revision=first).sha == first
    [entry] = [e for e in api.list_repo_tree(repo_id, revision=first) if e.path == "w.bin"]
    assert entry.blob_id == repo.tree(first)["w.bin"].oid
    head = httpx.head(f"{endpoint}/{repo_id}/resolve/{first}/w.bin")
    assert head.headers["x-repo-commit"] == first
    _count("served the commit")


# --------------------------------------------------------------------------------------------------
# 2. connections: header timeout, idle keep-alive timeout, connection budget


def _connect(endpoint: str, source: str = "127.0.0.1") -> socket.socket:
    port = int(endpoint.rsplit(":", 1)[1])
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10 * SECONDS + 10, source_address=(source, 0))
    except OSError as exc:
        pytest.skip(f"cannot connect from {source} on this system ({exc})")
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    out = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_a_connection_that_sends_nothing_or_half_a_header_is_closed(hub):
    endpoint, _, _ = hub
    with _connect(endpoint) as idle:
        assert _read_until_closed(idle) == b""  # closed by the server, nothing said
    _count("closed by the server")
    with _connect(endpoint) as partial:
        partial.sendall(b"GET /api/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer = _read_until_closed(partial)
    assert answer.startswith(b"HTTP/1.1 408") and b"x-error-message" in answer.lower(), answer[:300]
    _count("clean 4xx")
    with _connect(endpoint) as kept:  # a finished request, then idle: closed after the keep-alive timeout
        kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_until_closed(kept)
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1
    _count("closed by the server")


# the connection budget (all of loopback one client, the quietest connection shed): test_localhub_budget.py


# --------------------------------------------------------------------------------------------------
# 3. card reading cost: front matter size and node count


def _flat_list_card(nbytes: int) -> bytes:
    return b"---\nvalues:\n" + b"".join(b"- %05d\n" % (i % 100000) for i in range(nbytes // 8)) + b"---\n# card\n"


BIG_CARDS = {
    "front matter over 1 MiB (3.9 MB flat list)": _flat_list_card(3_900_000),
    "over 100,000 nodes in 0.8 MB": _flat_list_card(800_000),
}


@pytest.mark.parametrize("what", list(BIG_CARDS))
def test_cards_too_costly_to_read_are_refused_on_commit_and_skipped_on_read(hub, what, tmp_path):
    endpoint, root, api = hub
    repo_id = _new_repo(api)
    card = BIG_CARDS[what]
    # the client asks validate-yaml first; a client that skips it gets the same answer from the commit
    _card_refused(api, repo_id, card)
    response = _raw_commit(endpoint, repo_id, "README.md", card)
    assert _clean_4xx(response) and ("KiB" in response.text or "nodes" in response.text), response.text[:300]
    _count("clean 4xx")
    # such a card already in a repository: repo_info still answers, without cardData
    _with_git(root, repo_id, "README.md", card)
    info = api.model_info(repo_id)
    assert info.card_data is None and "README.md" in {s.rfilename for s in info.siblings}
    _count("read: 200 without cardData")


# --------------------------------------------------------------------------------------------------
# 4. numbers in card metadata


def _metric_card(value: str) -> bytes:
    return _card("license: mit\nmodel-index:\n- name: m\n  results:\n  - task: {type: image-segmentation}\n"
                 f"    dataset: {{type: org/drive, name: DRIVE}}\n    metrics:\n    - {{type: dice, value: {value}}}")


NUMBER_CARDS = {
    "metric .nan": _metric_card(".nan"),
    "metric .inf": _metric_card(".inf"),
    "metric -.Inf": _metric_card("-.Inf"),
    "metric 1e309": _metric_card("1.0e+309"),  # loads as inf; longer numbers: test_localhub_numbers.py
    "nested .NaN elsewhere": _card("license: mit\nextra:\n  scores: [0.5, .NaN]"),
}


@pytest.mark.parametrize("what", list(NUMBER_CARDS))
def test_non_finite_or_unbounded_numbers_are_refused_on_commit_and_read_as_null(hub, what):
    endpoint, root, api = hub
    repo_id = _new_repo(api)
    card = NUMBER_CARDS[what]
    _card_refused(api, repo_id, card, "finite")
    response = _raw_commit(endpoint, repo_id, "README.md", card)
    assert _clean_4xx(response) and "finite" in response.text, response.text[:300]
    _count("clean 4xx")
    # such a card already in a repository (pushed with git): every read answers 200, the value as null
    _with_git(root, repo_id, "README.md", card)
    raw = httpx.get(f"{endpoint}/api/models/{repo_id}")
    assert raw.status_code == 200, raw.text[:300]
    data = raw.json()["cardData"]
    value = data["extra"]["scores"][1] if "extra" in data else data["model-index"][0]["results"][0]["metrics"][0]["value"]
    assert value is None
    info = api.model_info(repo_id)
    assert info.card_data is not None and info.card_data.license == "mit"
    _count("read: 200 with null")


def test_a_huge_but_finite_number_and_a_normal_card_are_accepted(hub):
    _, _, api = hub
    repo_id = _new_repo(api)
    api.upload_file(path_or_fileobj=_metric_card("1.0e+300"), path_in_repo="README.md", repo_id=repo_id)
    [result] = api.model_info(repo_id).card_data.eval_results
    assert result.metric_value == 1e300
    _count("accepted")


def test_model_index_the_client_itself_cannot_read_is_refused(hub):
    """huggingface_hub's strict ModelCardData refuses a source name without a url: so does the server."""
    _, _, api = hub
    repo_id = _new_repo(api)
    card = _card("license: mit\nmodel-index:\n- name: m\n  results:\n  - task: {type: image-segmentation}\n"
                 "    dataset: {type: org/drive, name: DRIVE}\n    source: {name: paper}\n"
                 "    metrics:\n    - {type: dice, value: 0.8}")
    _card_refused(api, repo_id, card, "huggingface_hub cannot read")


# --------------------------------------------------------------------------------------------------
# 5. lone surrogates and a full disk


def _post_escaped(endpoint: str, path: str, body: dict) -> httpx.Response:
    """POST ``body`` as ASCII JSON (lone surrogates as \\uXXXX escapes): the client's own JSON encoder (httpx,
    ensure_ascii=False) cannot even send them, its commit NDJSON (json.dumps) can."""
    return httpx.post(f"{endpoint}{path}", content=json.dumps(body).encode("ascii"),
                      headers={"Content-Type": "application/json"}, timeout=30)


def test_lone_surrogates_in_commit_and_tag_messages_are_stored_as_replacement_characters(hub):
    endpoint, _, api = hub
    repo_id = _new_repo(api)
    info = api.create_commit(repo_id, [CommitOperationAdd("a.txt", b"a")], commit_message="bad \ud800 summary",
                             commit_description="bad \udfff description")
    [latest] = api.list_repo_commits(repo_id)[:1]
    assert latest.commit_id == info.oid and latest.title == "bad \ufffd summary"
    assert "\ufffd" in latest.message
    _count("accepted")
    response = _post_escaped(endpoint, f"/api/models/{repo_id}/tag/main", {"tag": "v1", "message": "tag \ud800"})
    assert response.status_code == 200, response.text[:300]
    assert [t.name for t in api.list_repo_refs(repo_id).tags] == ["v1"]
    _count("accepted")
    response = _post_escaped(endpoint, f"/api/models/{repo_id}/tag/main", {"tag": "bad\ud800"})
    assert _clean_4xx(response) and "UTF-8" in response.json()["error"], response.text[:300]
    _count("clean 4xx")
    response = _post_escaped(endpoint, f"/api/models/{repo_id}/branch/b", {"startingPoint": "main\ud800"})
    assert _clean_4xx(response) and response.headers["x-error-code"] == "RevisionNotFound", response.text[:300]
    _count("clean 4xx")


def test_a_file_name_that_is_not_utf8_pushed_with_git_does_not_break_reads(hub):
    """Git allows any bytes in a file name; JSON answers write such a name with \\u escapes instead of a 500."""
    _, root, api = hub
    repo_id = _new_repo(api)
    repo = st.Storage(root).get("model", repo_id)
    head = repo.branch_head("main")
    name = b"weights-\xff.bin".decode("utf-8", "surrogateescape")
    new = repo._write_commit(head, [f"100644 {repo.write_blob(b'x')}\t{name}"], "pushed with git", "", "git")
    repo.git("update-ref", "refs/heads/main", new, head)
    info = api.model_info(repo_id)
    assert info.sha == new and name in {s.rfilename for s in info.siblings}
    assert name in {e.path for e in api.list_repo_tree(repo_id)}
    _count("read: 200")


@contextlib.contextmanager
def _small_tmpfs(where: Path, size: str):
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root: {done.stderr.decode(errors='replace').strip()[:100]})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_answers_507_with_the_reason_and_keeps_every_commit(tmp_path):
    """A real full filesystem (a 2 MiB tmpfs under the hub root), not a mock."""
    import numpy as np

    with _small_tmpfs(tmp_path / "disk", "2m") as disk, local_hub(disk / "root") as endpoint:
        api = HfApi(endpoint=endpoint)
        repo_id = _new_repo(api)
        kept = api.upload_file(path_or_fileobj=b"kept", path_in_repo="kept.txt", repo_id=repo_id).oid
        noise = np.random.default_rng(0).bytes(3 << 20)  # incompressible, larger than the whole disk
        for name, data in (("big.bin", noise), ("medium.bin", noise[: 1500 << 10])):
            with pytest.raises(HfHubHTTPError) as info:
                api.upload_file(path_or_fileobj=data, path_in_repo=name, repo_id=repo_id)
            assert _status(info.value) == 507 and "no space left" in str(info.value), str(info.value)[:500]
            _count("clean 507")
            assert api.model_info(repo_id).sha == kept
        repo = st.Storage(disk / "root").get("model", repo_id)
        fsck = subprocess.run(["git", "--git-dir", str(repo.path), "fsck", "--strict"], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stderr[-2000:]
        assert not list((disk / "root" / ".tmp").iterdir())  # no half-written upload left behind
        for i in range(100):  # new repositories until the disk is full: the last one is refused the same way
            with contextlib.suppress(HfHubHTTPError):
                api.create_repo(f"hostile/more-{i}")
                continue
            with pytest.raises(HfHubHTTPError) as info:
                api.create_repo(f"hostile/more-{i}")
            assert _status(info.value) == 507 and "no space left" in str(info.value), str(info.value)[:500]
            _count("clean 507")
            break
        else:
            pytest.fail("100 repositories fitted on a 2 MiB disk")
        assert not list((disk / "root" / ".tmp").iterdir())
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        after = api.upload_file(path_or_fileobj=noise, path_in_repo="big.bin", repo_id=repo_id).oid
        assert api.model_info(repo_id).sha == after
        assert len(api.list_repo_commits(repo_id)) == 3  # initial, kept, big
        assert api.model_info(repo_id).sha == after and api.list_repo_files(repo_id) == [
            ".gitattributes", "big.bin", "kept.txt"]


# --------------------------------------------------------------------------------------------------
# the client side: which hub answers are retried (huggingface_hub's own retry policy)


@contextlib.contextmanager
def _answering(status: int, headers: dict[str, str]):
    """A real HTTP server on loopback answering every request with ``status``; yields (endpoint, hits)."""
    import http.server
    import threading

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            hits.append(self.path)
            body = json.dumps({"error": f"status {status}"}).encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json",
                                "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_HEAD = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status, headers, calls", [
    (507, {}, 1),  # disk full: the next try would fail the same way
    (501, {}, 1),  # not implemented (a Xet token from the local hub)
    (503, {"Retry-After": "0"}, 3),  # busy, and says when to come back
    (429, {"RateLimit": '"api";r=0;t=0', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'}, 3),
])
def test_hub_answers_are_retried_only_when_another_try_can_succeed(status, headers, calls):
    from hf_transfer_seg.errors import HubError
    from hf_transfer_seg.hub.retry import with_retries

    with _answering(status, headers) as (endpoint, hits):
        api = HfApi(endpoint=endpoint)
        with pytest.raises((HfHubHTTPError, HubError)) as info:
            with_retries(lambda: api.list_repo_refs("org/x"), what="list refs", attempts=3, max_delay=1)
    assert len(hits) == calls, hits
    assert isinstance(info.value, HubError) == (calls > 1)
    _count("retried" if calls > 1 else "raised at once")
