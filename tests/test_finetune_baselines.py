"""Every validation Dice stands beside the trivial predictions on the same images; the class of interest can be
named; predictions and per-case metrics are saved (issue 26, items 1 and 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hf_transfer_seg.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # many test processes share two cores


def isbi_like(root, n=5, size=64):
    """ISBI-2012's layout: thin membranes stored as 0 (the minority), cell interiors as 255 (the majority)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.full((size, size), 255, np.uint8)
        mask[i % 4::16, :] = 0
        mask[:, ::16] = 0
        image = (mask * 0.6 + rng.integers(0, 60, mask.shape)).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    import timm

    from hf_transfer_seg.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("enc")
    save_checkpoint(timm.create_model("test_resnet", num_classes=10), folder)
    return folder


def test_baselines_equal_the_metric_of_constant_predictions_with_field_of_view():
    """The closed-form floors are what the accumulator gives for real constant predictions, class by class."""
    from hf_transfer_seg.metrics import SegmentationMetrics
    from hf_transfer_seg.metrics.baselines import trivial_baselines

    rng = np.random.default_rng(1)
    refs = [rng.choice(3, size=(20, 24), p=[0.2, 0.5, 0.3]) for _ in range(3)]
    valid = [rng.random((20, 24)) > 0.2 for _ in range(3)]
    names = ["background", "grey", "white"]
    b = trivial_baselines(refs, 3, names, valid)

    def metric_of(constant):
        m = SegmentationMetrics(3, names)
        for r, v in zip(refs, valid):
            m.update(torch.full(r.shape, constant), torch.as_tensor(r), torch.as_tensor(v))
        return m.compute()

    assert b["all_background"]["dice_mean"] == pytest.approx(metric_of(0)["dice_mean"])
    majority = metric_of(1)  # class 1 ("grey") holds half of the pixels
    assert b["majority_class"]["class"] == "grey"
    assert b["majority_class"]["dice_mean"] == pytest.approx(majority["dice_mean"])
    for c, name in ((1, "grey"), (2, "white")):
        assert b["all_foreground"]["per_class"][name]["dice"] == pytest.approx(metric_of(c)["per_class"][name]["dice"])
        assert b["all_foreground"]["per_class"][name]["iou"] == pytest.approx(metric_of(c)["per_class"][name]["iou"])
    assert b["majority_class"]["hd95"] is None and "not defined" in b["hd95_note"]
    assert b["warnings"] == []  # no foreground class covers most pixels


def test_majority_foreground_warns_and_foreground_values_name_the_minority(tmp_path):
    from hf_transfer_seg.data.registry import load_target
    from hf_transfer_seg.metrics.baselines import trivial_baselines

    root = isbi_like(tmp_path / "isbi")
    default = load_target(str(root))
    refs = [s.mask.numpy() for s in default.samples]
    b = trivial_baselines(refs, default.num_classes, default.class_names)
    assert b["class_fraction"]["foreground"] > 0.5
    assert b["all_foreground"]["dice_mean"] > 0.85
    assert len(b["warnings"]) == 1 and "--foreground-values" in b["warnings"][0]

    membranes = load_target(str(root), foreground_values=[0], class_names=["background", "membrane"])
    assert membranes.class_names == ["background", "membrane"]
    for a, m in zip(default.samples, membranes.samples):
        assert torch.equal(m.mask, 1 - a.mask)  # raw 0 is now the scored class
    assert trivial_baselines([s.mask.numpy() for s in membranes.samples], 2)["warnings"] == []

    with pytest.raises(DataError, match=r"--foreground-values \[7\] not in any mask"):
        load_target(str(root), foreground_values=[7])
    with pytest.raises(ConfigError, match="2 class names given for 3 classes"):
        load_target("mni152-tissue", class_names=["a", "b"], limit=2)
    wm = load_target("mni152-tissue", foreground_values=[2], limit=2)  # the embedded set: keep white matter only
    assert wm.num_classes == 2 and wm.class_names == ["background", "white_matter"]


def test_multi_label_foreground_values_give_per_class_dice_and_baselines(tmp_path):
    from hf_transfer_seg.data.registry import load_target

    root = tmp_path / "multi"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        mask = np.zeros((24, 24), np.uint8)
        mask[:8] = 50
        mask[8:12] = 100
        mask[12:14] = 200  # a label nobody asked for: background
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
        Image.fromarray(mask).save(root / "images" / f"{i}.png")
    target = load_target(str(root), foreground_values=[100, 50], class_names=["bg", "thin", "wide"])
    assert target.num_classes == 3
    mask = target.samples[0].mask
    assert (mask[:8] == 2).all() and (mask[8:12] == 1).all() and (mask[12:] == 0).all()


def _cli(*args):
    from hf_transfer_seg.cli import main

    return main(list(args))


