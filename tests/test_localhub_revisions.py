"""Revisions resolve like git, safely: 4 to 40 hex digits always name a commit (issue 24, item 2).

Through the genuine huggingface_hub client against the session's local hub server: every length from 4 to 40,
a ref named as the commit's prefix refused by the API and, made with git past the API (as an old server or
``git push`` could have), never winning over the commit on any lookup route; an ambiguous prefix answered 400
with the candidates.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError

from hf_transfer_seg.localhub import storage as st

LENGTHS = list(range(4, 41))


@pytest.fixture(scope="module")
def shadowed(hub_endpoint, hub_root, tmp_path_factory):
    """A repository with commits ``first`` and ``second`` of f.txt, and (made with git, past the API) a branch
    named as every 4..40-digit prefix of ``first``, pointing at ``second``."""
    api = HfApi(endpoint=hub_endpoint)
    repo_id = f"test-org/revisions-{tmp_path_factory.mktemp('x').name[-8:]}"
    api.create_repo(repo_id)
    first = api.upload_file(path_or_fileobj=b"first", path_in_repo="f.txt", repo_id=repo_id).oid
    second = api.upload_file(path_or_fileobj=b"second", path_in_repo="f.txt", repo_id=repo_id).oid
    repo = st.Storage(hub_root).get("model", repo_id)
    for length in LENGTHS[:-1]:  # a 40-digit ref name would be ambiguous to git itself
        repo.git("update-ref", f"refs/heads/{first[:length]}", second)
    return api, repo_id, first, second, repo


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


@pytest.mark.parametrize("length", LENGTHS)
def test_a_branch_or_tag_named_as_a_commit_prefix_is_refused(shadowed, length):
    api, repo_id, first, _, _ = shadowed
    for name in (first[:length], first[:length].upper()):
        for create in (lambda: api.create_branch(repo_id, branch=name), lambda: api.create_tag(repo_id, tag=name)):
            with pytest.raises(HfHubHTTPError) as info:
                create()
            assert _status(info.value) == 400 and "reads as a commit" in str(info.value), str(info.value)[:400]


@pytest.mark.parametrize("length", LENGTHS)
def test_every_lookup_of_a_commit_prefix_serves_that_commit_not_a_same_named_branch(shadowed, length, tmp_path):
    api, repo_id, first, _, repo = shadowed
    revision = first[:length]
    path = hf_hub_download(repo_id, "f.txt", revision=revision, endpoint=api.endpoint, cache_dir=tmp_path)
    assert Path(path).read_bytes() == b"first"
    metadata = get_hf_file_metadata(hf_hub_url(repo_id, "f.txt", revision=revision, endpoint=api.endpoint))
    assert metadata.commit_hash == first
    assert api.model_info(repo_id, revision=revision).sha == first
    blob = repo.tree(first)["f.txt"].oid
    assert {e.path: e.blob_id for e in api.list_repo_tree(repo_id, revision=revision)}["f.txt"] == blob
    [info] = api.get_paths_info(repo_id, ["f.txt"], revision=revision)
    assert info.blob_id == blob
    assert api.list_repo_commits(repo_id, revision=revision)[0].commit_id == first
    # upper case is the same commit (git reads hex in either case)
    assert api.model_info(repo_id, revision=revision.upper()).sha == first


def test_the_shadowing_branch_stays_reachable_by_its_full_ref_name(shadowed):
    api, repo_id, first, second, _ = shadowed
    assert api.model_info(repo_id, revision=f"refs/heads/{first[:10]}").sha == second


def test_commits_go_to_branches_only(shadowed):
    api, repo_id, first, _, _ = shadowed
    with pytest.raises(HfHubHTTPError) as info:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, revision=first[:10])
    assert _status(info.value) == 400 and "only be made to a branch" in str(info.value)


def test_short_non_hex_and_unknown_revisions(shadowed):
    api, repo_id, first, second, _ = shadowed
    api.create_branch(repo_id, branch="abc", revision=second)  # 3 hex digits: too short to be a commit
    api.create_branch(repo_id, branch="cafe-1", revision=second)
    assert api.model_info(repo_id, revision="abc").sha == second
    assert api.model_info(repo_id, revision="cafe-1").sha == second
    missing = next(p for p in ("".join(c) for c in itertools.product("0123456789abcdef", repeat=8))
                   if not first.startswith(p) and not second.startswith(p))
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision=missing)


def _colliding_commits(tree: str) -> tuple[bytes, bytes, str]:
    """Two commit objects of ``tree`` whose shas share their first 4 hex digits (found by hashing, ~300 tries)."""
    seen: dict[str, bytes] = {}
    for i in itertools.count():
        body = (f"tree {tree}\nauthor a <a@x> 1700000000 +0000\ncommitter a <a@x> 1700000000 +0000\n\n"
                f"collision {i}\n").encode()
        sha = hashlib.sha1(b"commit %d\0" % len(body) + body).hexdigest()
        if sha[:4] in seen:
            return seen[sha[:4]], body, sha[:4]
        seen[sha[:4]] = body


def test_an_ambiguous_prefix_is_answered_400_naming_the_commits(shadowed, hub_endpoint):
    api, repo_id, first, _, repo = shadowed
    bodies = _colliding_commits(repo.root_tree_oid(first))
    shas = [repo.git("hash-object", "-t", "commit", "-w", "--stdin", input=body).decode().strip()
            for body in bodies[:2]]
    for n, sha in enumerate(shas):
        repo.git("update-ref", f"refs/heads/collision-{n}", sha)
    prefix = bodies[2]
    assert shas[0][:4] == shas[1][:4] == prefix
    with pytest.raises(HfHubHTTPError) as info:
        api.model_info(repo_id, revision=prefix)
    assert _status(info.value) == 400 and "ambiguous" in str(info.value)
    assert all(sha in str(info.value) for sha in shas), str(info.value)[:500]
    response = httpx.get(f"{hub_endpoint}/{repo_id}/resolve/{prefix}/f.txt")
    assert response.status_code == 400 and "ambiguous" in response.headers["x-error-message"]
    unique = next(n for n in range(5, 41) if shas[0][:n] != shas[1][:n])
    for sha in shas:
        assert api.model_info(repo_id, revision=sha[:unique]).sha == sha
