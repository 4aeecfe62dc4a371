"""The Space's pure parts on real files and a real (tiny) U-Net: configuration, upload decoding, inference, masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from hf_transfer_seg.errors import ConfigError, DataError
from hf_transfer_seg.space.config import CONFIG_FILE, SpaceConfig
from hf_transfer_seg.space.inference import Segmenter, blend, color_map, overlay_value, write_mask_png
from hf_transfer_seg.space.inputs import read_input_image


# ----------------------------------------------------------------------------------------- config


def test_config_precedence_file_then_environment_then_flags(tmp_path):
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"model_repo": "org/from-file", "target": "t-file", "max_side": 512}))
    assert SpaceConfig.load(tmp_path, env={}).model_repo == "org/from-file"
    env = {"HTS_MODEL_REPO": "org/from-env", "HTS_MAX_SIDE": "256", "HTS_SEG_REPO": ""}
    config = SpaceConfig.load(tmp_path, env=env)
    assert (config.model_repo, config.target, config.max_side, config.seg_repo) == ("org/from-env", "t-file", 256, None)
    config = SpaceConfig.load(tmp_path, env=env, model_repo="org/flag", target=None)
    assert (config.model_repo, config.target) == ("org/flag", "t-file")
    assert config.to_json() == {"model_repo": "org/flag", "target": "t-file", "max_side": 256, "max_megapixels": 40.0}


def test_config_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="HTS_MODEL_REPO"):
        SpaceConfig.load(tmp_path, env={})
    with pytest.raises(ConfigError, match="owner/name"):
        SpaceConfig.load(None, env={"HTS_MODEL_REPO": "no-slash"})
    with pytest.raises(ConfigError, match="HTS_MAX_SIDE"):
        SpaceConfig.load(None, env={"HTS_MODEL_REPO": "a/b", "HTS_MAX_SIDE": "big"})
    with pytest.raises(ConfigError, match="between 64 and 8192"):
        SpaceConfig.load(None, env={"HTS_MODEL_REPO": "a/b", "HTS_MAX_SIDE": "10"})
    (tmp_path / CONFIG_FILE).write_text('{"model_repo": "a/b", "hf_token": "x"}')
    with pytest.raises(ConfigError, match="unknown keys"):
        SpaceConfig.load(tmp_path, env={})
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        SpaceConfig.load(tmp_path, env={})


# ----------------------------------------------------------------------------------------- inputs


def _gradient(h: int, w: int) -> np.ndarray:
    return (np.add.outer(np.arange(h), np.arange(w)) % 256).astype(np.uint8)


def test_common_formats_decode_to_rgb_in_unit_range(tmp_path):
    grey = _gradient(40, 60)
    cases = {
        "grey.png": Image.fromarray(grey),
        "rgba.png": Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 7)]), mode="RGBA"),
        "palette.gif": Image.fromarray(grey).convert("P"),
        "photo.jpg": Image.fromarray(np.dstack([grey, grey // 2, grey // 3])),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
    deep = (grey.astype(np.uint16) * 257)
    Image.fromarray(deep).save(tmp_path / "deep16.png")
    tifffile.imwrite(tmp_path / "float.tif", grey.astype(np.float32) / 255.0)
    tifffile.imwrite(tmp_path / "deep16.tiff", deep)
    for name in [*cases, "deep16.png", "float.tif", "deep16.tiff"]:
        image = read_input_image(tmp_path / name)
        assert image.tensor.shape == (3, 40, 60), name
        assert image.tensor.dtype == torch.float32 and 0.0 <= float(image.tensor.min()) <= float(image.tensor.max()) <= 1.0
        assert image.size == image.original_size == (60, 40) and not image.notices
        assert image.display_rgb().shape == (40, 60, 3) and image.display_rgb().dtype == np.uint8
    # 16-bit data is scaled by its own range (65535), giving the same image as the 8-bit file
    assert torch.allclose(read_input_image(tmp_path / "deep16.png").tensor, read_input_image(tmp_path / "grey.png").tensor, atol=1e-4)
    assert "16-bit grayscale" in read_input_image(tmp_path / "deep16.png").description
    assert "alpha dropped" in read_input_image(tmp_path / "rgba.png").description


def test_large_images_are_downscaled_with_a_notice_and_huge_ones_refused(tmp_path):
    Image.fromarray(_gradient(300, 1500)).save(tmp_path / "wide.png")
    image = read_input_image(tmp_path / "wide.png", max_side=1024)
    assert image.original_size == (1500, 300) and image.size == (1024, 205) and image.downscaled
    assert "downscaled to 1024×205" in image.notices[0]
    with pytest.raises(DataError, match=r"1500×300 \(0\.5 megapixels\), above this demo's limit of 0\.1 megapixels; downscale it"):
        read_input_image(tmp_path / "wide.png", max_pixels=100_000)


def test_bad_uploads_get_clear_messages(tmp_path):
    (tmp_path / "notes.png").write_text("this is text, not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "ok.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "ok.png").read_bytes()[:1000])
    Image.fromarray(_gradient(8, 8)).save(tmp_path / "tiny.png")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 32, 32), np.uint8))
    expected = {
        "notes.png": "not an image this demo can read",
        "empty.png": "is empty",
        "truncated.png": "could not be decoded",
        "tiny.png": "at least 16 pixels",
        "stack.tif": "upload one 2-D slice",
        "missing.png": "does not exist",
    }
    for name, message in expected.items():
        with pytest.raises(DataError, match=message):
            read_input_image(tmp_path / name)
    with pytest.raises(DataError, match="no image given"):
        read_input_image(None)


# -------------------------------------------------------------------------------------- inference


@pytest.fixture(scope="module")
def unet():
    from hf_transfer_seg.models.segmentation import SegmentationModel

    torch.manual_seed(0)
    return SegmentationModel("test_resnet", 3, decoder_channels=(32, 16, 8, 8, 8)).eval()


def test_whole_image_forward_gives_a_mask_of_the_input_size(unet):
    segmenter = Segmenter(model=unet, class_names=["background", "a", "b"])
    image = torch.rand(3, 97, 131)
    mask = segmenter.predict(image)
    assert mask.shape == (97, 131) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2}
    # the same as cropping the logits of the padded image by hand
    with torch.inference_mode():
        padded = torch.nn.functional.pad(image[None], (0, 160 - 131, 0, 128 - 97), mode="reflect")
        reference = unet(padded)[0, :, :97, :131].argmax(0).numpy()
    assert np.array_equal(mask, reference)
    # a model trained on downscaled images sees downscaled inputs; the mask keeps the input's size
    small = Segmenter(model=unet, class_names=["background", "a", "b"], resize_longest=64)
    assert small.predict(image).shape == (97, 131)


def test_mask_png_holds_class_indices_with_legend_colours(tmp_path):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:10] = 1
    mask[12:, 20:] = 2
    path = write_mask_png(mask, tmp_path / "m.png", ["background", "grey", "white"])
    with Image.open(path) as img:
        assert img.mode == "P" and img.size == (30, 20)
        assert np.array_equal(np.asarray(img), mask)
        colours = color_map(["background", "grey", "white"])
        palette = img.getpalette()[:9]
        assert "#%02x%02x%02x" % tuple(palette[3:6]) == colours["grey"]
        assert "#%02x%02x%02x" % tuple(palette[6:9]) == colours["white"]
    rgb = np.full((20, 30, 3), 100, np.uint8)
    base, layers = overlay_value(rgb, mask, ["background", "grey", "white"])
    assert base is rgb and [label for _, label in layers] == ["grey", "white"]
    assert float(layers[0][0].max()) > 0 and float(layers[0][0][0, 0]) == 0.0
    blended = blend(rgb, mask)
    assert (blended[0, 0] == rgb[0, 0]).all() and not (blended[6, 6] == rgb[6, 6]).all()
