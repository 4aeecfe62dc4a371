"""Scoring real tiny timm checkpoints on real images, without the Hub: plans, views, failures, live scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from hf_transfer_seg.data.unlabelled import BUILTIN_RETINA
from hf_transfer_seg.data.registry import resolve_target
from hf_transfer_seg.errors import ConfigError, DataError
from hf_transfer_seg.models.checkpoint import save_checkpoint
from hf_transfer_seg.scoring import HEADLINE, robustness_values
from hf_transfer_seg.scoring.card import revision_section
from hf_transfer_seg.scoring.features import feature_levels, load_scoring_encoder
from hf_transfer_seg.scoring.live import LiveScorer
from hf_transfer_seg.scoring.plan import build_plan
from hf_transfer_seg.scoring.scorer import score_folder
from hf_transfer_seg.scoring.views import BRIGHTNESS, CONTRAST, HUE, SATURATION, draw_jitter, expand

SIZE = 64


def make_checkpoint(folder, seed: int, arch: str = "test_resnet"):
    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=10)
    return save_checkpoint(model, folder, data_config={"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})


@pytest.fixture(scope="module")
def retina():
    return resolve_target(BUILTIN_RETINA)


@pytest.fixture(scope="module")
def plan(retina):
    return build_plan(retina, num_images=12, seed=0, image_size=SIZE, progress=False)


def test_builtin_retina_is_shipped_and_tiled(retina):
    assert retina.count >= 100  # many 224 tiles from one shipped photograph, no fetching
    tile = retina.load(0)
    assert tile.shape == (3, 224, 224) and tile.dtype == torch.float32
    assert 0.0 <= float(tile.min()) and float(tile.max()) <= 1.0
    assert float(tile.max(dim=0).values.gt(20 / 255).float().mean()) >= 0.6  # mostly inside the fundus
    assert "real fundus photograph" in retina.description and not retina.synthetic


def test_jitter_parameters_follow_colorjitter_ranges():
    p = draw_jitter(2000, torch.Generator().manual_seed(0))
    lows = [1 - BRIGHTNESS, 1 - CONTRAST, 1 - SATURATION, -HUE]
    highs = [1 + BRIGHTNESS, 1 + CONTRAST, 1 + SATURATION, HUE]
    for j in range(4):
        assert lows[j] <= float(p.factors[:, j].min()) < lows[j] + 0.01
        assert highs[j] - 0.01 < float(p.factors[:, j].max()) <= highs[j]
    assert all(sorted(o) == [0, 1, 2, 3] for o in p.order.tolist())
    assert len({tuple(o) for o in p.order.tolist()}) == 24  # every order of the four adjustments occurs


def test_plan_is_common_random_numbers(retina, plan):
    again = build_plan(retina, num_images=12, seed=0, image_size=SIZE, progress=False)
    assert again.image_indices == plan.image_indices
    assert torch.equal(again.negative, plan.negative)
    assert torch.equal(again.view1, plan.view1) and torch.equal(again.view2, plan.view2)
    assert torch.equal(again.weights, plan.weights)
    other = build_plan(retina, num_images=12, seed=1, image_size=SIZE, progress=False)
    assert other.image_indices != plan.image_indices
    # the views are jittered, differently, and stay in [0, 1]
    assert not torch.equal(plan.view1, plan.view2)
    assert 0.0 < float((plan.view1 - plan.view2).abs().mean()) < 0.1
    assert float(plan.view1.min()) >= 0.0 and float(plan.view1.max()) <= 1.0
    # negatives: a derangement over feeding positions
    assert sorted(plan.negative.tolist()) == list(range(12))
    assert not (plan.negative == torch.arange(12)).any()


def test_batch_jitter_reproduces_one_draw_per_batch(tmp_path):
    # eight copies of one image: with per-batch jitter every image of a batch gets the same view
    array = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    for i in range(8):
        Image.fromarray(array).save(tmp_path / f"{i}.png")
    target = resolve_target(str(tmp_path))
    batch = build_plan(target, num_images=8, seed=0, image_size=32, jitter="batch", jitter_batch_size=4, progress=False)
    assert all(torch.equal(batch.view1[i], batch.view1[0]) for i in range(4))
    assert all(torch.equal(batch.view1[i], batch.view1[4]) for i in range(4, 8))
    assert not torch.equal(batch.view1[0], batch.view1[4])
    per_image = build_plan(target, num_images=8, seed=0, image_size=32, progress=False)
    assert len({per_image.view1[i].sum().item() for i in range(8)}) == 8
    with pytest.raises(ConfigError, match="jitter"):
        build_plan(target, num_images=8, jitter="dataset", progress=False)


def test_folder_target_grayscale_16bit_and_masks_skipped(tmp_path):
    images = tmp_path / "case" / "images"
    masks = tmp_path / "case" / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((50, 70)) * 65535).astype(np.uint16)).save(images / f"g16_{i}.png")
        Image.fromarray((rng.random((50, 70)) * 255).astype(np.uint8), mode="L").save(images / f"g8_{i}.png")
        Image.fromarray(np.zeros((50, 70), np.uint8)).save(masks / f"m_{i}.png")
    target = resolve_target(str(tmp_path / "case"))
    assert target.count == 6  # the masks folder is not a target
    assert target.key == "local:tmp_path0/case" or target.key.endswith("/case")
    p = build_plan(target, num_images=6, seed=0, image_size=32, progress=False)
    assert p.view1.shape == (6, 3, 32, 32)
    assert float(p.view1.max()) <= 1.0 and float(p.view1.max()) > 0.5  # 16-bit scaled into [0, 1], not clipped to 0/1


def test_too_few_images_is_a_clear_error(tmp_path):
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(DataError, match="has 3 image\\(s\\) but the score needs at least 4"):
        build_plan(resolve_target(str(tmp_path)), num_images=16, progress=False)
    with pytest.raises(DataError, match="at least 4"):
        build_plan(resolve_target(BUILTIN_RETINA), num_images=3, progress=False)
    with pytest.raises(DataError, match="neither an existing file or folder nor a Hub dataset id"):
        resolve_target("./no/such/folder")


def test_scores_are_bit_identical_when_rerun_with_the_same_seed(tmp_path, retina, plan):
    folder = make_checkpoint(tmp_path / "a", seed=0)
    first = score_folder(folder, plan, batch_size=5)
    again = score_folder(folder, build_plan(retina, num_images=12, seed=0, image_size=SIZE, progress=False), batch_size=5)
    assert first.ok and first.num_levels == 5
    assert len(first.scores) == 5 * 3 * 5 * 2
    assert first.scores == again.scores  # exact float equality, every configuration
    other_seed = score_folder(folder, build_plan(retina, num_images=12, seed=3, image_size=SIZE, progress=False), batch_size=5)
    assert other_seed.scores[HEADLINE] != first.scores[HEADLINE]
    s = first.scores[HEADLINE]
    assert s.ci_low <= s.score <= s.ci_high


def test_grid_matches_robustness_values_on_the_normalised_views(tmp_path, plan):
    folder = make_checkpoint(tmp_path / "a", seed=1)
    result = score_folder(folder, plan, batch_size=4)
    model = load_scoring_encoder(folder)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert plan.view_draws > 1  # the score is the mean over every draw of views and negatives
    draws = []
    with torch.inference_mode():
        for draw in plan.all_draws():  # later draws are stored as uint8 views
            q = feature_levels(model, (expand(draw.view1) - mean) / std)
            k = feature_levels(model, (expand(draw.view2) - mean) / std)
            draws.append((q, k, draw.negative))
    for name, (distance, margin, level, pooled) in {
        HEADLINE: ("cosine", 0.5, -1, False),
        "inv_pearson_m0.75_L-2_pooled": ("inv_pearson", 0.75, -2, True),
        "l2_m0.25_L-5_flat": ("l2", 0.25, -5, False),
    }.items():
        expected = [robustness_values(q[level], k[level], neg, distance=distance, margin=margin, pooled=pooled).mean()
                    for q, k, neg in draws]
        assert result.scores[name].score == pytest.approx(float(torch.stack(expected).mean()), abs=1e-5)


@pytest.mark.parametrize("arch, levels", [("test_vit", 3), ("test_mambaout", 4)])  # ViT tokens; NHWC stages
def test_transformer_and_channels_last_feature_maps_are_scored(tmp_path, plan, arch, levels):
    folder = make_checkpoint(tmp_path / arch, seed=0, arch=arch)
    result = score_folder(folder, plan, batch_size=6)
    assert result.ok, result.reason
    assert result.num_levels == levels and f"cosine_m0.5_L-{levels}_pooled" in result.scores
    model = load_scoring_encoder(folder)
    with torch.inference_mode():
        maps = feature_levels(model, plan.view1[:2])
    assert [f.shape[1] for f in maps] == model.feature_info.channels()  # channels first, whatever the model emits


def test_bad_checkpoints_are_recorded_failed_not_raised(tmp_path, plan):
    # pickle only: never unpickled
    pickle_only = tmp_path / "pickle"
    make_checkpoint(pickle_only, seed=0)
    (pickle_only / "model.safetensors").rename(pickle_only / "pytorch_model.bin")
    failed = score_folder(pickle_only, plan)
    assert failed.status == "failed" and "pytorch_model.bin" in failed.reason and "never" in failed.reason
    entry = failed.entries(plan)[HEADLINE]
    assert entry["status"] == "failed" and entry["score"] is None and entry["seed"] == 0
    # finite weights whose features overflow to Inf
    huge = make_checkpoint(tmp_path / "huge", seed=0)
    weights = load_file(str(huge / "model.safetensors"))
    first_conv = next(k for k in weights if k.endswith("weight") and weights[k].ndim == 4)
    weights[first_conv] = torch.full_like(weights[first_conv], 3e38)
    save_file(weights, str(huge / "model.safetensors"))
    failed = score_folder(huge, plan)
    assert failed.status == "failed" and "NaN/Inf" in failed.reason
    # an unknown headline level is a configuration error, not a failed revision
    with pytest.raises(ConfigError, match="only 5 feature stages"):
        score_folder(make_checkpoint(tmp_path / "ok", seed=0), plan, headline="cosine_m0.5_L-6_flat")


def test_live_scorer_returns_card_metadata_and_stops_after_patience(tmp_path, retina):
    scorer = LiveScorer(retina, num_images=8, seed=0, patience=2, image_size=SIZE, batch_size=8, device="cpu")
    folders = [make_checkpoint(tmp_path / f"c{e}", seed=e) for e in range(4)]
    metadata = scorer(folders[0], 1, "epoch-0001")
    entries = metadata["robustness"][BUILTIN_RETINA]
    assert entries[HEADLINE]["status"] == "ok" and entries[HEADLINE]["num_images"] == 8
    assert len(entries) < 10 and not scorer.should_stop  # the card keeps the headline; the whole grid is a file
    grid = json.loads((folders[0] / metadata["robustness_targets"][BUILTIN_RETINA]["grid_file"]).read_text())
    assert len(grid["robustness"]) == 150 and grid["robustness"][HEADLINE]["score"] == entries[HEADLINE]["score"]
    assert len(grid["robustness"][HEADLINE]["per_image"]) == 8 and "per_image" not in entries[HEADLINE]
    assert scorer.last_seconds > 0
    # the same checkpoint again is no improvement: after `patience` of them, stop
    scorer(folders[0], 2, "epoch-0002")
    assert not scorer.should_stop
    scorer(folders[0], 3, "epoch-0003")
    assert scorer.should_stop and scorer.best.epoch == 1
    # the card edit writes the same entries, model-index results and a readable section
    from huggingface_hub import ModelCard

    card = scorer.card_edit("tiny")(ModelCard("---\nhf_transfer_seg:\n  training:\n    synthetic: true\n---\n# tiny\n"))
    ours = card.data.hf_transfer_seg
    assert ours["robustness"][BUILTIN_RETINA][HEADLINE]["score"] == entries[HEADLINE]["score"]
    assert card.data.eval_results is None  # a built-in target is no Hub dataset: no model-index entry
    assert "pretrained on synthetic data" in revision_section(ours)
    assert "real fundus photograph" in card.text
    with pytest.raises(ConfigError):
        LiveScorer(retina, num_images=8, patience=0)


def test_pretrain_extension_adds_flags_scores_checkpoints_and_stops(tmp_path):
    import argparse
    from types import SimpleNamespace

    from hf_transfer_seg.cli import build_parser
    from hf_transfer_seg.pretrain.hooks import run_callbacks
    from hf_transfer_seg.scoring import live_cli

    # wired explicitly by the pretrain command
    assert build_parser(["pretrain"]).parse_args(["pretrain", "--score-target", "mni152-tissue"]).score_target == "mni152-tissue"
    parser = argparse.ArgumentParser()
    live_cli.add_arguments(parser)
    assert live_cli.make_callbacks(parser.parse_args([]), SimpleNamespace(repo_id="org/enc")) == []
    with pytest.raises(ConfigError, match="needs --score-target"):
        live_cli.make_callbacks(parser.parse_args(["--early-stop-patience", "2"]), SimpleNamespace(repo_id="org/enc"))
    args = parser.parse_args(
        ["--score-target", "mni152-tissue", "--score-num-images", "6", "--score-image-size", "48", "--early-stop-patience", "1",
         "--score-device", "cpu"]  # fmt: skip
    )
    (callback,) = live_cli.make_callbacks(args, SimpleNamespace(repo_id="org/enc"))
    first = make_checkpoint(tmp_path / "c1", seed=0)
    merged, stop, _ = run_callbacks([callback], first, 1.0, "epoch-0001")
    assert not stop
    assert merged["robustness"]["mni152-tissue"][HEADLINE]["num_images"] == 6
    assert "MNI152" in merged["robustness_targets"]["mni152-tissue"]["description"]
    from huggingface_hub import ModelCard

    (edit,) = merged["card_edit"]
    card = edit(ModelCard("---\nlibrary_name: timm\n---\n# enc\n"))
    assert card.data.eval_results is None and card.data.hf_transfer_seg["robustness"]["mni152-tissue"][HEADLINE]["num_images"] == 6
    assert (first / card.data.hf_transfer_seg["robustness_targets"]["mni152-tissue"]["grid_file"]).is_file()  # pushed with it
    merged, stop, reason = run_callbacks([callback], first, 2.0, "epoch-0002")  # same weights: no improvement
    assert stop and "has not improved for 1 checkpoint" in reason and "epoch-0001" in reason
