"""The fast (uint8) data path against the legacy (PIL + float) one: same recipe, same labels, fallbacks counted."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_transfer_seg.data.classification import FolderClassification, collate
from hf_transfer_seg.data.decode import decode_uint8, jpeg_size
from hf_transfer_seg.pretrain import data_path, recipes
from hf_transfer_seg.pretrain.config import build_config


def _photo(rng, h, w):
    """A smooth image with structure (resampling differences stay small) and a left/right asymmetry."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy + 2 * c) for c in range(3)], -1) * 60 + 128
    base[:, : w // 3] *= 0.4  # dark left third: a flip moves it
    return np.clip(base + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("photos")
    files = []
    for i in range(24):
        h, w = [(60, 80), (80, 60), (72, 72), (200, 300)][i % 4]
        path = root / f"{i}.jpg"
        Image.fromarray(_photo(rng, h, w)).save(path, quality=95)
        files.append((str(path), i % 3))
    return files


def _datasets(files, **overrides):
    out = {}
    for path in ("legacy", "fast"):
        config = build_config({"image_size": 32, "normalize": "imagenet", "data_path": path, **overrides})
        train_tf, val_tf = data_path.transforms(config)
        out[path] = (
            config,
            FolderClassification(files, ["a", "b", "c"], transform=train_tf, seed=7),
            FolderClassification(files, ["a", "b", "c"], transform=val_tf, seed=7),
        )
    return out


def _fast_batch(config, dataset, n_epochs=1):
    prep = data_path.batch_prep(config, "cpu")
    images, labels = [], []
    for epoch in range(n_epochs):
        dataset.set_epoch(epoch)
        x, y, skipped = collate([dataset[i] for i in range(len(dataset))])
        assert x.dtype == torch.uint8 and not skipped
        images.append(prep(x))
        labels.append(y)
    return torch.cat(images), torch.cat(labels)


def _legacy_batch(dataset, n_epochs=1):
    images, labels = [], []
    for epoch in range(n_epochs):
        dataset.set_epoch(epoch)
        x, y, _ = collate([dataset[i] for i in range(len(dataset))])
        images.append(x)
        labels.append(y)
    return torch.cat(images), torch.cat(labels)


def test_simple_recipe_draws_the_same_crops_and_flips_as_timm(folder):
    sets = _datasets(folder)
    fast, fast_labels = _fast_batch(sets["fast"][0], sets["fast"][1], n_epochs=3)
    legacy, legacy_labels = _legacy_batch(sets["legacy"][1], n_epochs=3)
    assert torch.equal(fast_labels, legacy_labels)
    assert fast.dtype == legacy.dtype == torch.float32 and fast.shape == legacy.shape
    # same per-sample seed -> same box and flip: only the resampling differs (a wrong flip or box gives ~1.0)
    per_sample = (fast - legacy).abs().mean(dim=(1, 2, 3))
    assert per_sample.max() < 0.08, per_sample
    # the flips happened (about half of 72 samples), and they agree: left-vs-right darkness has the same sign
    side = lambda x: torch.sign(x[..., :, :10].mean(dim=(1, 2, 3)) - x[..., :, -10:].mean(dim=(1, 2, 3)))  # noqa: E731
    assert torch.equal(side(fast), side(legacy))
    assert 20 < int((side(legacy) > 0).sum()) < 52
    # normalised batch statistics agree
    assert abs(fast.mean() - legacy.mean()) < 0.01 and abs(fast.std() - legacy.std()) < 0.01
    # and the epoch changes the augmentation
    assert not torch.allclose(fast[:24], fast[24:48])


def test_validation_resize_and_centre_crop_match(folder):
    sets = _datasets(folder)
    fast, _ = _fast_batch(sets["fast"][0], sets["fast"][2])
    legacy, _ = _legacy_batch(sets["legacy"][2])
    assert (fast - legacy).abs().mean(dim=(1, 2, 3)).max() < 0.08


def test_advanced_recipe_randaugment_mixup_targets_and_erasing(folder):
    sets = _datasets(folder, recipe="advanced")
    config = sets["fast"][0]
    fast_ds, legacy_ds = sets["fast"][1], sets["legacy"][1]
    # timm's RandAugment object itself runs on the fast path, after the same crop and flip
    from timm.data.auto_augment import RandAugment

    assert isinstance(fast_ds.transform.rand_augment, RandAugment) and fast_ds.transform.rand_augment.num_layers == 2
    prep = data_path.batch_prep(config, "cpu")
    assert prep.erasing is not None and prep.erasing.probability == 0.25 and prep.erasing.mode == "pixel"
    x_fast, y_fast, _ = collate([fast_ds[i] for i in range(len(fast_ds))])
    x_legacy, y_legacy, _ = collate([legacy_ds[i] for i in range(len(legacy_ds))])
    assert torch.equal(y_fast, y_legacy)
    # Mixup/CutMix (timm's, with label smoothing) sees the same labels and draws from the same generator
    mixup = recipes.mixup(config, 3)
    np.random.seed(1)
    _, t_fast = mixup(prep(x_fast)[:24], y_fast[:24])
    np.random.seed(1)
    _, t_legacy = mixup(x_legacy[:24], y_legacy[:24])
    assert torch.allclose(t_fast, t_legacy) and torch.allclose(t_fast.sum(1), torch.ones(24))
    assert t_fast.min() >= 0.1 / 3 - 1e-6  # smoothing 0.1 over 3 classes
    # RandomErasing on the device batch: about a quarter of the samples erased, as per-sample in timm
    torch.manual_seed(0)
    import random

    random.seed(0)
    flat = torch.full((400, 3, 16, 16), 128, dtype=torch.uint8)
    erased = (prep(flat) != prep.__class__(config.mean_std[0], config.mean_std[1], "cpu")(flat)).flatten(1).any(1)
    assert 0.18 < erased.float().mean() < 0.32


def test_png_grey_cmyk_and_corrupt_files_fall_back_and_are_counted(tmp_path):
    rng = np.random.default_rng(1)
    array = _photo(rng, 40, 50)
    Image.fromarray(array).save(tmp_path / "a.png")
    Image.fromarray(array).convert("CMYK").save(tmp_path / "b.jpg", quality=95)
    Image.fromarray(array[..., 0]).save(tmp_path / "c.jpg", quality=95)
    Image.fromarray(array).save(tmp_path / "d.webp")
    good = (tmp_path / "c.jpg").read_bytes()
    (tmp_path / "broken.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    for name in ("a.png", "b.jpg", "c.jpg", "d.webp"):
        image, _ = decode_uint8(str(tmp_path / name))
        reference = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert image.dtype == torch.uint8 and image.shape == (3, 40, 50)
        assert np.abs(image.permute(1, 2, 0).numpy().astype(int) - reference).max() <= 2, name
    names = ["a.png", "broken.jpg", "b.jpg", "garbage.png", "c.jpg", "d.webp"]
    config = build_config({"image_size": 16})
    train_tf, _ = data_path.transforms(config)
    ds = FolderClassification([(str(tmp_path / n), 0) for n in names], ["a"], transform=train_tf, seed=0)
    images, labels, skipped = collate([ds[i] for i in range(len(ds))])
    assert images.shape == (6, 3, 16, 16) and images.dtype == torch.uint8
    assert skipped == [1, 3]  # the unreadable ones, replaced by the next readable image


def test_large_jpeg_is_decoded_at_reduced_size_with_the_same_result(tmp_path):
    rng = np.random.default_rng(2)
    big = _photo(rng, 960, 1280)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    assert jpeg_size(data) == (1280, 960)  # read from the frame header, no decoding
    reduced, scale = decode_uint8(data, scale=4)
    assert scale == 4 and reduced.shape == (3, 240, 320)
    config = build_config({"image_size": 64, "data_path": "fast"})
    _, val_tf = data_path.transforms(config)
    out_reduced = val_tf(data).float()
    val_tf.reduce = False
    out_full = val_tf(data).float()
    assert out_reduced.shape == out_full.shape == (3, 64, 64)
    assert (out_reduced - out_full).abs().mean() < 4.0  # of 255


def test_gpu_decode_is_refused_without_cuda_or_with_randaugment():
    from hf_transfer_seg.errors import ConfigError

    with pytest.raises(ConfigError, match="simple recipe"):
        build_config({"decode": "gpu", "recipe": "advanced"})
    if not torch.cuda.is_available():

        class _Cpu:
            device = torch.device("cpu")

        with pytest.raises(ConfigError, match="needs a CUDA device"):
            data_path.build_data(build_config({"decode": "gpu"}), _Cpu())


def test_gpu_decode_path_matches_the_cpu_path_and_counts_corrupt_files(folder, tmp_path):
    """The --decode gpu code (workers plan, the decoder decodes a batch), run with decode_jpeg on the CPU."""
    from hf_transfer_seg.data.gpu_augment import DevicePrep, EncodingTrainTransform, GpuDecoder, collate_encoded
    from hf_transfer_seg.data.uint8_transforms import TrainTransformU8

    Image.fromarray(_photo(np.random.default_rng(3), 50, 70)).save(tmp_path / "p.png")
    good = Path(folder[0][0]).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2])  # header intact: only the decoder finds out
    files = [*folder[:5], (str(tmp_path / "p.png"), 1), (str(tmp_path / "cut.jpg"), 2)]
    cpu = FolderClassification(files, ["a", "b", "c"], transform=TrainTransformU8(32, reduce=False), seed=3)
    enc = FolderClassification(files, ["a", "b", "c"], transform=EncodingTrainTransform(32), seed=3)
    batch, labels, skipped = collate_encoded([enc[i] for i in range(len(files))], size=32)
    assert skipped == [] and labels.tolist() == [f[1] for f in files]
    prep = DevicePrep((0.0,) * 3, (1.0,) * 3, "cpu")
    prep.decoder = GpuDecoder("cpu")
    out = prep(batch)
    expected = torch.stack([cpu[i][0] for i in range(6)]).float() / 255.0
    assert torch.allclose(out[:6], expected)  # same draws, same (full-size) decode and resampling
    assert prep.take_skipped() == [("gpu-decode", 0)] and prep.take_skipped() == []
    assert torch.equal(out[6], out[0])  # the unreadable image replaced by a readable one of the batch


def test_hub_dataset_image_bytes_take_the_same_fast_decode(folder):
    import datasets

    from hf_transfer_seg.data.classification import HFClassification

    features = datasets.Features({"image": datasets.Image(decode=False), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    rows = {"image": [{"bytes": Path(p).read_bytes(), "path": None} for p, _ in folder[:8]], "label": [y for _, y in folder[:8]]}
    table = datasets.Dataset.from_dict(rows, features=features)  # parquet-style rows: encoded bytes, not decoded
    config = build_config({"image_size": 32})
    train_tf, _ = data_path.transforms(config)
    hub = HFClassification(table, "image", "label", transform=train_tf, seed=7)
    local = FolderClassification(folder[:8], ["a", "b", "c"], transform=train_tf, seed=7)
    for i in range(8):
        image, label, skipped = hub[i]
        assert image.dtype == torch.uint8 and skipped == -1
        assert torch.equal(image, local[i][0]) and label == local[i][1]


def test_datasets_that_only_load_pil_images_work_on_the_fast_path():
    """A _MapDataset subclass with only ``_load`` (as the digits set has) gets the uint8 transforms too."""
    from hf_transfer_seg.data.classification import _MapDataset

    class PilOnly(_MapDataset):
        def __len__(self):
            return 4

        def _load(self, index):
            return Image.fromarray(_photo(np.random.default_rng(index), 20, 30)).convert("L").convert("RGB"), index % 2

    config = build_config({"image_size": 16})
    train_tf, val_tf = data_path.transforms(config)
    for transform in (train_tf, val_tf):
        images, labels, skipped = collate([PilOnly(transform=transform, seed=0)[i] for i in range(4)])
        assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8 and not skipped
        assert labels.tolist() == [0, 1, 0, 1]


def test_data_sources_use_a_public_interface_and_never_import_the_registry():
    """20.12: the registry imports the sources, not the reverse; no module imports a private name of data/."""
    import ast

    package = Path(__file__).resolve().parents[1] / "hf_transfer_seg"
    sources = {package / "data" / "segmentation.py", package / "data" / "unlabelled.py", *(package / "data" / "sources").glob("*.py")}
    offences = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("hf_transfer_seg.data"):
                continue
            where = f"{path.relative_to(package)}:{node.lineno}"
            offences += [f"{where} imports the private {a.name} from {node.module}" for a in node.names if a.name.startswith("_")]
            names = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            if path in sources and "hf_transfer_seg.data.registry" in names:
                offences.append(f"{where}: a source imports the registry")
    assert not offences, offences


# ------------------------------------------------------------------------------------- the optional DALI engine


def _dali():
    return pytest.importorskip("nvidia.dali", reason="DALI is an extra: pip install -e '.[dali]'")


def test_dali_cpu_decodes_real_jpegs_into_uint8_batches_and_shards_each_epoch(shared_dir):
    _dali()
    from hf_transfer_seg.data.dali import train_loader

    sample = shared_dir / "data" / "imagenet-sample"
    if not sample.is_dir():
        pytest.skip(f"{sample} is absent")
    files = [(str(p), i) for i, p in enumerate(sorted(sample.iterdir())[:16])]
    loader = train_loader(files, image_size=64, batch_size=4, device="cpu", workers=1)
    assert len(loader) == 4
    for _ in range(2):  # two epochs: every image once per epoch, in a new order
        seen = []
        for images, labels in loader:
            assert images.dtype == torch.uint8 and images.shape == (4, 3, 64, 64) and labels.dtype == torch.int64
            assert images.float().std() > 5  # decoded pictures, not blanks
            seen += labels.tolist()
        assert sorted(seen) == list(range(16))
    shards = [train_loader(files, image_size=32, batch_size=4, shard=k, num_shards=2, workers=1) for k in (0, 1)]
    parts = [{v for _, labels in shard for v in labels.tolist()} for shard in shards]
    assert len(parts[0]) == len(parts[1]) == 8 and not parts[0] & parts[1]  # one half each, disjoint


def test_dali_keeps_each_image_with_its_own_label_and_flips_like_the_fast_path(tmp_path):
    """Solid-colour JPEGs whose red value encodes their label: whatever the crop, the batch keeps the pairing. A
    half-black/half-white image flipped with probability 1 has its white half on the other side."""
    _dali()
    from hf_transfer_seg.data.dali import train_loader

    files = []
    for label in range(12):
        path = tmp_path / f"{label}.jpg"
        Image.fromarray(np.full((40 + 4 * label, 56, 3), (20 * label, 128, 60), np.uint8)).save(path, quality=95)
        files.append((str(path), label))
    for images, labels in train_loader(files, image_size=32, batch_size=4, workers=1):
        red = images[:, 0].float().mean(dim=(1, 2))
        assert torch.allclose(red, 20 * labels.float(), atol=3), (red, labels)
    half = np.zeros((48, 48, 3), np.uint8)
    half[:, 24:] = 255
    Image.fromarray(half).save(tmp_path / "half.jpg", quality=95)
    one = [(str(tmp_path / "half.jpg"), 0)] * 4
    flipped, _ = next(iter(train_loader(one, image_size=32, batch_size=4, workers=1, scale=(1.0, 1.0), hflip=1.0)))
    kept, _ = next(iter(train_loader(one, image_size=32, batch_size=4, workers=1, scale=(1.0, 1.0), hflip=0.0)))
    assert (flipped[:, :, :, :8].float().mean() > 200) and (kept[:, :, :, -8:].float().mean() > 200)
    with pytest.raises(ValueError, match="shard 2"):
        train_loader(one, image_size=32, batch_size=4, shard=2, num_shards=2)
