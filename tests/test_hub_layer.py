"""The Hub revision layer against the real local hub server, through the genuine huggingface_hub client."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import save_file
import torch

from hf_transfer_seg import hub
from hf_transfer_seg.cards import get_namespace, set_namespace, replace_section, get_section_text
from hf_transfer_seg.errors import ConfigError, HubError, HubWriteAccessError, RevisionNotFound


def _checkpoint(folder: Path, value: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.full((4, 4), value)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"architecture": "none"}')
    (folder / "README.md").write_text(f"---\nlibrary_name: timm\n---\n# value {value}\n")
    return folder


def test_revision_names_sort_in_epoch_order():
    epochs = [0.25, 0.5, 1, 2, 5, 10, 75, 100, 300, 1000, 12.5]
    names = [hub.revision_name(e) for e in epochs]
    assert names[:4] == ["epoch-0000.25", "epoch-0000.5", "epoch-0001", "epoch-0002"]
    assert sorted(names) == [hub.revision_name(e) for e in sorted(epochs)]
    assert [hub.parse_revision_name(n) for n in names] == [float(e) for e in epochs]
    assert hub.parse_revision_name("main") is None
    with pytest.raises(ConfigError):
        hub.revision_name(-1)


def test_push_list_select_download(hub_endpoint, repo_id, tmp_path):
    api = HfApi()
    pushed = [hub.push_revision(_checkpoint(tmp_path / f"c{e}", e), repo_id, e) for e in (5, 1, 20)]
    revisions = hub.list_revisions(repo_id)
    assert [r.name for r in revisions] == ["epoch-0001", "epoch-0005", "epoch-0020"]
    assert {r.sha for r in revisions} == {p.sha for p in pushed}

    # Pushing the same folder again makes no new commit: a retried push never duplicates a revision.
    again = hub.push_revision(tmp_path / "c5", repo_id, 5)
    assert again.sha == pushed[0].sha
    assert len(api.list_repo_commits(repo_id, revision="epoch-0005")) == len(
        api.list_repo_commits(repo_id, revision="main")
    ) + 1

    assert [r.name for r in hub.select_revisions(repo_id, "20,epoch-0001")] == ["epoch-0001", "epoch-0020"]
    with pytest.raises(RevisionNotFound, match="available: epoch-0001, epoch-0005, epoch-0020"):
        hub.select_revisions(repo_id, "epoch-0002")

    folder = hub.download_revision(repo_id, pushed[2].sha)
    assert (folder / "README.md").read_text().endswith("# value 20\n")
    # Cached by sha: a fresh process with HF_HUB_OFFLINE=1 resolves it without the server.
    code = (
        "from hf_transfer_seg.hub import download_revision; import sys;"
        f"print(download_revision({repo_id!r}, {pushed[2].sha!r}))"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == folder


def test_update_card_edits_only_that_revision(hub_endpoint, repo_id, tmp_path):
    for e in (1, 2):
        hub.push_revision(_checkpoint(tmp_path / f"c{e}", e), repo_id, e)
    ModelCard("---\nlicense: apache-2.0\n---\n# main card\n").push_to_hub(repo_id)

    def edit(card: ModelCard) -> ModelCard:
        set_namespace(card.data, "robustness", {"t": {"score": 0.25}})
        card.text = replace_section(card.text, "robustness", "score 0.25")
        return card

    hub.update_card(repo_id, "epoch-0002", edit, commit_message="score", extra_files={"plots/p.png": b"png"})
    card2, _ = hub.read_card(repo_id, "epoch-0002")
    assert get_namespace(card2.data, "robustness") == {"t": {"score": 0.25}}
    assert card2.data.library_name == "timm"  # the revision's own metadata kept
    assert "# value 2" in card2.text and get_section_text(card2.text, "robustness") == "score 0.25"
    assert HfApi().file_exists(repo_id, "plots/p.png", revision="epoch-0002")
    card1, _ = hub.read_card(repo_id, "epoch-0001")
    main, _ = hub.read_card(repo_id, "main")
    assert get_namespace(card1.data) == {} and get_namespace(main.data) == {}
    assert main.data.license == "apache-2.0" and "# main card" in main.text


def _add_entry(repo_id: str, key: str, endpoint: str) -> None:
    def edit(card):
        entries = get_namespace(card.data, "entries", {})
        entries[key] = True
        set_namespace(card.data, "entries", entries)

    hub.update_card(repo_id, "main", edit, commit_message=f"entry {key}")


def test_concurrent_card_edits_lose_nothing(hub_endpoint, repo_id):
    HfApi().create_repo(repo_id)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_add_entry, args=(repo_id, f"k{i}", hub_endpoint)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    card, _ = hub.read_card(repo_id, "main")
    assert get_namespace(card.data, "entries") == {f"k{i}": True for i in range(4)}


def test_write_access_check_fails_fast_and_never_leaks_the_token(tmp_path, caplog):
    from hf_transfer_seg.localhub import local_hub

    secret = "hf_" + "s3cr3tTOKENvalue1234abcdefghijklmnop"
    with local_hub(tmp_path / "root", token="hf_theRealServerToken99") as endpoint:
        api = HfApi(endpoint=endpoint, token=secret)
        with caplog.at_level(logging.DEBUG), pytest.raises(HubWriteAccessError) as err:
            hub.check_write_access("org/repo", api=api)
    assert "HF_TOKEN" in str(err.value)
    assert secret not in str(err.value) and secret not in caplog.text


def test_retries_give_up_with_a_clear_error(monkeypatch):
    api = HfApi(endpoint="http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr("time.sleep", lambda s: None)
    with pytest.raises(HubError, match="failed after 3 attempts.*HF_ENDPOINT"):
        hub.with_retries(lambda: api.list_repo_refs("org/x"), what="list refs", attempts=3)


def test_redact_removes_tokens_and_nothing_else():
    token = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
    text = hub.redact(f"pushed with {token}; Authorization: Bearer abc.def token=secretvalue123 ok")
    assert token not in text and "abc.def" not in text and "secretvalue123" not in text and text.endswith("ok")
    assert hub.redact("/site-packages/hf_transfer_seg/hub/cards.py") == "/site-packages/hf_transfer_seg/hub/cards.py"
