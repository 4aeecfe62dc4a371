"""The Space end to end on the local hub: real checkpoints, real scores, real fine-tuned U-Nets, the deployed
app run as its own process, gradio_client over HTTP, and a headless Chromium driven by Playwright."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import timm
import torch
from huggingface_hub import HfApi, SpaceCard, snapshot_download
from PIL import Image

from hf_transfer_seg import hub
from hf_transfer_seg.cards import get_namespace, set_namespace
from hf_transfer_seg.cli import main as cli_main
from hf_transfer_seg.errors import ConfigError
from hf_transfer_seg.models.checkpoint import save_checkpoint
from hf_transfer_seg.space.config import SpaceConfig
from hf_transfer_seg.space.selection import select, weights_id

EXAMPLES = Path(__file__).resolve().parents[1] / "spaces" / "segmentation-demo" / "examples"
TARGET = "skimage-retina"
SEG_TARGET = "mni152-tissue"
SHA = 40


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_url(proc: subprocess.Popen, log: Path, marker: str, timeout: float = 240.0) -> str:
    """The first ``http://`` URL on a log line containing ``marker``; fails with the log tail if the app dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if marker in line and "http://" in line:
                return line[line.index("http://") :].split()[0]
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"the app did not start (exit {proc.poll()}); log tail:\n{log.read_text(errors='replace')[-4000:]}")


