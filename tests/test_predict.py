"""``hf-transfer-seg predict``: masks with the inputs' own geometry from a tiny model pushed to the local hub."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medical_data import write_dicom_series, write_nifti


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def seg_repo(hub_endpoint, tmp_path_factory):
    """A tiny U-Net fine-tuned (1 epoch) on a real NIfTI target (MNI152 slices in MR-like units), pushed."""
    import uuid

    import timm

    from hf_transfer_seg.finetune import FinetuneConfig, finetune
    from hf_transfer_seg.finetune.push import push_segmentation_model
    from hf_transfer_seg.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("predict-model")
    torch.manual_seed(0)
    save_checkpoint(timm.create_model("test_resnet", num_classes=10), root / "enc")
    image, labels = write_nifti(root, zslab=(40, 48))
    config = FinetuneConfig(
        encoder_folder=str(root / "enc"), target=str(image), labels=str(labels), epochs=1, batch_size=4, image_size=32,
        resize_longest=48, eval_every=1, class_names=("background", "grey_ish", "white_ish"),
    )
    result = finetune(config, progress=False)
    repo = f"test-org/predict-{uuid.uuid4().hex[:8]}"
    push_segmentation_model(result, repo)
    return repo


def _cli(*args):
    from hf_transfer_seg.cli import main

    return main(list(args))


def test_predict_keeps_each_inputs_geometry(seg_repo, tmp_path, capsys, fresh_logging):
    import nibabel as nib
    import tifffile

    from hf_transfer_seg import hub

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray((np.random.default_rng(0).random((30, 41)) * 255).astype(np.uint8)).save(inputs / "photo.png")
    tifffile.imwrite(inputs / "scan.tif", (np.random.default_rng(1).random((37, 29)) * 60000).astype(np.uint16))
    nifti, _ = write_nifti(inputs, name="brain", zslab=(44, 47))
    (inputs / "brain_labels.nii.gz").unlink()
    _, hu, _ = write_dicom_series(inputs / "series", zs=range(40, 46, 2))
    out = tmp_path / "masks"
    assert _cli("predict", "-i", str(inputs), "-o", str(out), "--model", f"{seg_repo}@main", "--no-progress") == 0
    assert "4 mask(s)" in capsys.readouterr().out

    manifest = json.loads((out / "predictions.json").read_text())
    assert manifest["sha"] == hub.branch_sha(seg_repo, "main")
    assert manifest["mask_values"] == {"background": 0, "grey_ish": 1, "white_ish": 2}
    assert str(tmp_path) not in (out / "predictions.json").read_text()
    png = np.asarray(Image.open(out / "photo.png"))
    assert png.shape == (30, 41) and set(np.unique(png)) <= {0, 1, 2}
    tif = tifffile.imread(out / "scan.tif")
    assert tif.shape == (37, 29) and set(np.unique(tif)) <= {0, 1, 2}

    src, mask = nib.load(str(nifti)), nib.load(str(out / "brain.nii.gz"))
    assert mask.shape == src.shape and np.allclose(mask.affine, src.affine)
    labels = np.asarray(mask.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}

    series = nib.load(str(out / "series.nii.gz"))
    assert series.shape == hu.shape == (3, 117, 99)  # slices, rows, columns of the series
    # voxel (0,0,0) is the first slice's ImagePositionPatient (-98, -134, -72 + 2*40) in LPS, i.e. (98, 134, 8) in RAS
    assert np.allclose(series.affine[:3, 3], [98.0, 134.0, 8.0])
    assert np.allclose(np.linalg.norm(series.affine[:3, :3], axis=0), [4.0, 2.0, 2.0])  # slice gap, row, column spacing


def _bad(tmp_path, capsys, *args):
    code = _cli("predict", *args, "--no-progress")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert not any(p.name.startswith((".out", "out")) for p in tmp_path.iterdir())  # nothing half-written
    return err[0]


def test_predict_refuses_bad_inputs_with_one_line_and_writes_nothing(seg_repo, tmp_path, capsys, fresh_logging):
    import tifffile

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(inputs / "ok.png")
    (inputs / "notes.txt").write_text("not an image")
    out = str(tmp_path / "out")
    assert "notes.txt is not a 2-D image" in _bad(tmp_path, capsys, "-i", str(inputs), "-o", out, "--model", seg_repo)

    (inputs / "notes.txt").unlink()
    tifffile.imwrite(inputs / "stack.tif", np.zeros((5, 24, 24, 3), np.uint8))  # a multi-page stack, not a 2-D image
    assert "stack.tif" in _bad(tmp_path, capsys, "-i", str(inputs), "-o", out, "--model", seg_repo)

    (inputs / "stack.tif").unlink()
    Path(out).mkdir()
    (Path(out) / "keep.txt").write_text("mine")
    assert "not an empty folder" in _cli_err(capsys, "-i", str(inputs), "-o", out, "--model", seg_repo)
    assert (Path(out) / "keep.txt").read_text() == "mine"


def _cli_err(capsys, *args):
    assert _cli("predict", *args, "--no-progress") == 2
    return capsys.readouterr().err.strip()


def test_predict_refuses_a_model_without_a_segmentation_head(hub_endpoint, repo_id, tmp_path, capsys, fresh_logging):
    import timm

    from hf_transfer_seg import hub
    from hf_transfer_seg.models.checkpoint import save_checkpoint

    save_checkpoint(timm.create_model("test_resnet", num_classes=10), tmp_path / "ckpt")
    hub.push_revision(tmp_path / "ckpt", repo_id, 1)  # an encoder checkpoint: no U-Net
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(inputs / "a.png")
    line = _bad(tmp_path, capsys, "-i", str(inputs), "-o", str(tmp_path / "out"), "--model", f"{repo_id}@epoch-0001")
    assert "not an hf-transfer-seg segmentation model" in line


def test_predict_on_real_drive_image_keeps_its_size(seg_repo, shared_dir, tmp_path, capsys, fresh_logging):
    drive = shared_dir / "data" / "drive-train" / "images"
    if not drive.is_dir():
        pytest.skip(f"{drive} is absent (DRIVE training images)")
    inputs = tmp_path / "in"
    inputs.mkdir()
    first = sorted(drive.iterdir())[0]
    (inputs / first.name).symlink_to(first)
    assert _cli("predict", "-i", str(inputs), "-o", str(tmp_path / "out"), "--model", seg_repo, "--no-progress") == 0
    import tifffile

    with Image.open(first) as img:
        width, height = img.size
    mask = tifffile.imread(tmp_path / "out" / f"{first.stem}.tif")
    assert mask.shape == (height, width)


def test_predict_refuses_a_volume_for_a_model_trained_on_8bit_images(tmp_path, capsys, fresh_logging):
    import timm

    from hf_transfer_seg.models.checkpoint import save_checkpoint
    from hf_transfer_seg.models.segmentation import build_model, save_segmentation_model

    torch.manual_seed(0)
    save_checkpoint(timm.create_model("test_resnet", num_classes=10), tmp_path / "enc")
    model = build_model(tmp_path / "enc", 2)
    model.config.update(class_names=["background", "vessel"], image_size=32)  # no intensity range: 8-bit images
    save_segmentation_model(model, tmp_path / "seg")
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_nifti(inputs, name="brain", zslab=(44, 46))
    line = _bad(tmp_path, capsys, "-i", str(inputs), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "seg"))
    assert "brain.nii.gz is a volume, but the model was trained on 8-bit 2-D images" in line
