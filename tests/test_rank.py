"""`rank` on the local hub: a mixed zoo of tiny random-init encoders (timm CNN, ConvNeXt and ViT; transformers
DINOv2 backbone and ViT hidden states), mixed input sizes, a model that fails to load, a pickle-only repo, re-runs
and concurrent runs that update rows of the results repo, model-card entries, and `report --results-repo`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import torch

from hf_transfer_seg.baselines.label_free import alpha_req, rankme
from hf_transfer_seg.scoring.configs import grid_configs

NUM_IMAGES = 8
TARGET = "mni152-tissue"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIDE = 64  # every model at one size (a fixed-size ViT at the one size it accepts); test_scoring_ties covers the default


# ----------------------------------------------------------------------------------- label-free maths


def test_rankme_is_the_effective_rank():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(64, 16, generator=g, dtype=torch.float64))
    assert rankme(q * 3.0) == pytest.approx(16.0, rel=1e-4)  # equal singular values: full effective rank
    rank_one = torch.randn(64, 1, generator=g) @ torch.randn(1, 16, generator=g)
    assert rankme(rank_one) < 1.01
    with pytest.raises(ValueError):
        rankme(torch.full((4, 4), float("nan")))


def test_alpha_req_recovers_a_power_law():
    g = torch.Generator().manual_seed(1)
    n, d, alpha = 2000, 64, 1.5
    scales = torch.arange(1, d + 1, dtype=torch.float64) ** (-alpha / 2)  # eigenvalues i^-alpha
    z = torch.randn(n, d, generator=g, dtype=torch.float64) * scales
    assert alpha_req(z) == pytest.approx(alpha, abs=0.15)


# --------------------------------------------------------------------------------------------- zoo


def _push(api, repo: str, folder: Path) -> str:
    api.create_repo(repo, exist_ok=True)
    return api.upload_folder(repo_id=repo, folder_path=str(folder)).oid


@pytest.fixture(scope="module")
def zoo(hub_endpoint, tmp_path_factory):
    """Seven repos: five encoders of four families and sizes 32-64 px, a broken one and a pickle-only one."""
    import timm
    from huggingface_hub import HfApi
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model, ViTConfig, ViTImageProcessor, ViTModel

    from hf_transfer_seg.models.checkpoint import save_checkpoint

    api, tmp, ns = HfApi(), tmp_path_factory.mktemp("zoo"), f"zoo-{uuid.uuid4().hex[:6]}"
    torch.manual_seed(0)
    repos = {}
    for name, arch, size, extra in [("resnet", "test_resnet", 64, {}), ("convnext", "test_convnext", 64, {}), ("vit", "test_vit", 48, {"img_size": 48})]:
        data = {"input_size": (3, size, size), "mean": MEAN, "std": STD, "crop_pct": 1.0, "interpolation": "bilinear"}
        folder = save_checkpoint(timm.create_model(arch, **extra), tmp / name, model_args=extra or None, data_config=data)
        repos[name] = f"{ns}/{name}"
        _push(api, repos[name], folder)
    folder = tmp / "dinov2"
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=56, patch_size=14)).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}, image_mean=list(MEAN), image_std=list(STD)).save_pretrained(folder)
    repos["dinov2"] = f"{ns}/dinov2"
    _push(api, repos["dinov2"], folder)
    folder = tmp / "hfvit"
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8), add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    repos["hfvit"] = f"{ns}/hfvit"
    _push(api, repos["hfvit"], folder)
    broken = tmp / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 1000, "pretrained_cfg": {"input_size": [3, 64, 64]}}))
    (broken / "model.safetensors").write_bytes((tmp / "resnet" / "model.safetensors").read_bytes())  # test_resnet weights
    repos["broken"] = f"{ns}/broken"
    _push(api, repos["broken"], broken)
    pickled = tmp / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"architecture": "test_resnet", "num_classes": 1000}))
    (pickled / "pytorch_model.bin").write_bytes(b"never unpickled")
    repos["pickled"] = f"{ns}/pickled"
    _push(api, repos["pickled"], pickled)
    repos["ns"] = ns
    return repos


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "hf_transfer_seg", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def ranked(zoo, tmp_path_factory):
    """One real `rank` process over the whole zoo (plus a repo that does not exist), writing a results repo."""
    cwd = tmp_path_factory.mktemp("rank")
    results_repo = f"{zoo['ns']}/ranking"
    models = [zoo[k] for k in ("resnet", "convnext", "vit", "dinov2", "hfvit", "broken", "pickled")] + [f"{zoo['ns']}/missing"]
    proc = _cli("rank", "--models", *models, "--target", TARGET, "--num-images", str(NUM_IMAGES), "--results-repo", results_repo,
                "--write-cards", "--no-progress", "--image-size", str(SIDE), "--view-draws", "2", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results_repo, proc.stdout


def _headline(df, model):
    rows = df[(df["model"] == model) & (df["predictor"] == "robustness:cosine_m0.5_L-1_flat")]
    assert len(rows) == 1, model
    return rows.iloc[0]


def test_rank_writes_every_model_to_the_results_repo(zoo, ranked):
    from huggingface_hub import HfApi, hf_hub_download

    from hf_transfer_seg.hub.results_repo import read_results

    results_repo, stdout = ranked
    df, _ = read_results(results_repo)
    api = HfApi()
    sizes = {"resnet": SIDE, "convnext": SIDE, "vit": SIDE, "dinov2": SIDE, "hfvit": 32}  # transformers' ViT refuses other sizes
    for name, size in sizes.items():
        row = _headline(df, zoo[name])
        assert row["status"] == "ok", row["reason"]
        assert int(row["input_size"]) == size
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
        mine = df[df["model"] == zoo[name]]
        assert {"rankme", "alpha_req_gap", "logme", "linear_probe_dice"} <= set(mine["predictor"]), name
        per_level = len(grid_configs(1))
        grid = int(mine["predictor"].str.startswith("robustness:").sum())
        assert grid >= per_level and grid % per_level == 0  # the whole grid of every level
        (sha,) = set(mine["sha"])  # the commit ranked: the upload (--write-cards committed the card after it)
        commits = [c.commit_id for c in api.list_repo_commits(zoo[name])]
        assert sha in commits and sha != commits[0]
    assert set(df[df["family"] == "transformers"]["model"]) == {zoo["dinov2"], zoo["hfvit"]}
    assert sorted(_headline(df, zoo[k])["tie"] for k in sizes).count("best") == 1
    broken = _headline(df, zoo["broken"])
    assert broken["status"] == "failed" and "resnet18" in broken["reason"] and "/snapshots/" not in broken["reason"]
    pickled = _headline(df, zoo["pickled"])
    assert pickled["status"] == "skipped" and "pytorch_model.bin" in pickled["reason"]
    missing = _headline(df, f"{zoo['ns']}/missing")
    assert missing["status"] == "failed" and "not found" in missing["reason"]
    assert "Input sizes differ between models (32, 64 px)" in stdout and "accepts only the input size its config" in stdout
    readme = Path(hf_hub_download(results_repo, "README.md", repo_type="dataset")).read_text()
    assert "Ranking by the score" in readme and zoo["dinov2"] in readme and "skipped: only pickle weights" in readme
    plot = Path(hf_hub_download(results_repo, f"plots/rank_{TARGET}.png", repo_type="dataset")).read_bytes()
    assert plot[:4] == b"\x89PNG"
    # the pickle file was never downloaded
    cache = Path(os.environ["HF_HOME"]) / "hub"
    assert not list(cache.rglob("pytorch_model.bin"))


def test_write_cards_records_the_ranking_in_writable_model_cards(zoo, ranked):
    from hf_transfer_seg.cards.data import get_namespace
    from hf_transfer_seg.hub import read_card

    card, _ = read_card(zoo["dinov2"], "main")
    entry = get_namespace(card.data, "model_ranking")[TARGET]
    assert entry["results_repo"] == ranked[0] and entry["input_size"] == SIDE and entry["num_images"] == NUM_IMAGES
    assert entry["rank"] >= 1 and math.isfinite(entry["rankme"])
    assert "## Encoder ranking (hf-transfer-seg rank)" in card.text and f"| {TARGET} |" in card.text


def test_reruns_and_concurrent_runs_update_rows_without_losing_others(zoo, ranked):
    from hf_transfer_seg.hub.results_repo import read_results, upsert_results
    from hf_transfer_seg.scoring.rank import run_rank
    from hf_transfer_seg.scoring.rank_results import outcome_rows, render

    results_repo, _ = ranked
    before, _ = read_results(results_repo)
    outcomes = {}
    for name in ("resnet", "vit"):
        outcomes[name] = outcome_rows(run_rank([zoo[name]], TARGET, num_images=NUM_IMAGES, seed=1, use_masks=False, progress=False))
    errors = []

    def write(rows):
        try:
            upsert_results(results_repo, rows, render=render("cosine_m0.5_L-1_flat"))
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(rows,)) for rows in outcomes.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    after, _ = read_results(results_repo)
    for name in ("resnet", "vit"):
        row = _headline(after, zoo[name])
        assert int(row["seed"]) == 1 and row["updated"] >= _headline(before, zoo[name])["updated"]
        # the label-aware rows of the first run stay (this run had none): rows are replaced, never dropped
        assert "logme" in set(after[after["model"] == zoo[name]]["predictor"])
    untouched = _headline(after, zoo["dinov2"])
    assert int(untouched["seed"]) == 0 and untouched["value"] == pytest.approx(_headline(before, zoo["dinov2"])["value"])
    assert len(after) == len(before)


def record_downstream_dice(zoo: dict, dice: dict[str, float]) -> None:
    """Write the Dice `finetune` records into each zoo encoder's card (``dice``: zoo name -> Dice)."""
    from huggingface_hub import ModelCard

    from hf_transfer_seg.cards.data import get_namespace, set_namespace
    from hf_transfer_seg.hub import update_card

    for name, value in dice.items():

        def edit(card: ModelCard, v=value) -> ModelCard:
            down = get_namespace(card.data, "downstream", {}) or {}
            down[TARGET] = {"dice_mean": v, "synthetic": False}
            set_namespace(card.data, "downstream", down)
            return card

        update_card(zoo[name], "main", edit, commit_message="downstream Dice")


