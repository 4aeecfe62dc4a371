"""The Space says what its examples are, shows the class names of the served model in its legend and previews
uploads a browser cannot show (issue 26, item 5: the Space's parts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SPACE = Path(__file__).resolve().parents[1] / "spaces" / "segmentation-demo"


def test_examples_are_labelled_for_what_they_are():
    from hf_transfer_seg.space.server import example_source
    from hf_transfer_seg.space.ui import examples_label

    source = example_source(SPACE)
    assert source["target"] == "mni152-tissue"
    assert sorted(source["files"]) == sorted(p.name for p in (SPACE / "examples").glob("*.png"))
    assert examples_label(source, "mni152-tissue").endswith("(the served model's own target)")
    other = examples_label(source, "local:data/isbi-membranes")
    assert "NOT the served model's target (local:data/isbi-membranes)" in other and "mni152-tissue" in other
    assert "not recorded" in examples_label(None, "mni152-tissue")


def test_example_source_of_a_space_without_a_manifest_is_unknown(tmp_path):
    from hf_transfer_seg.space.server import example_source

    (tmp_path / "examples").mkdir()
    assert example_source(tmp_path) is None
    (tmp_path / "examples" / "examples.json").write_text("{not json")
    assert example_source(tmp_path) is None


def test_the_legend_shows_the_class_names_fine_tuning_recorded(hub_endpoint, repo_id, tmp_path):
    import timm
    from huggingface_hub import HfApi

    from hf_transfer_seg import hub
    from hf_transfer_seg.models.checkpoint import save_checkpoint
    from hf_transfer_seg.models.segmentation import build_model, save_segmentation_model
    from hf_transfer_seg.space.inference import color_map
    from hf_transfer_seg.space.server import load_segmenter
    from hf_transfer_seg.space.ui import legend_html

    torch.manual_seed(0)
    save_checkpoint(timm.create_model("test_resnet", num_classes=10), tmp_path / "enc")
    model = build_model(tmp_path / "enc", 2)
    model.config.update(class_names=["background", "membrane"], image_size=32)
    save_segmentation_model(model, tmp_path / "seg")
    HfApi().create_repo(repo_id)
    HfApi().upload_folder(repo_id=repo_id, folder_path=tmp_path / "seg")
    segmenter = load_segmenter(repo_id, hub.branch_sha(repo_id, "main"))
    assert segmenter.class_names == ["background", "membrane"]
    assert list(color_map(segmenter.class_names)) == ["membrane"]
    assert "membrane" in legend_html(segmenter.class_names) and "foreground" not in legend_html(segmenter.class_names)


class _Reader:
    """The one method of the service that ``preview_value`` uses: the Space's real upload decoder."""

    def read(self, path):
        from hf_transfer_seg.space.inputs import read_input_image

        return read_input_image(path)


@pytest.mark.parametrize("kind", ["tiff-16", "tiff-8", "png-16", "png-8", "not-an-image"])
def test_preview_is_shown_for_what_a_browser_cannot_display(tmp_path, kind):
    import tifffile
    from PIL import Image

    from hf_transfer_seg.space.ui import preview_value

    rng = np.random.default_rng(0)
    if kind == "tiff-16":
        path = tmp_path / "a.tif"
        tifffile.imwrite(path, (rng.random((40, 50)) * 60000).astype(np.uint16))
    elif kind == "tiff-8":
        path = tmp_path / "a.tiff"
        tifffile.imwrite(path, (rng.random((40, 50)) * 255).astype(np.uint8))
    elif kind == "png-16":
        path = tmp_path / "a.png"
        Image.fromarray((rng.random((40, 50)) * 60000).astype(np.uint16)).save(path)
    elif kind == "png-8":
        path = tmp_path / "a.png"
        Image.fromarray((rng.random((40, 50)) * 255).astype(np.uint8)).save(path)
    else:
        path = tmp_path / "a.png"
        path.write_text("not an image")
    update = preview_value(_Reader(), str(path))
    if kind in ("png-8", "not-an-image"):
        assert update["visible"] is False and update["value"] is None
    else:
        assert update["visible"] is True and update["value"].shape == (40, 50, 3) and update["value"].dtype == np.uint8
        assert update["value"].std() > 0 and "40" in update["label"] and "50" in update["label"]
