"""`score` and `finetune` on an nnU-Net folder, a NIfTI volume and a DICOM series, through the local hub."""

from __future__ import annotations

import json
import uuid

import pytest
import torch

from hf_transfer_seg.cli import main as cli_main

from medical_data import write_dicom_series, write_nifti, write_nnunet

SCORE = ["--num-images", "4", "--image-size", "64", "--batch-size", "4", "--no-progress", "--device", "cpu", "--dry-run"]
TUNE = ["--epochs", "1", "--batch-size", "4", "--image-size", "64", "--crops-per-image", "1", "--eval-every", "1",
        "--limit", "6", "--resize-longest", "64", "--no-progress", "--no-card", "--split-seed", "0"]


@pytest.fixture(scope="module")
def encoder_repo(hub_endpoint, tmp_path_factory):
    import timm

    from hf_transfer_seg import hub
    from hf_transfer_seg.models.checkpoint import save_checkpoint

    torch.set_num_threads(1)
    repo = f"test-org/medical-encoder-{uuid.uuid4().hex[:8]}"
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(timm.create_model("test_resnet", num_classes=10), folder)
    hub.push_revision(folder, repo, 1)
    return repo


def _targets(tmp_path):
    nn = write_nnunet(tmp_path / "Dataset042_Brain")
    image, labels = write_nifti(tmp_path)
    dicom, _, dicom_labels = write_dicom_series(tmp_path / "series", zs=range(36, 56, 2))
    import nibabel as nib
    import numpy as np

    nib.save(nib.Nifti1Image(dicom_labels.transpose(2, 1, 0), np.eye(4)), tmp_path / "series_labels.nii.gz")
    return {
        "nnunet": (str(nn), []),
        "nifti": (str(image), ["--labels", str(labels)]),
        "dicom": (str(dicom), ["--labels", str(tmp_path / "series_labels.nii.gz"), "--window", "soft-tissue"]),
    }


@pytest.mark.parametrize("kind", ["nnunet", "nifti", "dicom"])
def test_score_and_finetune_on_medical_targets(encoder_repo, tmp_path, capsys, kind):
    target, extra = _targets(tmp_path)[kind]
    score_extra = [a for a in extra if a != "--labels" and not a.endswith("series_labels.nii.gz") and not a.endswith("labels.nii.gz")]
    assert cli_main(["score", "--repo-id", encoder_repo, "--revisions", "epoch-0001", "--target", target, *score_extra, *SCORE]) == 0
    out = tmp_path / "out"
    assert cli_main(["finetune", "--encoder-repo", encoder_repo, "--revision", "epoch-0001", "--target", target,
                     "--output-dir", str(out), *extra, *TUNE]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())
    metrics = summary["metrics"]
    assert metrics["hd95_unit"] == "mm" and "HD95" in printed and " mm " in printed
    assert summary["target"]["intensity"]["mode"] == ("window" if kind == "dicom" else "percentile")
    if kind == "nnunet":
        assert summary["split"]["by"] == "case" and metrics["num_volumes"] == len(summary["split"]["val_units"])
        assert not set(summary["split"]["train_units"]) & set(summary["split"]["val_units"])
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["_model_class"] == "Unet"  # smp's own format
    assert config["_hf_transfer_seg"]["intensity"] == summary["target"]["intensity"]


def test_smp_from_pretrained_round_trip_matches_load_segmentation_model(hub_endpoint, repo_id, tmp_path):
    import segmentation_models_pytorch as smp
    from huggingface_hub import HfApi

    from hf_transfer_seg.data.intensity import fixed_range
    from hf_transfer_seg.models.segmentation import SegmentationModel, load_segmentation_model, save_segmentation_model

    torch.manual_seed(0)
    model = SegmentationModel(
        "test_resnet", 3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), decoder_channels=(32, 16, 16, 8, 8),
        config={"class_names": ["background", "a", "b"], "intensity": fixed_range("-100,300").to_dict(), "image_size": 64},
    )
    save_segmentation_model(model, tmp_path / "seg")
    api = HfApi()
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "seg")
    unet = smp.from_pretrained(repo_id).eval()  # smp's own loader, from the (local) Hub
    assert isinstance(unet, smp.Unet)
    ours = load_segmentation_model(repo_id)
    assert ours.config["class_names"] == ["background", "a", "b"] and ours.config["intensity"]["hi"] == [300.0]
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(unet((x - ours.mean) / ours.std), ours(x))
        assert torch.equal(unet((x - ours.mean) / ours.std).argmax(1), ours(x).argmax(1))


def test_hub_dataset_with_nifti_columns(hub_endpoint, repo_id, tmp_path):
    import datasets
    from huggingface_hub import HfApi

    from hf_transfer_seg.data.segmentation import split_target
    from hf_transfer_seg.data.registry import load_target
    from hf_transfer_seg.data.registry import resolve_target

    paths = [write_nifti(tmp_path, name=f"case{i}", zslab=(30 + 4 * i, 38 + 4 * i)) for i in range(3)]
    features = datasets.Features({"image": datasets.Nifti(), "label": datasets.Nifti()})
    rows = {"image": [str(p[0]) for p in paths], "label": [str(p[1]) for p in paths]}
    (tmp_path / "ds" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "ds" / "data" / "train-00000-of-00001.parquet")
    dataset_id = repo_id.replace("test-org/", "test-org/ds-")
    api = HfApi()
    api.create_repo(dataset_id, repo_type="dataset")
    api.upload_folder(repo_id=dataset_id, folder_path=tmp_path / "ds", repo_type="dataset")

    images = resolve_target(dataset_id)
    assert images.key == dataset_id and len(images) == 24 and images.load(0).shape == (3, 99, 117)
    target = load_target(dataset_id, mask_column="label")
    assert target.volumetric and target.samples[0].spacing == (2.0, 2.0) and target.num_classes == 3
    train, val, record = split_target(target, val_fraction=0.34)
    assert record["by"] == "case" and not {s.case for s in train.samples} & {s.case for s in val.samples}