def test_report_reads_the_results_repo_and_tests_the_ranking(zoo, ranked, tmp_path):
    from hf_transfer_seg.cli import main
    from hf_transfer_seg.errors import DataError
    from hf_transfer_seg.report.results import load_results_table

    results_repo, _ = ranked
    with pytest.raises(DataError, match="no model in the results repo has a downstream Dice"):
        load_results_table(results_repo, TARGET)
    dice = {"convnext": 0.8, "vit": 0.7, "dinov2": 0.75, "hfvit": 0.6}
    record_downstream_dice(zoo, dice)
    out = tmp_path / "report"
    assert main(["report", "--results-repo", results_repo, "--target", TARGET, "--output", str(out), "--bootstrap", "200"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_rows"] == len(dice)
    predictors = report["predictors"]
    assert predictors["alpha_req_gap"]["direction"] == "lower"  # the direction comes from results.csv
    assert predictors["rankme"]["direction"] == "higher"
    assert predictors["robustness:cosine_m0.5_L-1_flat"]["direction"] == "lower"
    series = predictors["rankme"]["series"][f"{TARGET} (models)"]
    assert series["n"] == len(dice) and series["spearman"] is not None


def test_space_leaderboard_shows_the_results_repo(zoo, ranked):
    from hf_transfer_seg.space.ranking import HEADERS, load_ranking

    notices: list[str] = []
    view = load_ranking(ranked[0], TARGET, notices)
    assert not notices and view is not None and view.target == TARGET
    assert all(len(row) == len(HEADERS) for row in view.rows)
    assert [row[0] for row in view.rows[:5]] == [1, 2, 3, 4, 5]  # the five scored models first, ranked
    assert {row[1] for row in view.rows} >= {zoo["pickled"], zoo["broken"]}
    assert view.plot_path is not None and view.plot_path.read_bytes()[:4] == b"\x89PNG"
    assert load_ranking(f"{zoo['ns']}/no-such-results", None, notices) is None and "could not be read" in notices[0]
