"""Fine-tuning pieces without a Hub: targets and their errors, metrics, loss, model weights, freezing, tiling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from hf_transfer_seg.data.registry import load_target
from hf_transfer_seg.data.segmentation import label_mapping, match_files, split_target
from hf_transfer_seg.errors import ConfigError, DataError, WeightsError
from hf_transfer_seg.metrics import SegmentationMetrics, hd95


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # many test processes share two cores


# ------------------------------------------------------------------------------------------ targets


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _drive_like(root, n=3, size=(40, 36)):
    rng = np.random.default_rng(0)
    for i in range(21, 21 + n):
        _write(root / "images" / f"{i}_training.tif", rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        mask = np.zeros(size, np.uint8)
        mask[5:20, 10:12] = 255
        _write(root / "1st_manual" / f"{i}_manual1.gif", mask)
        fov = np.zeros(size, np.uint8)
        fov[2:-2, 2:-2] = 255
        _write(root / "mask" / f"{i}_training_mask.gif", fov)
    return root


def test_drive_layout_pairs_by_leading_token_with_field_of_view(tmp_path):
    target = load_target(str(_drive_like(tmp_path / "drive")))
    assert target.num_classes == 2 and target.class_names == ["background", "foreground"]
    assert target.extra == {"pairing": "first token of the stem", "field_of_view": True}
    s = target.samples[0]
    assert s.image.shape == (3, 40, 36) and s.image.dtype == torch.float32
    assert set(s.mask.unique().tolist()) == {0, 1} and int(s.mask.sum()) == 30
    assert s.valid is not None and int(s.valid.sum()) == 36 * 32
    assert target.key.startswith("local:") and target.key.endswith("/drive")
    assert target.synthetic is False


def test_real_drive_loads(shared_dir):
    target = load_target(str(shared_dir / "data" / "drive-train"))
    assert len(target.samples) == 20 and target.num_classes == 2
    assert target.samples[0].image.shape == (3, 584, 565) and target.samples[0].valid is not None
    assert target.key == "local:data/drive-train"


def test_simple_layout_and_resize(tmp_path):
    for name in ("a", "b"):
        _write(tmp_path / "t" / "images" / f"{name}.png", np.full((64, 32, 3), 100, np.uint8))
        mask = np.zeros((64, 32), np.uint8)
        mask[:32] = 2
        mask[40:, :4] = 1
        _write(tmp_path / "t" / "masks" / f"{name}.png", mask)
    target = load_target(str(tmp_path / "t"), resize_longest=32)
    assert target.num_classes == 3 and target.extra["pairing"] == "exact file stem"
    assert target.samples[0].mask.shape == (32, 16) and target.samples[0].image.shape == (3, 32, 16)
    assert set(target.samples[0].mask.unique().tolist()) == {0, 1, 2}


def test_matching_prefers_the_strategy_that_pairs_everything(tmp_path):
    from pathlib import Path

    images = [Path("img_001.png"), Path("img_002.png")]
    masks = [Path("001_seg.png"), Path("002_seg.png")]
    pairs, how = match_files(images, masks)
    assert how == "first number in the stem" and pairs[images[1]] == masks[1]


def test_bad_inputs_fail_with_clear_errors(tmp_path):
    root = _drive_like(tmp_path / "d")
    (root / "1st_manual" / "22_manual1.gif").unlink()
    with pytest.raises(DataError, match=r"no mask .*22_training"):
        load_target(str(root))

    root = _drive_like(tmp_path / "size")
    _write(root / "1st_manual" / "21_manual1.gif", np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match="same size"):
        load_target(str(root))

    root = _drive_like(tmp_path / "values")
    mask = np.zeros((40, 36), np.uint8)
    mask[0, 0], mask[1, 1] = 3, 1
    _write(root / "1st_manual" / "21_manual1.gif", mask)
    with pytest.raises(DataError, match="outside the class set"):
        load_target(str(root), num_classes=2)

    with pytest.raises(DataError, match="outside the class set"):
        label_mapping({0, 1, 3}, 3)
    with pytest.raises(DataError, match="class index"):
        label_mapping({0, 128, 255}, None)  # grey levels, not classes
    assert label_mapping({0, 255}, None) == (2, {0: 0, 255: 1})
    assert label_mapping({0, 1, 2}, None)[0] == 3

    colour = np.zeros((40, 36, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    root = _drive_like(tmp_path / "colour")
    _write(root / "1st_manual" / "21_manual1.gif", colour)
    Image.fromarray(colour).save(root / "1st_manual" / "21_manual1.png")
    (root / "1st_manual" / "21_manual1.gif").unlink()
    with pytest.raises(DataError, match="colour"):
        load_target(str(root))

    with pytest.raises(DataError, match="no images folder"):
        load_target(str(tmp_path))
    with pytest.raises(DataError, match="neither an existing file or folder nor a Hub dataset id"):
        load_target("no-such-thing")


def test_split_is_seeded_recorded_and_refuses_an_empty_validation_set(tmp_path):
    target = load_target(str(_drive_like(tmp_path / "d", n=5)))
    a = split_target(target, val_fraction=0.4, seed=3)[2]
    b = split_target(target, val_fraction=0.4, seed=3)[2]
    assert a == b and len(a["val"]) == 2 and len(a["train"]) == 3 and a["seed"] == 3
    assert not set(a["val"]) & set(a["train"])
    small = load_target(str(_drive_like(tmp_path / "s", n=2)))
    with pytest.raises(DataError, match="no validation"):
        split_target(small, val_fraction=0.2)


def test_mni152_targets_are_real_anatomy_loaded_offline():
    tissue = load_target("mni152-tissue", resize_longest=48, limit=6)
    assert tissue.key == "mni152-tissue" and tissue.num_classes == 3 and not tissue.synthetic
    assert tissue.class_names == ["background", "grey_matter", "white_matter"]
    assert len(tissue.samples) == 6
    for s in tissue.samples:
        assert set(s.mask.unique().tolist()) <= {0, 1, 2} and (s.mask == 1).any() and (s.mask == 2).any()
    wm = load_target("mni152-wm", limit=3)
    assert wm.num_classes == 2 and wm.samples[0].image.shape[1:] == (233, 197)


# ------------------------------------------------------------------------------------------ metrics


def test_dice_and_iou_accumulate_over_the_set():
    m = SegmentationMetrics(2, ["bg", "fg"])
    target = torch.zeros(4, 4, dtype=torch.long)
    target[0, :4] = 1  # 4 foreground pixels
    pred = torch.zeros(4, 4, dtype=torch.long)
    pred[0, :2] = 1
    pred[1, :2] = 1  # 4 predicted, 2 right
    m.update(pred, target)
    empty = torch.zeros(4, 4, dtype=torch.long)
    extra = empty.clone()
    extra[3, 3] = 1  # one false positive in an image without foreground
    m.update(extra, empty)
    out = m.compute()
    # over the set: TP 2, FP 3, FN 2 -> Dice 4/9, IoU 2/7 (a per-image mean would give 0.25 for Dice)
    assert out["per_class"]["fg"]["dice"] == pytest.approx(4 / 9)
    assert out["per_class"]["fg"]["iou"] == pytest.approx(2 / 7)
    assert out["dice_mean"] == pytest.approx(4 / 9)
    # HD95 only for the image where both masks are non-empty
    assert out["per_class"]["fg"]["hd95_images"] == 1


def test_field_of_view_excludes_pixels():
    m = SegmentationMetrics(2)
    target = torch.zeros(3, 3, dtype=torch.long)
    pred = torch.ones(3, 3, dtype=torch.long)
    target[1, 1] = 1
    valid = torch.zeros(3, 3, dtype=torch.bool)
    valid[1, 1] = True
    m.update(pred, target, valid)
    assert m.compute()["dice_mean"] == pytest.approx(1.0)


def _surface_by_hand(mask):
    h, w = mask.shape
    pts = []
    for y in range(h):
        for x in range(w):
            if mask[y, x] and any(
                not (0 <= y + dy < h and 0 <= x + dx < w) or not mask[y + dy, x + dx]
                for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))
            ):
                pts.append((y, x))
    return np.array(pts, float)


def test_hd95_matches_brute_force_surface_distances():
    assert hd95(np.pad([[True]], ((0, 0), (0, 5))), np.pad([[True]], ((0, 0), (5, 0)))) == pytest.approx(5.0)
    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[3:9, 3:10] = True
    b[5:14, 6:12] = True
    sa, sb = _surface_by_hand(a), _surface_by_hand(b)
    d = np.sqrt(((sa[:, None] - sb[None]) ** 2).sum(-1))
    expected = max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))  # MONAI's: the larger directed HD95
    assert hd95(a, b) == pytest.approx(expected)
    assert math.isnan(hd95(a, np.zeros_like(a)))


# ------------------------------------------------------------------------------------------ loss


def test_soft_dice_loss_is_over_the_batch_with_background():
    from hf_transfer_seg.finetune.losses import build_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    target[:, 0, 0] = 0
    target[:, 0, 1] = 1
    target[:, 0, 2] = 2
    p = logits.softmax(1)
    dices = []
    for c in range(3):
        t = (target == c).float()
        dices.append(2 * (p[:, c] * t).sum() / (p[:, c].sum() + t.sum()))  # sums over batch and pixels
    expected = 1 - torch.stack(dices).mean()
    assert build_loss("soft-dice")(logits, target).item() == pytest.approx(expected.item(), abs=1e-5)
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert build_loss("soft-dice")(perfect, target).item() == pytest.approx(0.0, abs=1e-4)


# ------------------------------------------------------------------------------------------ model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import timm

    from hf_transfer_seg.models.checkpoint import save_checkpoint

    torch.manual_seed(1)
    model = timm.create_model("test_resnet", num_classes=10)
    folder = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(model, folder, data_config={"mean": (0.4, 0.5, 0.6), "std": (0.2, 0.25, 0.3)})
    return folder


@pytest.mark.parametrize("arch", ["test_resnet", "test_convnext"])
def test_encoder_weights_really_transfer(tmp_path, arch):
    import timm

    from hf_transfer_seg.models.segmentation import build_model
    from hf_transfer_seg.models.checkpoint import save_checkpoint

    torch.manual_seed(2)
    classifier = timm.create_model(arch, num_classes=5)
    save_checkpoint(classifier, tmp_path)
    model = build_model(tmp_path, 2).eval()
    classifier.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        # the deepest U-Net skip is the classifier's own final feature map (independent of timm's renaming)
        theirs = classifier.forward_features(x)
        ours = model.unet.encoder(x)[-1]
        torch.testing.assert_close(ours, theirs)
        fresh = build_model(None, 2, architecture=arch).eval()
        assert not torch.allclose(fresh.unet.encoder(x)[-1], theirs)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 2, 64, 64)


def test_encoder_loads_without_its_classifier_quietly_and_strictly(tmp_path, checkpoint, caplog):
    """The classifier head is dropped on purpose (no "Missing keys (fc.weight, fc.bias)" line from timm); any
    other missing tensor is an error, not a silently random layer."""
    import logging
    import shutil

    from safetensors.torch import load_file, save_file

    from hf_transfer_seg.models.checkpoint import load_encoder

    with caplog.at_level(logging.INFO):
        encoder = load_encoder(checkpoint, features_only=True)
    assert not [r.getMessage() for r in caplog.records if "keys" in r.getMessage().lower()]
    assert not any(k.startswith("fc.") for k in encoder.state_dict())
    full = load_encoder(checkpoint, features_only=False)  # the classifier itself still loads as it was trained
    assert full.get_classifier().out_features == 10

    shutil.copy(checkpoint / "config.json", tmp_path / "config.json")
    weights = load_file(checkpoint / "model.safetensors")
    dropped = next(k for k in weights if k.startswith("layer1.") and k.endswith(".weight"))
    save_file({k: v for k, v in weights.items() if k != dropped}, tmp_path / "model.safetensors")
    with pytest.raises(WeightsError, match=dropped.replace(".", r"\.")):
        load_encoder(tmp_path, features_only=True)


def test_finetune_progress_moves_every_step_and_shows_the_last_measured_dice(tmp_path, checkpoint, capsys):
    """One bar over epochs x steps: it moves within the first epoch, and epochs without evaluation show the
    last measured Dice (never nan)."""
    import re

    from hf_transfer_seg.data.segmentation import SegSample, SegTarget
    from hf_transfer_seg.finetune.config import FinetuneConfig
    from hf_transfer_seg.finetune.loop import finetune

    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(6):
        mask = torch.zeros(64, 64, dtype=torch.int64)
        mask[16:48, 16 + i : 40 + i] = 1
        samples.append(SegSample(f"s{i}", torch.rand(3, 64, 64, generator=g) * 0.2 + mask.float() * 0.6, mask))
    target = SegTarget("toy", samples, num_classes=2, class_names=["background", "object"], source="constructed",
                       intensity={"source": "constructed in [0, 1]"})
    config = FinetuneConfig(encoder_folder=str(checkpoint), image_size=32, batch_size=2, epochs=3, eval_every=0, crops_per_image=2)
    result = finetune(config, target=target, progress=True)
    err = capsys.readouterr().err
    done, total = map(int, re.findall(r"(\d+)/(\d+) \[", err)[-1])
    assert done == total == 3 * 5  # one unit per optimizer step: 3 epochs x (5 training images x 2 crops / batch 2)
    assert "nan" not in err
    assert [("dice_mean" in row) for row in result.history] == [True, False, True]
    assert f"epoch=2/3, loss={result.history[1]['loss']:.3f}, dice={result.history[0]['dice_mean']:.3f} (epoch 1)" in err

    class Steps:  # what the bar is given: one update per optimizer step, inside the epoch
        calls: list = []

        def update(self, n):
            self.calls.append(n)

    model, loader = result.model, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(6, 3, 32, 32), torch.zeros(6, 32, 32, dtype=torch.int64)), batch_size=2)
    from hf_transfer_seg.finetune.loop import build_training, train_epoch

    _, loss_fn, optimizer = build_training(model, target.samples, config)
    train_epoch(model, loader, loss_fn, optimizer, progress=(bar := Steps()))
    assert bar.calls == [1, 1, 1]


def test_model_applies_the_checkpoint_normalisation(checkpoint):
    from hf_transfer_seg.models.segmentation import build_model

    model = build_model(checkpoint, 3)
    assert model.mean.flatten().tolist() == pytest.approx([0.4, 0.5, 0.6])
    assert model.std.flatten().tolist() == pytest.approx([0.2, 0.25, 0.3])


def test_frozen_encoder_is_really_frozen(checkpoint):
    from hf_transfer_seg.finetune.losses import build_loss
    from hf_transfer_seg.models.segmentation import build_model

    model = build_model(checkpoint, 2, freeze_encoder=True)
    before = {k: v.clone() for k, v in model.unet.encoder.state_dict().items()}
    assert not any(p.requires_grad for p in model.unet.encoder.parameters())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5, momentum=0.9)
    for _ in range(2):
        model.train()
        assert not model.unet.encoder.training and model.unet.decoder.training
        loss = build_loss()(model(torch.rand(4, 3, 64, 64)), torch.randint(0, 2, (4, 64, 64)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.unet.encoder.state_dict()
    for k, v in before.items():  # weights *and* BatchNorm running statistics unchanged
        assert torch.equal(v, after[k]), k
    unfrozen = build_model(checkpoint, 2)
    unfrozen.train()
    assert unfrozen.unet.encoder.training
    quirk = build_model(checkpoint, 2, freeze_encoder=True, frozen_batchnorm_train=True)  # the paper's frozen runs
    quirk.train()
    assert quirk.unet.encoder.training and not any(p.requires_grad for p in quirk.unet.encoder.parameters())
    quirk.eval()
    assert not quirk.unet.encoder.training


def test_unet_refuses_single_scale_encoders():
    from hf_transfer_seg.models.segmentation import SegmentationModel

    with pytest.raises(WeightsError, match="hierarchical"):
        SegmentationModel("test_vit", 2)


def test_encoder_folder_without_safetensors_is_refused(tmp_path, checkpoint):
    import shutil

    from hf_transfer_seg.models.segmentation import build_model

    shutil.copy(checkpoint / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(WeightsError, match="pickle"):
        build_model(tmp_path, 2)


# ------------------------------------------------------------------------------------------ tiling


def test_sliding_window_stitches_back_exactly():
    from hf_transfer_seg.finetune.tiles import RandomCropDataset
    from hf_transfer_seg.models.segmentation import sliding_window_probs
    from hf_transfer_seg.data.segmentation import SegSample

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 1)  # per-pixel model: windows must agree with the whole image
    image = torch.rand(3, 70, 45)
    probs = sliding_window_probs(conv, image, 32, overlap=0.5, batch_size=3)
    with torch.no_grad():
        expected = conv(image[None]).softmax(1)[0]
    torch.testing.assert_close(probs, expected)
    small = sliding_window_probs(conv, torch.rand(3, 10, 12), 32)
    assert small.shape == (4, 10, 12)

    sample = SegSample("x", torch.rand(3, 20, 50), torch.randint(0, 2, (20, 50)))
    ds = RandomCropDataset([sample], 32, crops=3)
    assert len(ds) == 3
    img, mask = ds[0]
    assert img.shape == (3, 32, 32) and mask.shape == (32, 32) and mask.dtype == torch.long


def test_config_validation():
    from hf_transfer_seg.finetune.config import FinetuneConfig

    with pytest.raises(ConfigError, match="encoder"):
        FinetuneConfig().validate()
    with pytest.raises(ConfigError, match="multiple of 32"):
        FinetuneConfig(encoder_folder="x", image_size=100).validate()