def _app_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)  # HF_ENDPOINT and HF_HOME of the session's local hub (tests/conftest.py)
    env.update(GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(tmp / "gradio"), PYTHONUNBUFFERED="1")
    for name in ("HTS_MODEL_REPO", "HTS_TARGET", "HTS_SEG_REPO", "HTS_SEG_REVISION", "PYTHONPATH"):
        env.pop(name, None)
    return env


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def encoder(hub_endpoint, tmp_path_factory):
    """An encoder repo with two revisions, scored by the scoring code, each fine-tuned by the fine-tuning code."""
    from hf_transfer_seg.data.registry import load_target
    from hf_transfer_seg.finetune import FinetuneConfig, finetune
    from hf_transfer_seg.finetune.push import push_segmentation_model, record_downstream
    from hf_transfer_seg.scoring.pipeline import run_score

    tmp = tmp_path_factory.mktemp("space-encoder")
    repo = f"test-org/space-encoder-{uuid.uuid4().hex[:8]}"
    for epoch, seed, top1 in ((1, 0, 1.4), (2, 1, 10.0)):
        torch.manual_seed(seed)
        model = timm.create_model("test_resnet", num_classes=10)
        folder = save_checkpoint(model, tmp / f"ck{epoch}", data_config={"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
        hub.push_revision(folder, repo, epoch)

        def facts(card, epoch=epoch, top1=top1):
            set_namespace(card.data, "training", {"epoch": epoch, "imagenet_top1": top1, "synthetic": True})
            return card

        hub.update_card(repo, hub.revision_name(epoch), facts, commit_message="training facts")
    outcome = run_score(repo, TARGET, num_images=8, image_size=64, batch_size=8, progress=False)
    best = outcome.summary["best_revision"]
    target = load_target(SEG_TARGET, limit=6)
    segs, downloaded = {}, {}
    for revision in ("epoch-0001", "epoch-0002"):
        config = FinetuneConfig(
            encoder_repo=repo, revision=revision, target=SEG_TARGET, epochs=1, batch_size=4, image_size=64,
            decoder_channels=(32, 16, 16, 8, 8), eval_every=1,
        )  # fmt: skip
        result = finetune(config, target=target, progress=False)
        push = push_segmentation_model(result, f"{repo}-unet-{revision}")
        record_downstream(result, seg_push=push)
        segs[revision] = push
        downloaded[revision] = result.encoder["sha"]
    return {"repo": repo, "best": best, "best_sha": outcome.summary["best_sha"], "segs": segs, "downloaded": downloaded}


@pytest.fixture(scope="module")
def deployed(encoder):
    space_id = f"test-org/space-demo-{uuid.uuid4().hex[:8]}"
    rc = cli_main(["space", "deploy", "--space-id", space_id, "--model-repo", encoder["repo"], "--target", TARGET])
    assert rc == 0
    return space_id


@pytest.fixture(scope="module")
def space_app(deployed, tmp_path_factory):
    """The deployed Space, downloaded from the local hub and run as ``python app.py`` in its own folder."""
    tmp = tmp_path_factory.mktemp("space-app")
    folder = Path(snapshot_download(deployed, repo_type="space", local_dir=tmp / "space"))
    log = tmp / "app.log"
    env = _app_env(tmp)
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(_free_port()))
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = _wait_for_url(proc, log, "Running on local URL")
        yield {"url": url, "folder": folder, "log": log}
    finally:
        _stop(proc)


# ------------------------------------------------------------------------------------------ selection


def test_selection_serves_the_best_scored_revision_pinned_to_shas(encoder):
    api = HfApi()
    selection = select(SpaceConfig(model_repo=encoder["repo"], target=TARGET))
    assert selection.best_revision == encoder["best"] and selection.best_sha == encoder["best_sha"]
    serving = selection.serving
    assert serving is not None and serving.encoder_revision == encoder["best"]
    assert serving.repo_id == encoder["segs"][encoder["best"]]["repo"]
    assert len(serving.sha) == SHA and serving.sha == encoder["segs"][encoder["best"]]["sha"]
    assert selection.main_sha == api.repo_info(encoder["repo"]).sha
    assert [m.encoder_revision for m in selection.seg_models] == ["epoch-0001", "epoch-0002"]
    rows = {r.revision: r for r in selection.rows}
    assert set(rows) == {"epoch-0001", "epoch-0002"}
    for row in rows.values():
        assert row.score is not None and row.ci_low <= row.score <= row.ci_high and row.dice is not None
    assert rows[encoder["best"]].is_best and sum(r.is_best for r in rows.values()) == 1
    assert (rows["epoch-0001"].imagenet_top1, rows["epoch-0002"].imagenet_top1) == (1.4, 10.0)
    assert selection.plot_path is not None and selection.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert selection.synthetic is True and not selection.notices
    # one commit per revision: scoring read one commit, fine-tuning (after the score's card commit) another; both
    # hold the same model.safetensors, so the served encoder is named by the scored commit, the leaderboard's
    downloaded = encoder["downloaded"][encoder["best"]]
    assert downloaded != encoder["best_sha"]
    assert serving.encoder_sha == encoder["best_sha"] == rows[encoder["best"]].sha
    assert serving.encoder_downloaded_sha == downloaded
    assert serving.encoder_weights_id == weights_id(encoder["repo"], encoder["best_sha"], api) == weights_id(encoder["repo"], downloaded, api)
    assert serving.encoder_weights_id.startswith(("git-blob:", "sha256:"))


def test_the_served_dice_stands_beside_the_strongest_trivial_prediction(encoder):
    from hf_transfer_seg.space.ui import header_markdown

    selection = select(SpaceConfig(model_repo=encoder["repo"], target=TARGET))
    card = hub.card_at_sha(selection.serving.repo_id, selection.serving.sha)
    baselines = get_namespace(card.data, "metrics")["baselines"]
    name, floor = selection.serving.trivial
    assert floor == max(baselines[k]["dice_mean"] for k in ("all_background", "all_foreground", "majority_class"))
    assert f"(predicting {name} everywhere scores {floor:.3f} on the same images" in header_markdown(selection)


def test_a_revision_keeps_both_commits_when_their_weights_differ(encoder):
    """Fine-tuned from a commit whose weights are not those of the commit the leaderboard lists (a branch pushed to
    again after scoring): both commits stay, and a notice says so."""
    from hf_transfer_seg.space.selection import LeaderboardRow, SegModelRef, _one_commit_per_revision

    api, repo = HfApi(), encoder["repo"]
    other = "epoch-0002" if encoder["best"] == "epoch-0001" else "epoch-0001"
    ref = SegModelRef("x/unet", "0" * SHA, encoder_revision=encoder["best"], encoder_sha=encoder["downloaded"][other],
                      encoder_downloaded_sha=encoder["downloaded"][other])
    rows = [LeaderboardRow(encoder["best"], 1.0, encoder["best_sha"])]
    notices: list[str] = []
    [kept] = _one_commit_per_revision([ref], repo, rows, api, notices)
    assert kept.encoder_sha == kept.encoder_downloaded_sha == encoder["downloaded"][other]
    assert kept.encoder_weights_id == weights_id(repo, encoder["downloaded"][other], api)
    assert len(notices) == 1 and "differs from the one at" in notices[0] and encoder["best_sha"][:10] in notices[0]
    [same] = _one_commit_per_revision([replace(ref, encoder_sha=encoder["downloaded"][encoder["best"]],
                                               encoder_downloaded_sha=encoder["downloaded"][encoder["best"]])], repo, rows, api, [])
    assert same.encoder_sha == encoder["best_sha"]


def test_selection_follows_the_summary_and_says_what_is_missing(encoder):
    repo = encoder["repo"]
    other = "epoch-0002" if encoder["best"] == "epoch-0001" else "epoch-0001"

    def hand_written(card):  # a second target whose best revision is the other one (the card contract)
        summary = get_namespace(card.data, "robustness_summary")
        rows = [dict(r, score=(0.1 if r["revision"] == other else 0.9)) for r in summary[TARGET]["rows"]]
        sha = next(r["sha"] for r in rows if r["revision"] == other)
        summary["hand-target"] = {"config": "cosine_m0.5_L-1_flat", "best_revision": other, "best_sha": sha, "best_score": 0.1, "rows": rows}
        set_namespace(card.data, "robustness_summary", summary)
        return card

    hub.update_card(repo, "main", hand_written, commit_message="a hand-written target")
    selection = select(SpaceConfig(model_repo=repo, target="hand-target"))
    assert selection.best_revision == other and selection.serving.encoder_revision == other
    assert selection.plot_path is None and any("plots/robustness_hand-target.png" in n for n in selection.notices)

    with pytest.raises(ConfigError, match="several targets .*choose one with HTS_TARGET"):
        select(SpaceConfig(model_repo=repo))
    with pytest.raises(ConfigError, match=f"scored targets: hand-target, {TARGET}"):
        select(SpaceConfig(model_repo=repo, target="nope"))
    with pytest.raises(ConfigError, match="was not found"):
        select(SpaceConfig(model_repo="test-org/does-not-exist-anywhere"))
    # an explicit segmentation repo wins, pinned to its sha, with a notice that it is not from the best revision;
    # the other models stay available for the compare tab
    explicit = select(SpaceConfig(model_repo=repo, target=TARGET, seg_repo=encoder["segs"][other]["repo"]))
    assert explicit.serving.encoder_revision == other and explicit.serving.sha == encoder["segs"][other]["sha"]
    assert any("not from the best-scored revision" in n for n in explicit.notices)
    assert [m.encoder_revision for m in explicit.others()] == [encoder["best"]]
    # an explicit repo that does not exist: said so, and the best revision's model is served instead
    missing = select(SpaceConfig(model_repo=repo, target=TARGET, seg_repo="test-org/no-such-unet"))
    assert any("test-org/no-such-unet@main is unavailable" in n for n in missing.notices)
    assert missing.serving.encoder_revision == missing.best_revision == encoder["best"]


# ------------------------------------------------------------------------------------------ deploy


def test_deploy_commits_the_app_its_configuration_and_the_project_source(encoder, deployed, capsys):
    api = HfApi()
    files = set(api.list_repo_files(deployed, repo_type="space"))
    for name in ("app.py", "README.md", "requirements.txt", "space_config.json", "examples/mni152-z092.png", "examples/examples.json",
                 "hf_transfer_seg/space/server.py", "hf_transfer_seg/finetune/push.py", "hf_transfer_seg/hub/cards.py"):  # fmt: skip
        assert name in files, name
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
    folder = Path(snapshot_download(deployed, repo_type="space"))
    card = SpaceCard.load(folder / "README.md")
    import gradio

    assert (card.data.sdk, card.data.sdk_version, card.data.app_file) == ("gradio", gradio.__version__, "app.py")
    assert card.data.models == [encoder["repo"]] + [encoder["segs"][r]["repo"] for r in ("epoch-0001", "epoch-0002")]
    assert "Pretraining data: **synthetic**" in card.text and encoder["best"] in card.text
    assert json.loads((folder / "space_config.json").read_text()) == {
        "model_repo": encoder["repo"], "target": TARGET, "max_side": 1024, "max_megapixels": 40.0,
    }  # fmt: skip
    assert (folder / "app.py").read_text() == (EXAMPLES.parent / "app.py").read_text()
    # the same deployment again changes nothing: no new commit
    before = api.repo_info(deployed, repo_type="space").sha
    capsys.readouterr()
    assert cli_main(["space", "deploy", "--space-id", deployed, "--model-repo", encoder["repo"], "--target", TARGET]) == 0
    out = capsys.readouterr().out
    assert f"Space {deployed} updated at commit {before[:10]}" in out and "Space variables: " in out
    assert api.repo_info(deployed, repo_type="space").sha == before


def test_deploy_refuses_a_target_that_was_never_scored(encoder, capsys):
    rc = cli_main(["space", "deploy", "--space-id", "test-org/never-created", "--model-repo", encoder["repo"], "--target", "nope"])
    assert rc == 2 and "no robustness scores for target 'nope'" in capsys.readouterr().err
    assert not HfApi().repo_exists("test-org/never-created", repo_type="space")


# ------------------------------------------------------------------------------------------ the running Space


def test_deployed_space_segments_through_the_api_with_the_best_revision(space_app, encoder):
    from gradio_client import Client, handle_file

    # the deployed copy of the source runs, not the installed package
    assert f"loaded from folder {space_app['folder'].resolve()}\n" in space_app["log"].read_text()
    client = Client(space_app["url"], verbose=False)
    example = EXAMPLES / "mni152-z092.png"
    overlay, mask_path, info = client.predict(handle_file(str(example)), api_name="/segment")
    with Image.open(example) as img:
        size = img.size
    with Image.open(mask_path) as mask:
        assert mask.size == size and mask.mode == "P"
        values = set(np.unique(np.asarray(mask)).tolist())
    assert values <= {0, 1, 2} and len(values) >= 2
    assert info["encoder_revision"] == encoder["best"] and info["best_revision"] == encoder["best"] and info["served_by_best"]
    assert info["seg_repo"] == encoder["segs"][encoder["best"]]["repo"] and info["seg_commit"] == encoder["segs"][encoder["best"]]["sha"]
    # one commit for the revision, the scored one; the commit fine-tuning downloaded is explained, not listed beside it
    assert info["encoder_commit"] == info["best_commit"] == encoder["best_sha"]
    assert encoder["downloaded"][encoder["best"]][:10] in info["commits_note"] and "same file" in info["commits_note"]
    assert not any(k.endswith("_sha") for k in info)
    assert info["mask_size"] == list(size) and info["mask_values"] == {"background": 0, "grey_matter": 1, "white_matter": 2}
    assert [a["label"] for a in overlay["annotations"]] == ["grey_matter", "white_matter"]
    with Image.open(overlay["image"]) as base:
        assert base.size == size


def test_deployed_space_previews_tiff_uploads_and_labels_its_examples_by_target(space_app, tmp_path):
    """A browser cannot show a TIFF: the Space shows a PNG preview of it; examples say which target they come from."""
    import urllib.request

    from gradio_client import Client, handle_file

    client = Client(space_app["url"], verbose=False)
    tiff = tmp_path / "scan.tif"
    tifffile.imwrite(tiff, (np.random.default_rng(0).random((70, 90)) * 60000).astype(np.uint16))
    preview = client.predict(handle_file(str(tiff)), api_name="/preview")  # a gr.update: {"value": ..., "visible": True}
    assert preview["visible"] is True
    value = preview["value"]
    with Image.open(value["path"] if isinstance(value, dict) else value) as img:
        assert img.size == (90, 70) and img.format == "PNG"
        assert np.asarray(img).std() > 0  # not an empty picture
    with urllib.request.urlopen(space_app["url"].rstrip("/") + "/config") as response:
        config = response.read().decode()
    assert "(the served model's own target)" in config  # MNI152 examples for a model fine-tuned on mni152-tissue
    assert "held-out validation slices of the fine-tuning target" not in config


def test_deployed_space_handles_awkward_and_bad_uploads(space_app, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(space_app["url"], verbose=False)
    with Image.open(EXAMPLES / "mni152-z056.png") as img:
        grey = np.asarray(img)
    h, w = grey.shape
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep16.png")
    Image.fromarray(np.dstack([grey] * 3 + [np.full_like(grey, 200)]), mode="RGBA").save(tmp_path / "rgba.png")
    tifffile.imwrite(tmp_path / "scan.tif", grey.astype(np.float32) / 255.0)
    for name in ("deep16.png", "rgba.png", "scan.tif"):
        _, mask_path, info = client.predict(handle_file(str(tmp_path / name)), api_name="/segment")
        with Image.open(mask_path) as mask:
            assert mask.size == (w, h), name
        assert not info["notices"], name
    assert "16-bit grayscale" in info["input"] or "TIFF" in info["input"]

    Image.fromarray(np.tile(grey, (1, 6))).save(tmp_path / "wide.png")  # 6w x h: longest side above 1024
    _, mask_path, info = client.predict(handle_file(str(tmp_path / "wide.png")), api_name="/segment")
    with Image.open(mask_path) as mask:
        assert max(mask.size) == 1024 and list(mask.size) == info["mask_size"]
    assert "downscaled" in info["notices"][0]

    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4 not an image at all")
    with pytest.raises(AppError, match="report.pdf is not an image this demo can read") as caught:
        client.predict(handle_file(str(tmp_path / "report.pdf")), api_name="/segment")
    assert "Traceback" not in str(caught.value)

    left, right, text = client.predict(handle_file(str(EXAMPLES / "mni152-z056.png")), None, api_name="/compare")
    assert Path(left).is_file() and Path(right).is_file() and "agree on" in text

    # nothing outside the app's outputs is served: not the system, not the app's own folder, not the Hub cache
    import httpx

    for path in ("/etc/passwd", space_app["folder"] / "app.py", space_app["folder"] / "space_config.json", EXAMPLES / "mni152-z056.png"):
        assert httpx.get(f"{space_app['url']}/gradio_api/file={path}").status_code in (403, 404), path
    # and an API call naming a server file instead of uploading one is refused before the app reads it
    payload = {"data": [{"path": str(EXAMPLES / "mni152-z056.png"), "meta": {"_type": "gradio.FileData"}}]}
    event = httpx.post(f"{space_app['url']}/gradio_api/call/segment", json=payload).json()["event_id"]
    stream = httpx.get(f"{space_app['url']}/gradio_api/call/segment/{event}", timeout=60).text
    assert "event: error" in stream and "event: complete" not in stream, stream


def test_browser_segments_an_upload_and_shows_the_leaderboard(space_app, encoder, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install '.[test]')")
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(space_app["url"])
            page.wait_for_selector("#segment-button", timeout=60_000)
            page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLES / "mni152-z092.png"))
            page.wait_for_selector("#input-image img", timeout=30_000)
            page.click("#segment-button")
            page.wait_for_selector("#overlay img", timeout=60_000)
            page.get_by_text("white_matter").first.wait_for(timeout=30_000)  # the legend
            served = page.locator("#served-line")
            served.get_by_text(encoder["best"], exact=True).wait_for(timeout=30_000)
            assert encoder["segs"][encoder["best"]]["sha"][:10] in served.inner_text()
            page.wait_for_timeout(1000)  # let the overlay fade in: the screenshot is for people to look at
            page.screenshot(path=str(tmp_path / "space-segment.png"), full_page=True)
            page.get_by_role("tab", name="Leaderboard").click()
            board = page.locator("#leaderboard")
            board.get_by_text("★ best").filter(visible=True).first.wait_for(timeout=30_000)
            assert "epoch-0001" in board.inner_text() and "epoch-0002" in board.inner_text()
            page.locator("#score-plot img").wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "space-leaderboard.png"), full_page=True)
        finally:
            browser.close()
    for name in ("space-segment.png", "space-leaderboard.png"):
        with Image.open(tmp_path / name) as shot:
            assert shot.size[0] == 1280 and shot.size[1] >= 900


