"""Medical targets from real volumes (MNI152 as NIfTI, a DICOM series, an nnU-Net folder) and dataset-fixed intensities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_transfer_seg.data import intensity
from hf_transfer_seg.data.registry import create_target, parse_target_spec
from hf_transfer_seg.data.segmentation import split_target
from hf_transfer_seg.data.registry import load_target
from hf_transfer_seg.data.registry import resolve_target
from hf_transfer_seg.errors import ConfigError, DataError

from medical_data import INTERCEPT, SLOPE, write_dicom_series, write_nifti, write_nnunet


def test_spec_kinds(tmp_path):
    image, _ = write_nifti(tmp_path)
    write_nnunet(tmp_path / "nn")
    write_dicom_series(tmp_path / "dcm", zs=[40, 42])
    assert parse_target_spec(str(image)).kind == "nifti"
    assert parse_target_spec(str(tmp_path / "nn")).kind == "nnunet"
    assert parse_target_spec(str(tmp_path / "dcm")).kind == "dicom"
    assert parse_target_spec("mni152-tissue").kind == "builtin"
    assert parse_target_spec("owner/name").kind == "hub"
    assert parse_target_spec("hf-dataset:owner/name").location == "owner/name"
    with pytest.raises(DataError, match="one DICOM file"):
        parse_target_spec(str(next((tmp_path / "dcm").iterdir())))


def test_nifti_slices_along_the_affine_axial_axis_with_spacing(tmp_path):
    image, labels = write_nifti(tmp_path)
    target = load_target(str(image), labels=str(labels))
    assert target.pending and target.volumetric and target.num_classes == 3
    first = target.samples[0]
    assert first.image.shape == (1, 99, 117) and first.spacing == (2.0, 2.0)  # axial: x/y plane of the RAS volume
    coronal = load_target(str(image), labels=str(labels), slice_axis="coronal", limit=4)
    assert coronal.samples[0].image.shape == (1, 99, 30) and len(coronal.samples) == 4
    train, val, record = split_target(target, val_fraction=0.2)
    assert record["by"].startswith("slab")  # one volume: contiguous slabs, never interleaved slices
    target.normalise(train)
    assert target.intensity["mode"] == "percentile" and target.samples[0].image.shape == (3, 99, 117)
    assert 0.0 <= float(target.samples[0].image.min()) and float(target.samples[0].image.max()) <= 1.0
    with pytest.raises(ConfigError, match="--labels"):
        load_target(str(image))
    scored = resolve_target(str(image), limit=5)
    assert len(scored) == 5 and scored.load(0).shape == (3, 99, 117) and scored.key == "nifti:brain"


def test_dicom_series_ordered_by_position_in_hu(tmp_path):
    from hf_transfer_seg.data.sources.volumes import read_dicom_series

    folder, hu, labels = write_dicom_series(tmp_path / "series")
    volume = read_dicom_series(folder)
    np.testing.assert_allclose(volume.array[0], hu)  # file names run backwards: the order comes from positions
    assert volume.spacing == (4.0, 2.0, 2.0) and volume.axis_for("axial") == 0
    assert volume.array.min() == pytest.approx(-1000.0) and SLOPE != 1 and INTERCEPT != 0
    import nibabel as nib

    nib.save(nib.Nifti1Image(labels.transpose(2, 1, 0), np.eye(4)), tmp_path / "labels.nii.gz")  # NIfTI voxel order
    target = load_target(str(folder), labels=str(tmp_path / "labels.nii.gz"))
    assert target.samples[0].spacing == (2.0, 2.0) and target.num_classes == 3
    window = intensity.window("soft-tissue")
    target.normalise(fixed=window)
    assert target.intensity["lo"] == [-160.0] and target.intensity["hi"] == [240.0]


def test_nnunet_cases_split_by_case_and_scoring_never_reads_labels(tmp_path):
    root = write_nnunet(tmp_path / "Dataset042_Brain")
    target = load_target(str(root))
    assert target.class_names == ["background", "grey_ish", "white_ish"] and target.key == "nnunet:Dataset042_Brain"
    train, val, record = split_target(target, val_fraction=0.34, seed=0)
    assert record["by"] == "case" and len(record["val_units"]) == 1
    assert not {s.case for s in train.samples} & {s.case for s in val.samples}
    again = split_target(load_target(str(root)), val_fraction=0.34, seed=0)[2]
    assert again == record  # seeded and recorded
    target.normalise(train)
    train_values = np.concatenate([s.image.numpy().ravel() for s in train.samples])
    assert target.intensity["source"].startswith("0.5-99.5 percentiles of the training cases")
    assert train_values.min() == 0.0 and train_values.max() == 1.0
    for path in (root / "labelsTr").iterdir():
        path.unlink()
    images = resolve_target(str(root))
    assert len(images) > 0 and images.load(len(images) - 1).shape == (3, 99, 117)
    with pytest.raises(DataError, match="labelsTr"):
        load_target(str(root))


def test_nnunet_channel_files_must_match_dataset_json(tmp_path):
    import json

    root = write_nnunet(tmp_path / "ds", cases=("a_001", "a_002"))
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="a_001_0001.nii.gz"):
        load_target(str(root))


def test_sixteen_bit_images_load_with_one_range_per_dataset(tmp_path):
    from PIL import Image

    from hf_transfer_seg.data.images import load_image

    rng = np.random.default_rng(0)
    content = rng.integers(0, 4000, (48, 48)).astype(np.uint16)
    brighter = content.copy()
    brighter[0, 0] = 4200  # same content, a different maximum
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(content).save(folder / "a.png")
    Image.fromarray(brighter).save(folder / "b.png")
    a, b = load_image(folder / "a.png"), load_image(folder / "b.png")
    torch.testing.assert_close(a[:, 1:, 1:], b[:, 1:, 1:])  # no per-image scaling
    target = resolve_target(str(folder))
    a, b = target.load(0), target.load(1)
    torch.testing.assert_close(a[:, 1:, 1:], b[:, 1:, 1:])
    assert float(a.mean()) > 0.3  # a 12-bit range is stretched over [0, 1] by the dataset's percentiles
    fixed = resolve_target(str(folder), intensity_range="0,4000")
    torch.testing.assert_close(fixed.load(0)[0], torch.from_numpy(content / 4000.0).float())


def test_ct_window_arithmetic():
    w = intensity.window("soft-tissue")
    hu = np.array([[-1000.0, -160.0, 40.0, 240.0, 3000.0]])
    np.testing.assert_allclose(w.apply(hu)[0, 0].numpy(), [0.0, 0.0, 0.5, 1.0, 1.0])
    assert intensity.window("400,40").to_dict()["lo"] == w.to_dict()["lo"]
    lung = intensity.window("lung")
    assert (lung.lo, lung.hi) == ([-1350.0], [150.0])
    assert intensity.window("bone-wide").hi == [480.0 + 1250.0]
    with pytest.raises(ConfigError, match="WIDTH,LEVEL"):
        intensity.window("abdomen")
    with pytest.raises(ConfigError, match="HI > LO"):
        intensity.fixed_range("5,1")
    again = intensity.Intensity.from_dict(w.to_dict())
    assert torch.equal(again.apply(hu), w.apply(hu))


def test_stacks_and_many_channels_are_errors_naming_the_fix(tmp_path):
    import tifffile

    from hf_transfer_seg.data.images import load_image, to_rgb_tensor

    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 48, 48), np.uint16))
    with pytest.raises(DataError, match="NIfTI file or a DICOM series"):
        load_image(tmp_path / "stack.tif")
    with pytest.raises(DataError, match="third spatial axis"):
        to_rgb_tensor(np.zeros((64, 64, 8), np.float32))
    assert to_rgb_tensor(np.zeros((3, 20, 30), np.uint8)).shape == (3, 20, 30)
    assert to_rgb_tensor(np.zeros((20, 30, 4), np.uint8)).shape == (3, 20, 30)


def test_metric_module_matches_hand_computation_and_the_accumulator():
    from hf_transfer_seg.metrics import SegmentationMetrics
    from hf_transfer_seg.metrics import SEGMENTATION, load_metric

    import evaluate

    metric = evaluate.load(str(SEGMENTATION))  # offline, from the package
    pred, ref = np.zeros((8, 8), int), np.zeros((8, 8), int)
    pred[2:5, 2:5] = 1
    ref[2:6, 2:6] = 1
    px = metric.compute(predictions=[pred], references=[ref], num_classes=2)
    assert px["dice_mean"] == pytest.approx(2 * 9 / (9 + 16)) and px["iou_mean"] == pytest.approx(9 / 16)
    assert px["hd95_unit"] == "px" and "hd95_mm" not in px
    mm = metric.compute(predictions=[pred], references=[ref], num_classes=2, spacing=[(2.0, 2.0)])
    assert mm["hd95_mm"] == pytest.approx(2 * px["hd95_px"])
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 3, (24, 20)) for _ in range(4)]
    refs = [rng.integers(0, 3, (24, 20)) for _ in range(4)]
    direct = SegmentationMetrics(3)
    for p, r in zip(preds, refs):
        direct.update(torch.from_numpy(p), torch.from_numpy(r))
    assert load_metric().compute(predictions=preds, references=refs, num_classes=3) == direct.compute()
    vol = metric.compute(predictions=[pred, pred, ref], references=[ref, ref, ref], num_classes=2, cases=["a", "a", "b"])
    assert vol["dice_per_volume"] == {"a": pytest.approx(0.72), "b": 1.0} and vol["dice_volume_mean"] == pytest.approx(0.86)


def test_inference_applies_the_recorded_normalisation(tmp_path):
    from PIL import Image

    from hf_transfer_seg.space.inputs import read_input_image

    raw = (np.arange(64 * 64).reshape(64, 64) % 3000).astype(np.uint16)
    Image.fromarray(raw).save(tmp_path / "ct.png")
    image = read_input_image(tmp_path / "ct.png")
    recorded = intensity.fixed_range("0,3000").to_dict()
    x = intensity.model_input(image.tensor, image.raw, recorded)
    torch.testing.assert_close(x[0], torch.from_numpy(raw / 3000.0).float())
    Image.fromarray((raw // 12).astype(np.uint8)).save(tmp_path / "display.png")
    shown = read_input_image(tmp_path / "display.png")
    assert shown.raw is None and intensity.model_input(shown.tensor, shown.raw, recorded) is shown.tensor


def test_folder_of_nifti_volumes_is_a_multi_case_target(tmp_path):
    scans, labels = tmp_path / "scans", tmp_path / "labels"
    scans.mkdir()
    labels.mkdir()
    for i in range(3):
        image, label = write_nifti(tmp_path, name=f"case{i}", zslab=(30 + 2 * i, 40 + 2 * i))
        image.rename(scans / f"case{i}.nii.gz")
        label.rename(labels / f"case{i}.nii.gz")
    assert parse_target_spec(str(scans)).kind == "nifti"
    target = load_target(str(scans), labels=str(labels))
    _, _, record = split_target(target, val_fraction=0.34)
    assert record["by"] == "case" and record["val_units"] and len(record["train_units"]) == 2
    assert len(resolve_target(str(scans))) == 30
    with pytest.raises(ConfigError, match="--labels FOLDER"):
        load_target(str(scans), labels=str(labels / "case0.nii.gz"))
