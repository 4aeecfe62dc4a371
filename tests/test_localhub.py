"""The local Hub server through the genuine huggingface_hub client (and raw HTTP where the client would refuse)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder
from safetensors.numpy import load_file, save_file

from hf_transfer_seg.localhub import local_hub

CARD = """---
license: apache-2.0
library_name: timm
tags:
- image-classification
- test
---
# Tiny model

Used by the local hub tests.
"""


def _model_folder(folder: Path, value: float = 1.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"w": np.full((8, 8), value, dtype=np.float32), "b": np.arange(8, dtype=np.float32)},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architecture": "tiny", "num_classes": 8}))
    (folder / "README.md").write_text(CARD)
    (folder / "extra").mkdir(exist_ok=True)
    (folder / "extra" / "notes.txt").write_text(f"value {value}\n")
    return folder


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# round trips


def test_model_round_trip(hub_endpoint, repo_id, tmp_path):
    api = HfApi()
    url = api.create_repo(repo_id)
    assert url == f"{hub_endpoint}/{repo_id}" and url.repo_id == repo_id
    assert api.create_repo(repo_id, exist_ok=True) == url  # a 409 that still carries the url
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(repo_id)
    assert _status(conflict.value) == 409

    folder = _model_folder(tmp_path / "v1", 1.0)
    main_commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="weights v1").oid

    # a branch whose name contains '/', with its own commit
    api.create_branch(repo_id, branch="exp/fast", revision=main_commit)
    with pytest.raises(HfHubHTTPError) as exists:
        api.create_branch(repo_id, branch="exp/fast")
    assert _status(exists.value) == 409
    api.create_branch(repo_id, branch="exp/fast", exist_ok=True)
    _model_folder(tmp_path / "v2", 2.0)
    branch_commit = api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "v2", revision="exp/fast").oid
    assert branch_commit != main_commit
    api.create_tag(repo_id, tag="v2.0", revision="exp/fast", tag_message="second weights")
    api.create_tag(repo_id, tag="v1-light", revision=main_commit)

    refs = api.list_repo_refs(repo_id)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": main_commit, "exp/fast": branch_commit}
    assert {t.name: t.target_commit for t in refs.tags} == {"v2.0": branch_commit, "v1-light": main_commit}
    assert refs.branches[0].ref.startswith("refs/heads/")

    # model_info / repo_info at a revision, with the card parsed from README.md
    info = api.model_info(repo_id, revision="exp/fast")
    assert info.sha == branch_commit and info.id == repo_id and info.private is False
    assert info.card_data["license"] == "apache-2.0" and info.card_data["library_name"] == "timm"
    assert "image-classification" in info.tags and info.last_modified is not None
    assert sorted(s.rfilename for s in info.siblings) == [
        ".gitattributes", "README.md", "config.json", "extra/notes.txt", "model.safetensors"
    ]
    assert api.repo_info(repo_id, revision=main_commit).sha == main_commit
    assert api.repo_info(repo_id, revision=main_commit[:10]).sha == main_commit  # short sha

    # downloads by branch, tag and sha give the bytes of that revision
    by_branch = hf_hub_download(repo_id, "model.safetensors", revision="exp/fast")
    by_tag = hf_hub_download(repo_id, "model.safetensors", revision="v2.0")
    by_sha = hf_hub_download(repo_id, "model.safetensors", revision=main_commit)
    assert float(load_file(by_branch)["w"][0, 0]) == 2.0 and float(load_file(by_tag)["w"][0, 0]) == 2.0
    assert float(load_file(by_sha)["w"][0, 0]) == 1.0
    assert Path(hf_hub_download(repo_id, "extra/notes.txt", revision="v1-light")).read_text() == "value 1.0\n"
    snapshot = Path(snapshot_download(repo_id, revision="exp/fast"))
    assert snapshot.name == branch_commit
    assert (snapshot / "extra" / "notes.txt").read_text() == "value 2.0\n"
    assert (snapshot / "README.md").read_text() == CARD

    # tree and paths-info
    tree = list(api.list_repo_tree(repo_id, revision="exp/fast", recursive=True))
    by_path = {e.path: e for e in tree}
    assert isinstance(by_path["extra"], RepoFolder) and isinstance(by_path["extra/notes.txt"], RepoFile)
    weights = by_path["model.safetensors"]
    assert weights.size == (tmp_path / "v2" / "model.safetensors").stat().st_size
    assert weights.blob_id == api.get_paths_info(repo_id, "model.safetensors", revision="exp/fast")[0].blob_id
    top = {e.path for e in api.list_repo_tree(repo_id, revision="exp/fast")}
    assert top == {".gitattributes", "README.md", "config.json", "extra", "model.safetensors"}
    assert [e.path for e in api.list_repo_tree(repo_id, path_in_repo="extra", revision="exp/fast")] == [
        "extra/notes.txt"
    ]
    infos = api.get_paths_info(repo_id, ["config.json", "extra", "missing.bin"], revision="exp/fast")
    assert [(type(e).__name__, e.path) for e in infos] == [("RepoFile", "config.json"), ("RepoFolder", "extra")]
    assert api.file_exists(repo_id, "config.json", revision="v2.0")
    assert not api.file_exists(repo_id, "nope.json", revision="v2.0")

    # non-ASCII names and spaces survive the URL encoding both ways
    api.upload_file(path_or_fileobj=b"accents", path_in_repo="données/é t.txt", repo_id=repo_id, revision="exp/fast")
    assert Path(hf_hub_download(repo_id, "données/é t.txt", revision="exp/fast")).read_bytes() == b"accents"
    assert [e.path for e in api.get_paths_info(repo_id, ["données/é t.txt"], revision="exp/fast")] == [
        "données/é t.txt"
    ]
    branch_commit = api.repo_info(repo_id, revision="exp/fast").sha

    # tree pages follow the Link header (the Hub pages at 1000 entries; ask for 2 here)
    page = httpx.get(f"{hub_endpoint}/api/models/{repo_id}/tree/exp%2Ffast", params={"recursive": "true", "limit": 2})
    paths = [e["path"] for e in page.json()]
    while "link" in page.headers:
        page = httpx.get(page.links["next"]["url"])
        paths += [e["path"] for e in page.json()]
    assert paths == sorted(e.path for e in api.list_repo_tree(repo_id, revision="exp/fast", recursive=True))
    assert len(paths) == 8

    # typed errors
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("test-org/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("test-org/does-not-exist", "config.json")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "config.json", revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "no/such/file.txt", revision="exp/fast")
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo_id, path_in_repo="no-such-folder"))

    # deletions: a file, a folder, then refs, then the repo
    api.delete_file("extra/notes.txt", repo_id, revision="exp/fast")
    assert not api.file_exists(repo_id, "extra/notes.txt", revision="exp/fast")
    assert api.file_exists(repo_id, "extra/notes.txt", revision="v2.0")  # tags keep old content
    with pytest.raises(EntryNotFoundError):
        api.delete_file("extra/notes.txt", repo_id, revision="exp/fast")
    api.upload_file(path_or_fileobj=b"a", path_in_repo="logs/a.txt", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"b", path_in_repo="logs/deep/b.txt", repo_id=repo_id)
    api.delete_folder("logs", repo_id)
    assert not any(e.path.startswith("logs") for e in api.list_repo_tree(repo_id, recursive=True))
    api.delete_tag(repo_id, tag="v2.0")
    api.delete_branch(repo_id, branch="exp/fast")
    refs = api.list_repo_refs(repo_id)
    assert [b.name for b in refs.branches] == ["main"] and [t.name for t in refs.tags] == ["v1-light"]
    with pytest.raises(RevisionNotFoundError):
        api.delete_branch(repo_id, branch="exp/fast")
    with pytest.raises(HfHubHTTPError):
        api.delete_branch(repo_id, branch="main")
    api.delete_repo(repo_id)
    assert not api.repo_exists(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo(repo_id)
    api.delete_repo(repo_id, missing_ok=True)


def test_unchanged_files_are_skipped_and_stale_parent_is_412(hub_endpoint, repo_id, tmp_path):
    api = HfApi()
    api.create_repo(repo_id)
    folder = _model_folder(tmp_path / "m")
    first = api.upload_folder(repo_id=repo_id, folder_path=folder).oid
    # preupload answers each existing file's blob sha: the client sends nothing and makes no commit
    again = api.upload_folder(repo_id=repo_id, folder_path=folder).oid
    assert again == first
    assert len(api.list_repo_commits(repo_id)) == 2

    second = api.create_commit(repo_id, [CommitOperationAdd("a.txt", b"a")], commit_message="a",
                               parent_commit=first).oid
    with pytest.raises(HfHubHTTPError) as stale:
        api.create_commit(repo_id, [CommitOperationAdd("b.txt", b"b")], commit_message="b", parent_commit=first)
    assert _status(stale.value) == 412
    third = api.create_commit(
        repo_id,
        [CommitOperationAdd("b.txt", b"b"), CommitOperationDelete("a.txt")],
        commit_message="b, not a",
        commit_description="longer description",
        parent_commit=second[:12],
    )
    assert api.repo_info(repo_id).sha == third.oid
    latest = api.list_repo_commits(repo_id)[0]
    assert (latest.commit_id, latest.title, latest.message) == (third.oid, "b, not a", "longer description")
    assert api.file_exists(repo_id, "b.txt")
    assert not api.file_exists(repo_id, "a.txt")


def test_commit_history_is_paginated(hub_endpoint, repo_id):
    api = HfApi()
    api.create_repo(repo_id)
    api.create_branch(repo_id, branch="history")
    shas = []
    for i in range(55):
        shas.append(api.create_commit(repo_id, [CommitOperationAdd("counter.txt", str(i).encode())],
                                      commit_message=f"count {i}", revision="history").oid)
    # one page is 50 commits: the client follows the Link header
    first_page = httpx.get(f"{hub_endpoint}/api/models/{repo_id}/commits/history")
    assert len(first_page.json()) == 50 and 'rel="next"' in first_page.headers["link"]
    commits = api.list_repo_commits(repo_id, revision="history")
    assert len(commits) == 56
    assert [c.commit_id for c in commits[:55]] == shas[::-1]
    assert commits[0].title == "count 54" and commits[-1].title == "initial commit"
    assert commits[0].authors and commits[0].created_at.year >= 2024
    assert len(api.list_repo_commits(repo_id)) == 1  # main did not move
    formatted = api.list_repo_commits(repo_id, revision="history", formatted=True)
    assert formatted[0].formatted_title == "count 54"


def test_dataset_and_space_repos(hub_endpoint, repo_id, tmp_path):
    api = HfApi()
    dataset = repo_id + "-data"
    url = api.create_repo(dataset, repo_type="dataset")
    assert url == f"{hub_endpoint}/datasets/{dataset}"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("a,b\n1,2\n")
    (tmp_path / "README.md").write_text("---\nlicense: cc-by-4.0\npretty_name: Tiny\n---\n# data\n")
    api.upload_folder(repo_id=dataset, folder_path=tmp_path, repo_type="dataset")
    api.create_branch(dataset, branch="v1", repo_type="dataset")
    info = api.dataset_info(dataset, revision="v1")
    assert info.card_data["license"] == "cc-by-4.0" and info.private is False
    assert {s.rfilename for s in info.siblings} >= {"README.md", "data/train.csv"}
    path = hf_hub_download(dataset, "data/train.csv", repo_type="dataset", revision="v1")
    assert Path(path).read_text() == "a,b\n1,2\n"
    with pytest.raises(RepositoryNotFoundError):  # same name, wrong type
        api.model_info(dataset)

    private = repo_id + "-private"
    api.create_repo(private, private=True)
    assert api.model_info(private).private is True
    assert {m.id for m in api.list_models(author="test-org")} >= {private}
    assert {d.id for d in api.list_datasets(author="test-org")} >= {dataset}

    space = repo_id + "-space"
    assert api.create_repo(space, repo_type="space", space_sdk="gradio") == f"{hub_endpoint}/spaces/{space}"
    api.upload_file(path_or_fileobj=b"import gradio\n", path_in_repo="app.py", repo_id=space, repo_type="space")
    info = api.space_info(space)
    assert info.sdk == "gradio" and {"README.md", "app.py"} <= {s.rfilename for s in info.siblings}
    snapshot = Path(snapshot_download(space, repo_type="space"))
    assert (snapshot / "app.py").read_text() == "import gradio\n"
    assert [b.name for b in api.list_repo_refs(space, repo_type="space").branches] == ["main"]
    api.delete_repo(space, repo_type="space")
    api.delete_repo(dataset, repo_type="dataset")
    assert not api.repo_exists(dataset, repo_type="dataset")


def test_resolve_headers_and_ranges(hub_endpoint, repo_id):
    api = HfApi()
    api.create_repo(repo_id)
    data = bytes(range(256)) * 8192  # 2 MiB: stored uncompressed, streamed in chunks
    sha = api.upload_file(path_or_fileobj=data, path_in_repo="dir/blob.bin", repo_id=repo_id).oid
    api.create_branch(repo_id, branch="refs-style/x")
    url = f"{hub_endpoint}/{repo_id}/resolve/main/dir/blob.bin"
    with httpx.Client() as client:
        head = client.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["x-repo-commit"] == sha
        assert head.headers["content-length"] == str(len(data))
        etag = head.headers["etag"].strip('"')
        assert etag == api.get_paths_info(repo_id, "dir/blob.bin")[0].blob_id
        full = client.get(url)
        assert full.content == data
        part = client.get(url, headers={"Range": "bytes=1000-1999999"})
        assert part.status_code == 206 and part.content == data[1000:2000000]
        assert part.headers["content-range"] == f"bytes 1000-1999999/{len(data)}"
        assert client.get(url, headers={"Range": "bytes=-10"}).content == data[-10:]
        assert client.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
        # encoded revision with '/', and the same file through the commit sha
        encoded = f"{hub_endpoint}/{repo_id}/resolve/refs-style%2Fx/dir/blob.bin"
        assert client.head(encoded).headers["x-repo-commit"] == sha
        assert client.get(f"{hub_endpoint}/{repo_id}/resolve/{sha}/dir%2Fblob.bin").content == data
        missing = client.head(f"{hub_endpoint}/{repo_id}/resolve/main/nope.bin")
        assert missing.status_code == 404 and missing.headers["x-error-code"] == "EntryNotFound"
        missing = client.head(f"{hub_endpoint}/{repo_id}/resolve/nope/blob.bin")
        assert missing.headers["x-error-code"] == "RevisionNotFound"
        missing = client.head(f"{hub_endpoint}/test-org/nope-{sha[:6]}/resolve/main/x")
        assert missing.headers["x-error-code"] == "RepoNotFound"


# --------------------------------------------------------------------------------------------------
# safety


def _outside_snapshot(hub_root: Path) -> dict[str, bytes]:
    """Every file beside the hub root (except the client cache), to prove nothing was written there."""
    base = hub_root.parent
    out = {}
    for path in base.rglob("*"):
        rel = path.relative_to(base)
        if rel.parts[0] in (hub_root.name, "hf-home") or not path.is_file():
            continue
        out[str(rel)] = path.read_bytes()
    return out


def test_path_traversal_and_malformed_requests_are_refused(hub_endpoint, hub_root, repo_id):
    sentinel = hub_root.parent / "sentinel"
    sentinel.mkdir(exist_ok=True)
    (sentinel / "keep.txt").write_text("untouched")
    HfApi().create_repo(repo_id)
    before = _outside_snapshot(hub_root)

    def commit_body(*ops: dict, header: dict | None = None) -> bytes:
        lines = [{"key": "header", "value": header or {"summary": "evil"}}, *ops]
        return b"".join(json.dumps(line).encode() + b"\n" for line in lines)

    def file_op(path: str, content: str = "cHduZWQ=") -> dict:
        return {"key": "file", "value": {"path": path, "content": content, "encoding": "base64"}}

    commit_url = f"{hub_endpoint}/api/models/{repo_id}/commit/main"
    bad_paths = ["../sentinel/pwned", "../../sentinel/pwned", "/etc/pwned", "a/../../pwned", ".git/config",
                 "sub/.git/hooks/x", "a\x00b", "a\\..\\b", "", "a//b", "./a", "dir/"]
    with httpx.Client(timeout=30) as client:  # one keep-alive connection for everything
        for path in bad_paths:
            response = client.post(commit_url, content=commit_body(file_op(path)))
            assert response.status_code == 400, (path, response.text)
            assert response.json()["error"]
        for path in ["../sentinel/keep.txt", "/etc/passwd"]:
            response = client.post(commit_url, content=commit_body({"key": "deletedFile", "value": {"path": path}}))
            assert response.status_code == 400
        # traversal through URLs: repo names and file paths, raw and percent-encoded
        for url in [
            f"{hub_endpoint}/{repo_id}/resolve/main/..%2F..%2F..%2Fetc%2Fpasswd",
            f"{hub_endpoint}/{repo_id}/resolve/main/%2E%2E/%2E%2E/sentinel/keep.txt",
            f"{hub_endpoint}/{repo_id}/resolve/main/.git/config",
            f"{hub_endpoint}/api/models/{repo_id}/tree/main/..%2F..",
            f"{hub_endpoint}/api/models/..%2F..%2Fsentinel/x/revision/main",
            f"{hub_endpoint}/%2E%2E/sentinel/resolve/main/keep.txt",
        ]:
            response = client.get(url)
            assert response.status_code in (400, 404), url
            assert b"untouched" not in response.content
        for payload in [{"name": "../../sentinel"}, {"name": "ok", "organization": "../sentinel"},
                        {"name": "x.git"}, {"name": "a/b"}, {"name": "a\x00b"}, {"name": 5}]:
            response = client.post(f"{hub_endpoint}/api/repos/create", json=payload)
            assert response.status_code == 400, payload
        # malformed bodies
        malformed = [
            b"this is not json\n",
            b'{"key": "file", "value": {"path": "a.txt", "content": "YQ=="}}\n',  # no header first
            commit_body(file_op("a.txt", "%%% not base64 %%%")),
            commit_body(file_op("a.txt", "YQ")),  # bad padding
            commit_body({"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "0" * 64}}),
            commit_body({"key": "somethingElse", "value": {}}),
            commit_body(header={"summary": ""}),
            commit_body({"key": "file", "value": "not an object"}),
            b"",
            b"[1, 2, 3]\n",
        ]
        for body in malformed:
            response = client.post(commit_url, content=body)
            assert response.status_code == 400, (body[:60], response.text)
            assert "error" in response.json()
        lfs = client.post(commit_url, content=malformed[4])
        assert "LFS" in lfs.json()["error"]
        for url, body in [
            (f"{hub_endpoint}/api/models/{repo_id}/preupload/main", b"{not json"),
            (f"{hub_endpoint}/api/models/{repo_id}/preupload/main", b'{"files": 3}'),
            (f"{hub_endpoint}/api/repos/create", b"\xff\xfe"),
            (f"{hub_endpoint}/api/models/{repo_id}/branch/new", b"[]"),
        ]:
            assert client.post(url, content=body).status_code == 400, url
        # a big body sent to a missing repo is still read completely: the next request works
        big = commit_body(file_op("big.bin", "A" * (4 << 20)))
        response = client.post(f"{hub_endpoint}/api/models/test-org/missing-{repo_id[-8:]}/commit/main", content=big)
        assert response.status_code == 404 and response.headers["x-error-code"] == "RepoNotFound"
        assert client.get(f"{hub_endpoint}/api/whoami-v2").status_code == 200
        # a stale parent through raw HTTP is a 412 as well
        stale = commit_body(file_op("x.txt"), header={"summary": "s", "parentCommit": "0" * 40})
        assert client.post(commit_url, content=stale).status_code == 412

    assert _outside_snapshot(hub_root) == before
    api = HfApi()
    assert [e.path for e in api.list_repo_tree(repo_id)] == [".gitattributes"]  # nothing got committed
    assert len(api.list_repo_commits(repo_id)) == 1
    subprocess.run(["git", "--git-dir", str(hub_root / "models" / repo_id) + ".git", "fsck", "--strict"],
                   check=True, capture_output=True)


def test_token_mode(tmp_path, repo_id):
    token = "hf_localTestToken1234567890"
    with local_hub(tmp_path / "root", token=token) as endpoint:
        anonymous = HfApi(endpoint=endpoint, token=False)
        wrong = HfApi(endpoint=endpoint, token="hf_wrongWrongWrong1234")
        good = HfApi(endpoint=endpoint, token=token)
        for api in (anonymous, wrong):
            with pytest.raises(HfHubHTTPError) as refused:
                api.create_repo(repo_id)
            assert _status(refused.value) == 401
            assert "hf_wrongWrong" not in str(refused.value) and token not in str(refused.value)
        good.create_repo(repo_id)
        sha = good.upload_file(path_or_fileobj=b"secret weights", path_in_repo="w.bin", repo_id=repo_id).oid
        for api in (anonymous, wrong):
            with pytest.raises(HfHubHTTPError) as refused:
                api.upload_file(path_or_fileobj=b"x", path_in_repo="x.bin", repo_id=repo_id)
            assert _status(refused.value) == 401
            with pytest.raises(HfHubHTTPError) as refused:
                api.list_repo_refs(repo_id)
            assert _status(refused.value) == 401
        assert good.whoami()["name"]
        path = hf_hub_download(repo_id, "w.bin", endpoint=endpoint, token=token, cache_dir=tmp_path / "cache")
        assert Path(path).read_bytes() == b"secret weights"
        with pytest.raises(HfHubHTTPError):
            hf_hub_download(repo_id, "w.bin", revision=sha, endpoint=endpoint, token=False,
                            cache_dir=tmp_path / "cache2")
        assert [b.name for b in good.list_repo_refs(repo_id).branches] == ["main"]


def test_restart_keeps_everything(tmp_path, repo_id):
    root, port = tmp_path / "root", _free_port()
    with local_hub(root, port=port) as endpoint:
        api = HfApi(endpoint=endpoint)
        api.create_repo(repo_id)
        api.create_repo(repo_id, repo_type="dataset")
        first = api.upload_folder(repo_id=repo_id, folder_path=_model_folder(tmp_path / "m")).oid
        api.create_branch(repo_id, branch="epoch-0001")
        second = api.upload_file(path_or_fileobj=b"1", path_in_repo="epoch.txt", repo_id=repo_id,
                                 revision="epoch-0001").oid
        api.create_tag(repo_id, tag="best", revision="epoch-0001", tag_message="best so far")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{endpoint}/api/whoami-v2")  # really stopped
    with local_hub(root, port=port) as endpoint2:
        assert endpoint2 == endpoint
        api = HfApi(endpoint=endpoint2)
        refs = api.list_repo_refs(repo_id)
        assert {b.name: b.target_commit for b in refs.branches} == {"main": first, "epoch-0001": second}
        assert {t.name: t.target_commit for t in refs.tags} == {"best": second}
        assert api.repo_exists(repo_id, repo_type="dataset")
        path = hf_hub_download(repo_id, "epoch.txt", revision="best", endpoint=endpoint2,
                               cache_dir=tmp_path / "cache")
        assert Path(path).read_text() == "1"
        assert api.model_info(repo_id, revision="epoch-0001").card_data["license"] == "apache-2.0"
        third = api.upload_file(path_or_fileobj=b"2", path_in_repo="epoch.txt", repo_id=repo_id,
                                revision="epoch-0001", parent_commit=second).oid
        assert [c.commit_id for c in api.list_repo_commits(repo_id, revision="epoch-0001")][:3] == [
            third, second, first
        ]


def test_cli_serve_prints_url_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "hf_transfer_seg", "hub", "serve", "--root", str(tmp_path / "root"), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() is not None else "")
        response = httpx.post(f"{line}/api/repos/create", json={"name": "cli", "organization": "test-org"})
        assert response.json()["url"] == f"{line}/test-org/cli"
        assert (tmp_path / "root" / "models" / "test-org" / "cli.git" / "HEAD").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == "" and "Traceback" not in err


def test_local_hub_rejects_a_file_as_root(tmp_path):
    from hf_transfer_seg.errors import LocalHubError

    (tmp_path / "file").write_text("x")
    with pytest.raises(LocalHubError):
        with local_hub(tmp_path / "file"):
            pass
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        with pytest.raises(LocalHubError, match="cannot listen"):
            with local_hub(tmp_path / "root", port=busy.getsockname()[1]):
                pass
    finally:
        busy.close()


# --------------------------------------------------------------------------------------------------
# large commit lines are decoded while they arrive


def _feed_in_pieces(repo, body: bytes, sizes: list[int]):
    import asyncio

    from hf_transfer_seg.localhub.commit_body import CommitReader

    async def run():
        reader = CommitReader(repo)
        pos, i = 0, 0
        while pos < len(body):
            step = sizes[i % len(sizes)]
            await reader.feed(body[pos: pos + step])
            pos, i = pos + step, i + 1
        try:
            await reader.finish()
        finally:
            reader.discard()
        return reader

    return asyncio.run(run())


def test_streamed_commit_lines_decode_across_any_chunking(tmp_path):
    import base64
    import random

    from hf_transfer_seg.localhub.responses import HTTPError
    from hf_transfer_seg.localhub.storage import Storage

    repo = Storage(tmp_path / "root").create("model", "test-org/stream")
    rng = random.Random(0)
    big = rng.randbytes(3 * (1 << 20) + 7)  # past the streaming threshold, not a multiple of 3
    encoded = base64.b64encode(big).decode()
    escaped = json.dumps({"key": "file", "value": {"content": encoded, "path": "w.bin", "encoding": "base64"}})
    escaped = escaped.replace("/", "\\/")  # a JSON writer may escape '/': still the same content
    body = (json.dumps({"key": "header", "value": {"summary": "s"}}) + "\n" + escaped + "\n"
            + json.dumps({"key": "file", "value": {"content": "aGk=", "path": "small.txt", "encoding": "base64"}})
            + "\n").encode()
    for sizes in ([1 << 16], [1, 2, 3, 5, 7, 4099], [1000003], [len(body)]):
        reader = _feed_in_pieces(repo, body, sizes)
        assert reader.error is None and [op.path for op in reader.ops] == ["w.bin", "small.txt"]
        assert repo.read_blob(reader.ops[0].blob) == big
        assert repo.read_blob(reader.ops[1].blob) == b"hi"
    assert not list((tmp_path / "root" / ".tmp").glob("upload-*"))  # temporary files are removed

    header = json.dumps({"key": "header", "value": {"summary": "s"}}) + "\n"
    bad_middle = encoded[:2_000_000] + "!" + encoded[2_000_001:]
    for content, encoding, message in [
        (bad_middle, "base64", "not valid base64"),
        (encoded[:-1], "base64", "not valid base64"),
        ("=" * 8 + encoded, "base64", "not valid base64"),
        (encoded, "utf-8", "base64-encoded"),
    ]:
        line = json.dumps({"key": "file", "value": {"content": content, "path": "w.bin", "encoding": encoding}})
        with pytest.raises(HTTPError, match=message):
            _feed_in_pieces(repo, (header + line + "\n").encode(), [65536])
    truncated = (header + json.dumps({"key": "file", "value": {"content": encoded}}))[:-300].encode()
    with pytest.raises(HTTPError, match="ends inside"):
        _feed_in_pieces(repo, truncated, [65536])
    assert not list((tmp_path / "root" / ".tmp").glob("upload-*"))


def test_large_file_through_the_client(hub_endpoint, repo_id, hub_root):
    api = HfApi()
    api.create_repo(repo_id)
    data = np.random.default_rng(1).standard_normal(1_500_000).astype(np.float32).tobytes()  # 6 MB
    sha = api.upload_file(path_or_fileobj=data, path_in_repo="weights.bin", repo_id=repo_id).oid
    assert Path(hf_hub_download(repo_id, "weights.bin", revision=sha)).read_bytes() == data
    # stored as a real git blob: git agrees on its content and sha
    git_dir = str(hub_root / "models" / repo_id) + ".git"
    blob = subprocess.run(["git", "--git-dir", git_dir, "rev-parse", f"{sha}:weights.bin"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert blob == api.get_paths_info(repo_id, "weights.bin")[0].blob_id
    assert subprocess.run(["git", "--git-dir", git_dir, "cat-file", "blob", blob], capture_output=True,
                          check=True).stdout == data