# ------------------------------------------------------------------------------------------ run, and no config


def test_space_run_prints_the_url_and_serves(encoder, tmp_path):
    from gradio_client import Client, handle_file

    log = tmp_path / "run.log"
    cmd = [sys.executable, "-m", "hf_transfer_seg", "space", "run", "--model-repo", encoder["repo"], "--target", TARGET, "--port", "0"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=_app_env(tmp_path), stdout=out, stderr=subprocess.STDOUT)
    try:
        url = _wait_for_url(proc, log, "Segmentation demo running on")
        assert url.startswith("http://127.0.0.1:")
        _, _, info = Client(url, verbose=False).predict(handle_file(str(EXAMPLES / "mni152-z028.png")), api_name="/segment")
        assert info["encoder_revision"] == encoder["best"]
    finally:
        _stop(proc)


def test_an_unconfigured_space_shows_what_to_set(hub_endpoint, monkeypatch, tmp_path):
    from hf_transfer_seg.space.server import build_demo

    monkeypatch.delenv("HTS_MODEL_REPO", raising=False)
    demo = build_demo(tmp_path)
    text = json.dumps(demo.get_config_file())
    assert "could not start" in text and "HTS_MODEL_REPO" in text and not hasattr(demo, "hts_service")
    demo = build_demo(tmp_path, model_repo="test-org/not-there")
    assert "test-org/not-there" in json.dumps(demo.get_config_file())
