"""Ties that hold and rankings that refuse degenerate settings (issue 26), with real tiny timm models and real images.

- the tie test resamples units (images, volumes, or blocks of neighbouring slices of one volume) and the draws of
  views; the first draw of a multi-draw plan is the single-draw plan bit for bit;
- `score` and `rank` choose one resolution from the target, never from a model's pretraining size;
- a model whose deepest map is below 2x2 is flagged and never named best; a probe at the trivial baseline for every
  model names no best; the output says when nothing separates the models;
- nothing pushed (cards, grid files, results.csv, commit messages) holds the local path of the target folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from hf_transfer_seg.cards.dataset_ref import hide_local_paths, local_name
from hf_transfer_seg.cards.schema import VIEW_DRAWS
from hf_transfer_seg.cards.render import replace_section
from hf_transfer_seg.data.registry import resolve_target
from hf_transfer_seg.scoring.plan import MAX_SIDE, MIN_SIDE, build_plan, default_image_size
from hf_transfer_seg.scoring.ties import paired_difference, resampling_units

ROOT = Path(__file__).resolve().parents[1]


def _images(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    for i in range(n):
        base = (np.sin(xx / (3 + i)) + np.cos(yy / (5 + i % 4))) * 60 + 128
        rgb = np.stack([base, base[::-1], base[:, ::-1]], -1) + rng.normal(0, 12, (*size, 3))
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "hf_transfer_seg", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


# ------------------------------------------------------------------------------------------- the tie test


def test_slices_of_one_volume_are_resampled_in_blocks_and_volumes_as_units():
    units, text = resampling_units([("brain", z) for z in range(59)], 59)
    assert max(units) + 1 == 15 and "blocks of neighbouring slices" in text  # ceil(59 ** (1/3)) = 4 slices a block
    assert units[:8] == [0, 0, 0, 0, 1, 1, 1, 1]
    shuffled = [("brain", z) for z in (5, 0, 1, 4)]  # block membership follows the slice index, not the order
    assert resampling_units(shuffled, 4)[0] == [1, 0, 0, 1]
    units, text = resampling_units([(f"case{i % 10}", i) for i in range(40)], 40)
    assert len(set(units)) == 10 and units[0] == units[10] and "10 volumes" in text
    assert resampling_units(None, 5) == ([0, 1, 2, 3, 4], "images")


def test_correlated_slices_and_view_noise_widen_the_interval():
    rng = np.random.default_rng(0)
    volume_shift = np.repeat([-1.2, 1.5, -0.4, 0.9, -1.0, 1.3], 10)  # 6 volumes of 10 slices that move together
    d = 0.3 + volume_shift + rng.normal(0, 0.1, 60)
    naive = paired_difference(d, np.zeros(60))
    clustered = paired_difference(d, np.zeros(60), units=np.repeat(np.arange(6), 10))
    assert naive["ci_low"] > 0  # as if 60 independent images: "not tied"
    assert clustered["ci_low"] < 0 < clustered["ci_high"]  # 6 volumes: the data cannot tell
    draws = np.stack([d + rng.normal(0, 2.0, 60) for _ in range(3)])  # views that move each image's value a lot
    one = paired_difference(draws[0], np.zeros(60))
    three = paired_difference(draws, np.zeros((3, 60)))
    assert three["mean"] == pytest.approx(draws.mean())
    assert (three["ci_high"] - three["ci_low"]) < (one["ci_high"] - one["ci_low"])  # averaging draws helps
    with pytest.raises(ValueError):
        paired_difference(draws, np.zeros((2, 60)))


def test_multi_draw_plan_keeps_the_first_draw_and_draws_new_views_and_negatives(tmp_path):
    target = resolve_target(str(_images(tmp_path / "imgs", 10, (80, 96))))
    one = build_plan(target, num_images=10, seed=3, image_size=64, progress=False, view_draws=1)
    three = build_plan(target, num_images=10, seed=3, image_size=64, progress=False, view_draws=3)
    assert three.view_draws == 3 and one.view_draws == 1
    assert torch.equal(one.view1, three.view1) and torch.equal(one.negative, three.negative)
    assert one.image_indices == three.image_indices
    for draw in three.draws:
        assert sorted(draw.image_indices) == sorted(three.image_indices)
        assert not torch.equal(draw.view1, three.view1)
        assert [three.image_indices[j] for j in draw.common.tolist()] == draw.image_indices  # the mapping back
    assert three.key() != one.key() and "draws=3" in three.key()
    assert three.facts()["view_draws"] == 3 and "view_draws" not in one.facts()


def test_per_image_values_of_every_draw_are_aligned_to_one_image_order(tmp_path):
    from hf_transfer_seg.scoring import HEADLINE
    from hf_transfer_seg.scoring.configs import parse_config
    from hf_transfer_seg.scoring.features import pair_distances, plan_distances

    target = resolve_target(str(_images(tmp_path / "imgs", 8, (64, 64))))
    plan = build_plan(target, num_images=8, seed=0, image_size=64, progress=False, view_draws=2)
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", features_only=True).eval()
    config = parse_config(HEADLINE)
    drawn = plan_distances(model, plan).draw_values(config)
    assert drawn.shape == (2, 8)
    first = pair_distances(model, plan).values(config)
    second = pair_distances(model, plan.draws[0]).values(config)
    assert torch.allclose(drawn[0], first)
    aligned = torch.empty_like(second)
    aligned[plan.draws[0].common] = second
    assert torch.allclose(drawn[1], aligned)


# ------------------------------------------------------------------------------------------ the resolution


@pytest.mark.parametrize("size, expected", [((40, 50), MIN_SIDE), ((130, 170), 128), ((600, 520), MAX_SIDE)])
def test_default_resolution_comes_from_the_target(tmp_path, size, expected):
    target = resolve_target(str(_images(tmp_path / "imgs", 5, size)))
    side, why = default_image_size(target)
    assert side == expected and f"median shorter side {min(size)} px" in why
    assert build_plan(target, num_images=5, progress=False, view_draws=1).image_size == expected


def test_drive_is_scored_at_224_px(shared_dir):
    drive = shared_dir / "data" / "drive-train" / "images"
    if not drive.is_dir():
        pytest.skip(f"DRIVE training images not found at {drive}")
    assert default_image_size(resolve_target(str(drive)))[0] == 224


# ---------------------------------------------------------------------------------------------- privacy


def test_local_paths_become_names_with_a_short_hash(tmp_path):
    folder = tmp_path / "membrane" / "train"
    folder.mkdir(parents=True)
    name = local_name(folder)
    assert name.startswith("train#") and len(name) == len("train#") + 6 and str(tmp_path) not in name
    assert local_name(tmp_path / "other" / "train") != name  # two folders of one name stay apart
    text = hide_local_paths(f"OSError: cannot read {folder}/img01.png (see ~/logs/x.txt); repo owner/name, https://h.org/a/b")
    assert str(tmp_path) not in text and "img01.png#" in text and "owner/name" in text and "https://h.org/a/b" in text


def test_a_section_with_its_own_heading_replaces_the_template_heading():
    text = "# m\n\n## Robustness\n\n<!-- hf-transfer-seg:robustness -->\nNot scored yet.\n<!-- /hf-transfer-seg:robustness -->\n\n## Downstream\n"
    once = replace_section(text, "robustness", "## Robustness score\n\nbody")
    twice = replace_section(once, "robustness", "## Robustness score\n\nbody 2")
    for card in (once, twice):
        assert "## Robustness\n" not in card and card.count("## Robustness score") == 1 and "## Downstream" in card
    assert "## Robustness\n" in replace_section(text, "robustness", "no heading of its own")


@pytest.fixture(scope="module")
def pushed_zoo(hub_endpoint, tmp_path_factory):
    """Two tiny timm encoders pushed to the local hub and a private-looking local target folder."""
    from huggingface_hub import HfApi

    from hf_transfer_seg.models.checkpoint import save_checkpoint

    tmp = tmp_path_factory.mktemp("privacy")
    api, ns = HfApi(), f"ties-{uuid.uuid4().hex[:6]}"
    repos = []
    for i in range(2):
        torch.manual_seed(i)
        folder = save_checkpoint(timm.create_model("test_resnet"), tmp / f"m{i}",
                                 data_config={"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.25,) * 3})
        repo = f"{ns}/enc{i}"
        api.create_repo(repo)
        api.upload_folder(repo_id=repo, folder_path=str(folder))
        repos.append(repo)
    target = _images(tmp / "hospital-x" / "patients", 6, (100, 120))
    return repos, target, ns, tmp


def _pushed_text(repo: str, repo_type: str = "model") -> str:
    """Every file of every branch of ``repo`` and its commit messages, as one text."""
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    refs = api.list_repo_refs(repo, repo_type=repo_type)
    parts = []
    for branch in refs.branches:
        for path in api.list_repo_files(repo, revision=branch.ref, repo_type=repo_type):
            raw = Path(hf_hub_download(repo, path, revision=branch.ref, repo_type=repo_type)).read_bytes()
            parts.append(raw.decode("utf-8", "replace"))
        parts += [f"{c.title}\n{c.message}" for c in api.list_repo_commits(repo, revision=branch.ref, repo_type=repo_type)]
    return "\n".join(parts)


def test_rank_at_the_target_size_writes_readable_cards_and_no_local_path(pushed_zoo, tmp_path):
    repos, target, ns, tmp = pushed_zoo
    results = f"{ns}/ranking"
    proc = _cli("rank", "--models", *repos, "--target", str(target), "--num-images", "6", "--results-repo", results,
                "--write-cards", "--no-progress", "--device", "cpu", "--no-masks", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resolution 96 px: chosen from the target: its median shorter side 100 px" in proc.stdout
    assert "Ties: paired bootstrap" in proc.stdout and f"the {VIEW_DRAWS} draws of views" in proc.stdout
    from hf_transfer_seg.hub.results_repo import read_results

    df, _ = read_results(results)
    head = df[df["predictor"] == "robustness:cosine_m0.5_L-1_flat"]
    assert set(head["input_size"].astype(int)) == {96}  # not the 32 px the models' configs record
    card = _pushed_text(repos[0])
    assert "## Encoder ranking (hf-transfer-seg rank)" in card and "| rank |" in card
    body_yaml = card.split("---")[1]
    floats = [tok for tok in body_yaml.replace(",", " ").split() if tok.replace(".", "", 1).replace("-", "", 1).isdigit() and "." in tok]
    assert floats and max(len(t.split(".")[1]) for t in floats) <= 8  # no 17-digit floats in the card's YAML
    for text in (card, _pushed_text(repos[1]), _pushed_text(results, "dataset")):
        assert str(tmp) not in text and "hospital-x/patients" not in text.replace("local:hospital-x/patients", "")


def test_a_deepest_map_below_2x2_is_flagged_and_never_best(pushed_zoo, tmp_path):
    repos, target, _, _ = pushed_zoo
    proc = _cli("rank", "--models", *repos, "--target", "mni152-tissue", "--num-images", "8", "--image-size", "32",
                "--view-draws", "1", "--no-progress", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Not ranked, never named best, degenerate" in out and "1x1 at 32 px" in out
    assert "Ranking by the score (best first): none: every scored model is flagged below" in out
    assert "Linear-probe Dice" not in out or "trivial baseline" in out
    assert "best by" not in out


def test_probe_at_the_trivial_baseline_names_no_best():
    import pandas as pd

    from hf_transfer_seg.scoring.rank_results import TRIVIAL_PROBE, disagreement_lines, separation_line, trivial_probe_line

    table = pd.DataFrame({"status": ["ok", "ok", "ok"], "value": [0.10, 0.11, 0.12], "tie": ["best", "tied", "tied"],
                          "linear_probe_dice": [0.0, 0.01, 0.0], TRIVIAL_PROBE: [0.0, 0.0, 0.0],
                          "rankme": [3.0, 3.0, 3.0], "alpha_req_gap": [0.2, 0.2, 0.2], "logme": [1.0, 1.0, 1.0]},
                         index=["a", "b", "c"])
    assert "trivial baseline" in trivial_probe_line(table)
    assert disagreement_lines(table) == []  # the probe's 0.01 does not make "b" a best
    assert separation_line(table).startswith("No predictor separates the models")
    table.loc["c", "tie"] = "worse"
    assert separation_line(table) is None and trivial_probe_line(table.assign(linear_probe_dice=[0.5, 0.6, 0.7])) is None


def test_score_records_no_local_path_and_states_resolution_and_ties(hub_endpoint, repo_id, tmp_path):
    from test_scoring_hub import push_checkpoints

    push_checkpoints(repo_id, tmp_path, epochs=(1, 2))
    target = _images(tmp_path / "clinic-y" / "scans", 6, (70, 90))
    proc = _cli("score", "--repo-id", repo_id, "--target", str(target), "--num-images", "6", "--no-progress",
                "--device", "cpu", "--view-draws", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resolution 64 px: chosen from the target: its median shorter side 70 px" in proc.stdout
    assert "2 draws of views and negatives" in proc.stdout
    text = _pushed_text(repo_id)
    assert str(tmp_path) not in text
    assert "## Robustness\n" not in text  # the section's own heading replaced the template's
    from huggingface_hub import hf_hub_download

    from hf_transfer_seg.scoring.card import per_image_path

    key = resolve_target(str(target)).key
    values = json.loads(Path(hf_hub_download(repo_id, per_image_path(key))).read_text())["epoch-0001"]
    assert len(values["draws"]) == 2 and len(values["draws"][0]) == 6 and values["units"] == list(range(6))


def test_a_labelled_folder_target_records_its_name_and_hash_not_its_path(tmp_path):
    from hf_transfer_seg.data.registry import load_target

    root = tmp_path / "membrane" / "train"
    _images(root / "images", 4, (48, 48))
    (root / "masks").mkdir()
    for i in range(4):
        mask = np.zeros((48, 48), np.uint8)
        mask[10:30, 5 + i : 25 + i] = 255
        Image.fromarray(mask).save(root / "masks" / f"img{i:02d}.png")
    info = load_target(str(root)).info()
    assert info["source"] == f"folder:{local_name(root)}" and info["source"].startswith("folder:train#")
    assert str(tmp_path) not in json.dumps(info)
