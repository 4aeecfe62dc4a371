"""Pretraining pieces on their own: options, recipes, datasets, cards, callbacks, the publisher's bookkeeping."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from PIL import Image

from hf_transfer_seg.cards import get_namespace, get_section_text, set_namespace
from hf_transfer_seg.data.classification import (
    EpochSampler,
    SyntheticClassification,
    build_classification_data,
    collate,
)
from hf_transfer_seg.errors import ConfigError, DataError
from hf_transfer_seg.pretrain import card as cards
from hf_transfer_seg.pretrain import recipes
from hf_transfer_seg.pretrain.config import PAPER_SCHEDULE, build_config, micro_batch
from hf_transfer_seg.pretrain.hooks import run_callbacks
from hf_transfer_seg.pretrain.publisher import list_pending, push_one, read_ledger, stage_checkpoint
from hf_transfer_seg.pretrain.state import TrainerState

TINY = {"encoder": "test_resnet", "image_size": 32}


# ------------------------------------------------------------------------------------------------ options


def test_defaults_follow_the_paper():
    config = build_config({"encoder": "resnet50"})
    assert config.schedule == [float(e) for e in PAPER_SCHEDULE]
    assert config.peak_lr == pytest.approx(4e-3 * 256 / 4096)
    assert config.warmup == 20 and config.epochs == 300
    assert config.mean_std == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # paper: /255 only
    assert config.drop_path_rate == 0.0 and build_config({"recipe": "advanced"}).drop_path_rate == 0.1


def test_short_runs_cap_the_schedule_keep_the_last_epoch_and_scale_warmup():
    config = build_config({**TINY, "epochs": 7})
    assert config.schedule == [1.0, 2.0, 5.0, 7.0]
    assert config.warmup == pytest.approx(7 / 15)
    frac = build_config({**TINY, "epochs": 1.5, "checkpoint_epochs": "1.5,0.5,1"})
    assert frac.schedule == [0.5, 1.0, 1.5]
    with pytest.raises(ConfigError, match="after the last epoch"):
        build_config({**TINY, "epochs": 1, "checkpoint_epochs": "0.5,2"})
    with pytest.raises(ConfigError, match="not a number"):
        build_config({**TINY, "checkpoint_epochs": "1,two"})


def test_yaml_recipe_then_flags(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("encoder: test_convnext\nbatch-size: 64\nrecipe: advanced\ncheckpoint_epochs: [1, 2]\nepochs: 2\n")
    config = build_config({"batch_size": 32}, recipe)
    assert (config.encoder, config.batch_size, config.recipe, config.schedule) == ("test_convnext", 32, "advanced", [1.0, 2.0])
    recipe.write_text("encoder: test_resnet\nbatch_sise: 3\n")
    with pytest.raises(ConfigError, match="did you mean batch_size"):
        build_config({}, recipe)


def test_unknown_encoder_lists_close_names():
    with pytest.raises(ConfigError) as err:
        build_config({"encoder": "resnet5O"})
    assert "resnet50" in str(err.value) and "Close names" in str(err.value)


def test_global_batch_must_split_over_processes_and_accumulation():
    config = build_config({**TINY, "batch_size": 48, "grad_accum": 2})
    assert micro_batch(config, 4) == 6
    with pytest.raises(ConfigError, match="divisible"):
        micro_batch(config, 5)
    with pytest.raises(ConfigError, match="even per-process batch"):
        micro_batch(build_config({**TINY, "batch_size": 6, "recipe": "advanced"}), 2)


# ------------------------------------------------------------------------------------------------ recipes


def test_recipes_are_built_from_timm_pieces():
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    simple, advanced = build_config(TINY), build_config({**TINY, "recipe": "advanced"})
    names = lambda tf: [type(t).__name__ for t in tf.transforms]  # noqa: E731
    assert "RandomResizedCropAndInterpolation" in names(recipes.train_transform(simple))
    assert not any(isinstance(t, (RandAugment, RandomErasing)) for t in recipes.train_transform(simple).transforms)
    assert {RandAugment, RandomErasing} <= {type(t) for t in recipes.train_transform(advanced).transforms}
    crop = next(t for t in recipes.train_transform(simple).transforms if "Crop" in type(t).__name__)
    assert tuple(crop.scale) == (0.8, 1.0)
    assert recipes.mixup(simple, 10) is None
    mix = recipes.mixup(advanced, 10)
    assert (mix.mixup_alpha, mix.cutmix_alpha, mix.mix_prob, mix.switch_prob, mix.label_smoothing) == (1.0, 1.0, 0.8, 0.5, 0.1)
    assert isinstance(recipes.criterion(simple), LabelSmoothingCrossEntropy)
    assert isinstance(recipes.criterion(advanced), SoftTargetCrossEntropy)
    model = recipes.create_model(advanced, 10)
    assert any(getattr(m, "drop_prob", 0) > 0 for m in model.modules())  # stochastic depth on
    opt = recipes.optimizer(simple, model)
    assert type(opt).__name__ == "AdamW" and opt.defaults["betas"] == (0.9, 0.999)
    assert max(g["weight_decay"] for g in opt.param_groups) == 0.05


def test_lr_warms_up_linearly_then_follows_a_cosine_to_min_lr():
    config = build_config({**TINY, "epochs": 10, "warmup_epochs": 2, "lr": 1e-2, "checkpoint_epochs": "10"})
    model = torch.nn.Linear(2, 2)
    opt = recipes.optimizer(config, model)
    plan = recipes.plan_schedule(config, updates_per_epoch=10)
    assert (plan.total_steps, plan.warmup_steps, plan.checkpoint_steps) == (100, 20, {100: 10.0})
    sched = recipes.scheduler(config, opt, plan)
    lrs = []
    for step in range(101):
        sched.step_update(step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-6)
    assert lrs[10] == pytest.approx(1e-6 + (1e-2 - 1e-6) * 10 / 20)
    assert lrs[20] == pytest.approx(1e-2)
    assert lrs[60] == pytest.approx(1e-6 + (1e-2 - 1e-6) * 0.5, rel=1e-3)  # half-way through the cosine
    assert lrs[100] == pytest.approx(1e-6)
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:]))


def test_checkpoints_on_one_step_are_refused():
    config = build_config({**TINY, "epochs": 1, "checkpoint_epochs": "0.5,0.6"})
    with pytest.raises(ConfigError, match="same optimizer step"):
        recipes.plan_schedule(config, updates_per_epoch=2)


# ------------------------------------------------------------------------------------------------ data


def test_synthetic_set_is_deterministic_labelled_and_balanced():
    a = SyntheticClassification(20, 4, 16, seed=3)
    b = SyntheticClassification(20, 4, 16, seed=3)
    img_a, label, skipped = a[5]
    assert np.array_equal(np.asarray(img_a), np.asarray(b[5][0])) and label == 1 and skipped == -1
    assert not np.array_equal(np.asarray(img_a), np.asarray(SyntheticClassification(20, 4, 16, seed=4)[5][0]))
    data = build_classification_data(
        "synthetic", image_size=16, train_transform=None, val_transform=None, num_classes=4, train_size=20, val_size=8
    )
    assert data.synthetic and data.num_classes == 4 and len(data.train) == 20 and len(data.val) == 8


def test_augmentation_depends_on_seed_epoch_index_only():
    config = build_config(TINY)
    ds = SyntheticClassification(8, 2, 32, transform=recipes.train_transform(config), seed=0)
    first = ds[3][0]
    torch.manual_seed(123)  # the caller's random state does not matter...
    assert torch.equal(first, ds[3][0])
    ds.set_epoch(1)  # ...the epoch does
    assert not torch.equal(first, ds[3][0])
    # loader workers (which only seed) give exactly the images of in-process loading (which also restores)
    in_process = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=collate)))[0]
    in_workers = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)))[0]
    assert torch.equal(in_process[:4], in_workers)
    sampler = EpochSampler(10, seed=1)
    order0 = list(sampler)
    sampler.set_epoch(1)
    assert sorted(order0) == list(range(10)) and list(sampler) != order0


def _image_folder(root: Path, classes=("cat", "dog"), per_class=3, size=20) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return root


def test_folder_dataset_skips_and_counts_a_corrupt_jpeg(tmp_path, caplog):
    root = _image_folder(tmp_path / "data")
    good = (root / "train" / "cat" / "0.jpg").read_bytes()
    (root / "train" / "cat" / "1.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (root / "train" / "dog" / "x.jpeg").write_bytes(b"not an image at all")
    config = build_config(TINY)
    data = build_classification_data(
        str(root), image_size=32, train_transform=recipes.train_transform(config), val_transform=None
    )
    assert data.class_names == ["cat", "dog"] and not data.synthetic and len(data.train) == 7
    loader = torch.utils.data.DataLoader(data.train, batch_size=7, collate_fn=collate)
    images, labels, skipped = next(iter(loader))
    assert images.shape == (7, 3, 32, 32)  # the batch keeps its size: bad images are replaced
    bad = {data.train.files[i][0] for i in skipped}
    assert {Path(p).name for p in bad} == {"1.jpg", "x.jpeg"}
    assert "skipping unreadable image" in caplog.text


def test_folder_layout_errors_say_what_to_do(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="no train/ subfolder"):
        build_classification_data(str(tmp_path / "flat"), image_size=8, train_transform=None, val_transform=None)
    (tmp_path / "loose" / "train").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "loose" / "train" / "a.png")
    with pytest.raises(DataError, match="folder named after its class"):
        build_classification_data(str(tmp_path / "loose"), image_size=8, train_transform=None, val_transform=None)


def test_saved_dataset_without_label_column_is_refused_and_named_columns_work(tmp_path):
    import datasets

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    unlabelled = datasets.Dataset.from_dict({"image": [{"bytes": buf.getvalue(), "path": None}] * 4, "caption": ["x"] * 4}, features=features)
    unlabelled.save_to_disk(str(tmp_path / "unlabelled"))
    with pytest.raises(DataError, match="no label column.*--label-column"):
        build_classification_data(str(tmp_path / "unlabelled"), image_size=8, train_transform=None, val_transform=None)
    features = datasets.Features({"img": datasets.Image(), "kind": datasets.ClassLabel(names=["a", "b"])})
    labelled = datasets.Dataset.from_dict({"img": [{"bytes": buf.getvalue(), "path": None}] * 4, "kind": [0, 1, 0, 1]}, features=features)
    datasets.DatasetDict(train=labelled, validation=labelled.select(range(2))).save_to_disk(str(tmp_path / "labelled"))
    data = build_classification_data(str(tmp_path / "labelled"), image_size=8, train_transform=None, val_transform=None)
    assert (data.num_classes, data.class_names, len(data.train), len(data.val)) == (2, ["a", "b"], 4, 2)
    image, label, skipped = data.train[1]
    assert image.size == (8, 8) and label == 1 and skipped == -1
    with pytest.raises(DataError, match="no column 'nope'"):
        build_classification_data(
            str(tmp_path / "labelled"), image_size=8, train_transform=None, val_transform=None, label_column="nope"
        )


# ------------------------------------------------------------------------------------------------ cards and hooks


def _facts(**over) -> dict:
    facts = {
        "epoch": 0.5, "global_step": 4, "images_seen": 32, "recipe": "simple", "imagenet_top1": 12.5,
        "imagenet_top5": 50.0, "train_loss": 2.3, "wall_clock_hours": 0.01, "code_version": "x", "dataset": "synthetic",
        "dataset_kind": "synthetic", "synthetic": True, "skipped_images": 0, "encoder": "test_resnet",
        "image_size": 32, "normalize": "none", "mean": [0, 0, 0], "std": [1, 1, 1],
    }
    facts.update(over)
    return facts


def test_revision_card_carries_the_schema():
    card = cards.revision_card("org/enc", "epoch-0000.5", _facts())
    data = card.data
    assert data.library_name == "timm" and "synthetic-data" in data.tags
    assert get_namespace(data, "training")["global_step"] == 4
    assert data.eval_results is None  # synthetic data has no Hub dataset id: top-1 stays in `training`, no model-index
    # trained on the built-in synthetic set only: the license of the code that generates it, stated as such
    assert data.license == "apache-2.0" and "built-in training data" in get_section_text(card.text, "license")
    assert "Synthetic data" in card.text and "hf-hub:org/enc@epoch-0000.5" in card.text
    assert "| Optimizer steps | 4 |" in get_section_text(card.text, "training")
    real = cards.revision_card("org/enc", "epoch-0001", _facts(synthetic=False, dataset="org/imagenet", dataset_kind="hub"))
    assert (real.data.license, real.data.license_name) == ("other", "not-set")  # unknown data: the author must say
    digits = cards.revision_card("org/enc", "epoch-0001", _facts(synthetic=False, dataset="digits", dataset_kind="bundled"))
    assert digits.data.license == "bsd-3-clause" and "scikit-learn" in get_section_text(digits.text, "license")
    folder = cards.revision_card("org/enc", "epoch-0001", _facts(synthetic=False, dataset="digits", dataset_kind="folder"))
    assert folder.data.license == "other"  # a local folder that happens to be named digits is not the built-in set
    assert "Real data" in real.text and real.data.datasets == ["org/imagenet"]
    metrics = {(r.metric_type, r.metric_name, r.dataset_type): r.metric_value for r in real.data.eval_results}
    assert metrics == {("accuracy", "top-1", "org/imagenet"): 12.5, ("accuracy", "top-5", "org/imagenet"): 50.0}
    # reloading the saved text gives the same metadata
    again = ModelCard(str(card))
    assert get_namespace(again.data, "training") == get_namespace(data, "training")


def test_callbacks_merge_into_the_card_and_can_stop():
    def score(folder, epoch, revision):
        return {"robustness": {"retina": {"cfg": {"score": 0.5}}}, "eval_results": [
            EvalResult(task_type="image-feature-extraction", dataset_type="retina", dataset_name="retina",
                       metric_type="robustness-score", metric_value=0.5, metric_config="cfg")],
            "sections": {"robustness": "score 0.5"}}

    def stopper(folder, epoch, revision):
        return {"stop": epoch >= 1, "stop_reason": "no improvement"}

    extra, stop, reason = run_callbacks([score, stopper], Path("."), 0.5, "epoch-0000.5")
    assert not stop and reason is None
    card = cards.apply_extra(cards.revision_card(None, "epoch-0000.5", _facts()), extra)
    assert get_namespace(card.data, "robustness") == {"retina": {"cfg": {"score": 0.5}}}
    assert get_namespace(card.data, "training")["epoch"] == 0.5
    assert get_section_text(card.text, "robustness") == "score 0.5"
    assert {r.metric_type for r in card.data.eval_results} == {"robustness-score"}  # no top-1: synthetic data
    assert run_callbacks([stopper], Path("."), 1.0, "epoch-0001")[1:] == (True, "no improvement")


def test_summary_card_upserts_rows_and_keeps_other_tools_keys():
    card = ModelCard("---\n{}\n---\n")
    card = cards.edit_summary(card, cards.summary_row("epoch-0002", "b" * 40, _facts(epoch=2.0)), _facts(), "org/enc", latest=True)
    set_namespace(card.data, "robustness_summary", {"retina": {"best_revision": "epoch-0002"}})
    card = ModelCard(str(card))
    card = cards.edit_summary(card, cards.summary_row("epoch-0000.5", "a" * 40, _facts()), _facts(), "org/enc", latest=False)
    card = cards.edit_summary(card, cards.summary_row("epoch-0002", "c" * 40, _facts(epoch=2.0)), _facts(), "org/enc", latest=True)
    rows = get_namespace(card.data, "checkpoints")
    assert [(r["revision"], r["sha"][0]) for r in rows] == [("epoch-0000.5", "a"), ("epoch-0002", "c")]
    assert get_namespace(card.data, "robustness_summary") == {"retina": {"best_revision": "epoch-0002"}}
    assert get_namespace(card.data, "latest_revision") == "epoch-0002"
    table = get_section_text(card.text, "checkpoints")
    assert table.count("| [`epoch-") == 2 and "`main` holds the weights of `epoch-0002`" in table
    assert "Synthetic data" in card.text


def test_staging_is_atomic_and_a_confirmed_revision_is_not_pushed_again(tmp_path):
    out = tmp_path / "run"

    def build(folder: Path) -> None:
        (folder / "config.json").write_text("{}")

    stage_checkpoint(out, "epoch-0002", build)
    stage_checkpoint(out, "epoch-0000.5", build)
    assert list_pending(out) == ["epoch-0000.5", "epoch-0002"]
    with pytest.raises(RuntimeError):
        stage_checkpoint(out, "epoch-0003", lambda folder: (_ for _ in ()).throw(RuntimeError("disk full")))
    assert list_pending(out) == ["epoch-0000.5", "epoch-0002"]  # a half-written folder never looks pending
    # a ledger entry (confirmed push) makes push_one finish the bookkeeping without any network call
    ledger = out / "pushed" / "epoch-0002.json"
    ledger.parent.mkdir(parents=True)
    ledger.write_text(json.dumps({"repo_id": "org/enc", "revision": "epoch-0002", "epoch": 2.0, "sha": "f" * 40}))
    assert push_one(out, "epoch-0002", "org/enc")["sha"] == "f" * 40
    assert list_pending(out) == ["epoch-0000.5"] and (out / "checkpoints" / "epoch-0002" / "config.json").is_file()
    assert set(read_ledger(out, "org/enc")) == {"epoch-0002"} and read_ledger(out, "other/repo") == {}


def test_trainer_state_normalises_the_end_of_an_epoch():
    state = TrainerState(global_step=8, epoch=0, batch_in_epoch=8)
    state.normalise(8)
    assert (state.epoch, state.batch_in_epoch) == (1, 0)


@pytest.mark.parametrize("line", ["lr: .nan", "lr: -1", "min_lr: .inf", "warmup_epochs: .nan", "drop_path: 1.5",
                                  "num_workers: -1", "seed: -3", "num_classes: 1000000000", "weight_decay: .nan"])
def test_recipe_file_numbers_are_checked_like_the_flags(line, tmp_path):
    """Issue 19.8: the bounds of the flags also hold for a recipe file (YAML .nan/.inf bypass argparse)."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"encoder: test_resnet\nepochs: 2\n{line}\n")
    name = line.split(":")[0]
    with pytest.raises(ConfigError, match=f"--{name.replace('_', '-')} .* finite value between"):
        build_config({}, recipe)
