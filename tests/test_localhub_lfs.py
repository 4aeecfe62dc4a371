"""LFS uploads on the local hub (``lfs_uploads=True``): batch API, signed PUT, ``lfsFile`` commit lines.

The genuine client takes the basic LFS path only with Xet off (it sends every "lfs" file through Xet
whenever ``hf_xet`` is importable), so these tests turn ``constants.HF_HUB_DISABLE_XET`` on, and run
their own server (the session server keeps the default: every file "regular").
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download, lfs
from huggingface_hub.errors import EntryNotFoundError

from hf_transfer_seg.localhub import local_hub
from hf_transfer_seg.localhub import storage as st

MB = 1 << 20


@pytest.fixture
def no_xet(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture(scope="module")
def lfs_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("lfs-hub")
    with local_hub(root, lfs_uploads=True) as endpoint:
        yield endpoint, root


def _git(root: Path, repo_id: str, *args: str) -> bytes:
    git_dir = str(root / "models" / repo_id) + ".git"
    return subprocess.run(["git", "--git-dir", git_dir, *args], capture_output=True, check=True).stdout


def _count_puts(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = lfs._upload_single_part

    def counted(operation, upload_url):
        calls.append(operation.path_in_repo)
        return original(operation=operation, upload_url=upload_url)

    monkeypatch.setattr(lfs, "_upload_single_part", counted)
    return calls


def test_lfs_upload_round_trips_by_sha_and_branch(lfs_hub, repo_id, tmp_path, no_xet, monkeypatch):
    endpoint, root = lfs_hub
    api = HfApi(endpoint=endpoint)
    api.create_repo(repo_id)
    api.create_branch(repo_id, branch="epoch-0001")
    data = os.urandom(3 * MB + 12345)
    source = tmp_path / "model.safetensors"
    source.write_bytes(data)
    puts = _count_puts(monkeypatch)

    # the server answers "lfs" for big files only; small ones stay inline
    modes = httpx.post(f"{endpoint}/api/models/{repo_id}/preupload/main", json={"files": [
        {"path": "model.safetensors", "size": len(data), "sample": ""},
        {"path": "config.json", "size": 2, "sample": ""}]}).json()["files"]
    assert [m["uploadMode"] for m in modes] == ["lfs", "regular"]

    info = api.upload_file(path_or_fileobj=str(source), path_in_repo="model.safetensors", repo_id=repo_id,
                           revision="epoch-0001")
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=repo_id, revision="epoch-0001")
    assert puts == ["model.safetensors"]
    sha256 = hashlib.sha256(data).hexdigest()

    for revision in (info.oid, "epoch-0001"):
        path = hf_hub_download(repo_id, "model.safetensors", revision=revision, endpoint=endpoint,
                               cache_dir=tmp_path / f"cache-{revision}")
        assert Path(path).read_bytes() == data
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "model.safetensors", revision="main", endpoint=endpoint,
                        cache_dir=tmp_path / "cache-main")

    # stored as a real git blob on the branch
    blob = _git(root, repo_id, "rev-parse", "epoch-0001:model.safetensors").decode().strip()
    assert _git(root, repo_id, "cat-file", "blob", blob) == data
    assert api.get_paths_info(repo_id, "model.safetensors", revision="epoch-0001")[0].blob_id == blob
    # resolve names the sha256 as the Hub does for LFS files
    head = httpx.head(f"{endpoint}/{repo_id}/resolve/epoch-0001/model.safetensors")
    assert head.headers["etag"] == f'"{sha256}"' and head.headers["x-linked-etag"] == f'"{sha256}"'
    assert head.headers["x-linked-size"] == str(len(data)) == head.headers["content-length"]


def test_second_upload_is_skipped(lfs_hub, repo_id, tmp_path, no_xet, monkeypatch):
    endpoint, root = lfs_hub
    api = HfApi(endpoint=endpoint)
    api.create_repo(repo_id)
    data = os.urandom(2 * MB)
    source = tmp_path / "w.bin"
    source.write_bytes(data)
    puts = _count_puts(monkeypatch)
    first = api.upload_file(path_or_fileobj=str(source), path_in_repo="w.bin", repo_id=repo_id)
    assert puts == ["w.bin"]

    # same path, same bytes: preupload reports the sha256 already there, no commit is made
    again = api.upload_file(path_or_fileobj=str(source), path_in_repo="w.bin", repo_id=repo_id)
    assert again.oid == first.oid and puts == ["w.bin"]
    # same bytes at another path: the batch API says the object is stored, so no PUT either
    copy = api.upload_file(path_or_fileobj=str(source), path_in_repo="copy/w.bin", repo_id=repo_id)
    assert copy.oid != first.oid and puts == ["w.bin"]
    assert Path(hf_hub_download(repo_id, "copy/w.bin", revision=copy.oid, endpoint=endpoint,
                                cache_dir=tmp_path / "cache")).read_bytes() == data

    # a file uploaded inline (before lfs_uploads was on, say) is recognised too: its sha256 is computed once
    inline = os.urandom(MB + 1)
    repo = st.Storage(root).get("model", repo_id)
    blob = repo.write_blob(inline)
    head = repo.commit("main", [st.FileOp("inline.bin", blob)], summary="inline",
                       parent_commit=repo.branch_head("main"))
    assert repo.blob_sha256(blob) is None
    assert api.upload_file(path_or_fileobj=inline, path_in_repo="inline.bin", repo_id=repo_id).oid == head
    assert repo.branch_head("main") == head and puts == ["w.bin"]
    assert repo.blob_sha256(blob) == hashlib.sha256(inline).hexdigest()


def test_range_requests_on_a_large_lfs_file(lfs_hub, repo_id, tmp_path, no_xet):
    endpoint, _ = lfs_hub
    api = HfApi(endpoint=endpoint)
    api.create_repo(repo_id)
    data = os.urandom(5 * MB + 7)
    api.upload_file(path_or_fileobj=data, path_in_repo="big.bin", repo_id=repo_id)
    url = f"{endpoint}/{repo_id}/resolve/main/big.bin"
    with httpx.Client(timeout=60) as client:
        for header, expected in [
            ("bytes=0-0", data[:1]),
            (f"bytes={MB - 3}-{3 * MB + 2}", data[MB - 3: 3 * MB + 3]),  # across internal block boundaries
            ("bytes=-100", data[-100:]),
            (f"bytes={5 * MB}-", data[5 * MB:]),
            (f"bytes=4000000-{10 * MB}", data[4000000:]),  # end past the size is clipped
        ]:
            response = client.get(url, headers={"Range": header})
            assert response.status_code == 206, header
            assert response.content == expected, header
            start = len(data) - len(expected) if header.startswith("bytes=-") else int(header[6:].split("-")[0])
            assert response.headers["content-range"] == f"bytes {start}-{start + len(expected) - 1}/{len(data)}"
        response = client.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert response.status_code == 416 and response.headers["content-range"] == f"bytes */{len(data)}"
        assert client.get(url).content == data


def test_concurrent_lfs_uploads_serialize(lfs_hub, repo_id, no_xet):
    endpoint, root = lfs_hub
    api = HfApi(endpoint=endpoint)
    api.create_repo(repo_id)
    payloads = {f"shard-{i}.bin": os.urandom(MB + i) for i in range(4)}
    barrier = threading.Barrier(len(payloads))

    def upload(name: str) -> str:
        barrier.wait()
        return api.upload_file(path_or_fileobj=payloads[name], path_in_repo=name, repo_id=repo_id).oid

    with ThreadPoolExecutor(len(payloads)) as pool:
        shas = list(pool.map(upload, payloads))
    assert len(set(shas)) == len(payloads)
    # every commit landed, one after another, and the head has every file
    log = _git(root, repo_id, "log", "--format=%H", "main").decode().split()
    assert set(shas) <= set(log) and len(log) == len(payloads) + 1
    head = api.repo_info(repo_id)
    assert {s.rfilename for s in head.siblings} >= set(payloads)
    for name, data in payloads.items():
        assert httpx.get(f"{endpoint}/{repo_id}/resolve/main/{name}").content == data


def test_lfs_endpoints_refuse_bad_input(lfs_hub, repo_id):
    endpoint, root = lfs_hub
    HfApi(endpoint=endpoint).create_repo(repo_id)
    data = os.urandom(MB + 5)
    oid = hashlib.sha256(data).hexdigest()
    batch_url = f"{endpoint}/{repo_id}.git/info/lfs/objects/batch"
    with httpx.Client(timeout=60) as client:
        for payload in [{"operation": "upload", "objects": [{"oid": "ABC", "size": 1}]},
                        {"operation": "upload", "objects": [{"oid": oid, "size": -1}]},
                        {"operation": "delete", "objects": []},
                        {"operation": "upload", "transfers": ["multipart"], "objects": []}]:
            assert client.post(batch_url, json=payload).status_code == 400, payload
        assert client.post(f"{endpoint}/test-org/missing.git/info/lfs/objects/batch",
                           json={"operation": "upload", "objects": []}).status_code == 404
        answer = client.post(batch_url, json={"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]})
        href = answer.json()["objects"][0]["actions"]["upload"]["href"]
        assert answer.json()["transfer"] == "basic"
        # a tampered signature or size, wrong bytes, too many bytes: refused, nothing recorded
        assert client.put(href.replace("sig=", "sig=0"), content=data).status_code == 403
        assert client.put(href.replace(f"size={len(data)}", "size=5"), content=data[:5]).status_code == 403
        assert client.put(href, content=data[:-1] + b"x").status_code == 400
        assert client.put(href, content=data + b"x").status_code == 400
        assert client.put(href, content=data[:-1]).status_code == 400
        # an lfsFile line for an object that was never uploaded
        body = (b'{"key": "header", "value": {"summary": "s"}}\n'
                + b'{"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "%s", "size": %d}}\n'
                % (oid.encode(), len(data)))
        commit_url = f"{endpoint}/api/models/{repo_id}/commit/main"
        refused = client.post(commit_url, content=body)
        assert refused.status_code == 400 and "LFS object" in refused.json()["error"]
        assert client.put(href, content=data).status_code == 200
        assert client.post(commit_url, content=body.replace(b'"size": %d' % len(data), b'"size": 3')).status_code == 400
        assert client.post(commit_url, content=body).status_code == 200
        assert client.get(f"{endpoint}/{repo_id}/resolve/main/w.bin").content == data
        # the object is stored now: the batch API asks for no upload
        again = client.post(batch_url, json={"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]})
        assert "actions" not in again.json()["objects"][0]
    leftovers = list((root / "models" / repo_id).with_suffix(".git").joinpath("objects").glob("tmp_obj_*"))
    assert leftovers == []


def test_default_server_keeps_every_file_regular(hub_endpoint, repo_id):
    """Xet clients break on "lfs" answers: the default server never gives one."""
    HfApi().create_repo(repo_id)
    files = httpx.post(f"{hub_endpoint}/api/models/{repo_id}/preupload/main",
                       json={"files": [{"path": "w.bin", "size": 10 << 30, "sample": ""}]}).json()["files"]
    assert files[0]["uploadMode"] == "regular"


def test_a_xet_client_gets_a_clear_error(lfs_hub, repo_id, monkeypatch):
    """With lfs_uploads, a client with Xet on asks for a Xet token: it is told what to change."""
    endpoint, _ = lfs_hub
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    api = HfApi(endpoint=endpoint)
    api.create_repo(repo_id)
    with pytest.raises(Exception) as caught:
        api.upload_file(path_or_fileobj=os.urandom(MB), path_in_repo="w.bin", repo_id=repo_id)
    # hf_xet reports only the status of the token request; its body (and the server log) say what to do
    assert "501" in str(caught.value) and "xet-write-token" in str(caught.value)
    answer = httpx.get(f"{endpoint}/api/models/{repo_id}/xet-write-token/main")
    assert answer.status_code == 501 and "HF_HUB_DISABLE_XET=1" in answer.json()["error"]


def test_lfs_uploads_with_a_token(tmp_path, repo_id, no_xet):
    data = os.urandom(MB + 1)
    with local_hub(tmp_path / "root", token="s3cret", lfs_uploads=True) as endpoint:
        api = HfApi(endpoint=endpoint, token="s3cret")
        api.create_repo(repo_id)
        sha = api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id).oid
        assert Path(hf_hub_download(repo_id, "w.bin", revision=sha, endpoint=endpoint, token="s3cret",
                                    cache_dir=tmp_path / "cache")).read_bytes() == data
        batch = httpx.post(f"{endpoint}/{repo_id}.git/info/lfs/objects/batch",
                           json={"operation": "upload", "objects": []})
        assert batch.status_code == 401


@pytest.mark.parametrize("size", [0, 1, st.LARGE_BLOB - 1, st.LARGE_BLOB, st.LARGE_BLOB + 3 * 65535 + 2])
def test_blob_writer_objects_are_valid_git(tmp_path, size):
    repo = st.Storage(tmp_path / "root").create("model", "a/b")
    data = os.urandom(size)
    writer = st.BlobWriter(repo, size, sha256=True)
    try:
        for i in range(0, size, 300_001):
            writer.write(data[i: i + 300_001])
        oid = writer.finish()
    finally:
        writer.discard()
    assert writer.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    assert oid == hashlib.sha1(b"blob %d\0" % size + data).hexdigest()
    git = ["git", "--git-dir", str(repo.path)]
    assert subprocess.run([*git, "cat-file", "blob", oid], capture_output=True, check=True).stdout == data
    assert subprocess.run([*git, "fsck", "--strict", "--no-dangling"], capture_output=True).returncode == 0
    assert repo.read_blob(oid) == data and repo.blob_size(oid) == size