def test_finetune_cli_saves_predictions_per_case_metrics_and_baselines(tmp_path, encoder, capsys, fresh_logging):
    root = isbi_like(tmp_path / "isbi")
    out = tmp_path / "out"
    common = ["finetune", "--encoder-folder", str(encoder), "--target", str(root), "--epochs", "1", "--batch-size", "4",
              "--image-size", "32", "--no-card", "--no-progress", "--val-fraction", "0.4"]
    assert _cli(*common, "--output-dir", str(out)) == 0
    printed = capsys.readouterr().out
    assert "trivial baselines on the same images: all-background Dice 0.0000, all-foreground 0.9" in printed
    assert "warning: foreground class 'foreground' covers" in printed
    assert "px at 64x64 (HxW)" in printed

    summary = json.loads((out / "validation" / "summary.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert len(summary["metric_per_case"]) == 2 == metrics["num_images"]
    assert summary["foreground_mean"]["Dice"] == pytest.approx(metrics["dice_mean"])
    assert summary["baselines"]["all_foreground"]["dice_mean"] == pytest.approx(metrics["baselines"]["all_foreground"]["dice_mean"])
    assert summary["distance_unit"] == "px at 64x64 (HxW)"
    reference = {p.stem: np.asarray(Image.open(p)) for p in (root / "masks").iterdir()}
    for case in summary["metric_per_case"]:
        pred = np.asarray(Image.open(out / "validation" / case["prediction_file"]))
        assert pred.shape == reference[case["image"]].shape
        row = case["metrics"]["foreground"]
        ref = reference[case["image"]] == 255
        tp = int((pred.astype(bool) & ref).sum())
        assert row["n_ref"] == int(ref.sum()) and row["n_pred"] == int(pred.astype(bool).sum())
        assert row["Dice"] == pytest.approx(2 * tp / (row["n_ref"] + row["n_pred"]))
    assert not (out / "resume").exists()  # the per-epoch state is removed once the results are written

    named = tmp_path / "named"
    assert _cli(*common, "--output-dir", str(named), "--foreground-values", "0", "--class-names", "background,membrane") == 0
    printed = capsys.readouterr().out
    assert "membrane: Dice" in printed and "warning: foreground class" not in printed
    assert json.loads((named / "validation" / "summary.json").read_text())["class_names"] == ["background", "membrane"]


@pytest.mark.parametrize("extra, message", [
    (["--foreground-values", "7"], "--foreground-values [7] not in any mask"),
    (["--foreground-values", "x"], "argument --foreground-values"),
    (["--class-names", "a,b,c"], "3 class names given for 2 classes"),
    (["--class-names", "only"], "argument --class-names"),
    (["--resume"], "--resume continues from the state saved in --output-dir"),
])
def test_bad_class_flags_are_one_line_and_exit_2_before_any_output(tmp_path, encoder, capsys, fresh_logging, extra, message):
    root = isbi_like(tmp_path / "isbi", n=3)
    out = tmp_path / "out"
    args = ["finetune", "--encoder-folder", str(encoder), "--target", str(root), "--epochs", "1", "--no-card", "--no-progress"]
    if extra != ["--resume"]:
        args += ["--output-dir", str(out)]
    assert _cli(*args, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert not out.exists()


def test_real_drive_vessels_are_the_minority_and_raise_no_warning(shared_dir):
    from hf_transfer_seg.data.registry import load_target
    from hf_transfer_seg.metrics.baselines import trivial_baselines

    drive = shared_dir / "data" / "drive-train"
    if not drive.is_dir():
        pytest.skip(f"{drive} is absent (DRIVE training images)")
    target = load_target(str(drive), limit=2, resize_longest=128)
    valid = [s.valid.numpy() if s.valid is not None else None for s in target.samples]
    b = trivial_baselines([s.mask.numpy() for s in target.samples], target.num_classes, target.class_names, valid)
    assert 0.05 < b["class_fraction"]["foreground"] < 0.3
    assert b["majority_class"]["class"] == "background" and b["warnings"] == []
    assert b["all_foreground"]["dice_mean"] < 0.4


def test_cards_show_the_model_beside_the_trivial_predictions_and_the_warnings():
    from hf_transfer_seg.finetune.push import downstream_markdown, merge_run, results_markdown
    from hf_transfer_seg.metrics import baselines

    refs = [np.array([[1, 1, 1, 0]] * 4)]
    metrics = {"dice_mean": 0.7, "iou_mean": 0.6, "hd95_mean": 1.5, "distance_unit": "px at 4x4 (HxW)", "per_class": {}}
    baselines.attach(metrics, refs, 2, ["background", "cells"])
    text = results_markdown(metrics)
    assert "HD95 (px at 4x4 (HxW))" in text
    assert "| this model | 0.7000 |" in text and "| all foreground (every pixel foreground) | 0.8571 |" in text
    assert "| majority class (cells) | 0.8571 |" in text and "not defined for these constant predictions" in text
    assert "**Warning:** foreground class 'cells' covers 75.0%" in text
    assert "**Warning:** the model's Dice 0.7000 does not beat the trivial all-foreground prediction (0.8571)" in text

    from hf_transfer_seg.finetune.push import baseline_dice

    run = {"seed": 0, "dice": 0.7, "baselines": baseline_dice(metrics), "distance_unit": "px at 4x4 (HxW)"}
    entry = merge_run(None, run, recipe={"epochs": 1}, target={"key": "t"})
    assert entry["baselines"]["all_foreground"] == pytest.approx(0.8571, abs=1e-4)
    table = downstream_markdown({"downstream": {"t": entry}})
    assert "best trivial Dice" in table and "0.8571 (all foreground)" in table and "px at 4x4 (HxW)" in table
