"""``hf-transfer-seg predict``: masks from a fine-tuned segmentation model, with the inputs' own geometry.

The model comes from the Hub (``REPO[@REVISION]``) or a saved folder, through
:func:`hf_transfer_seg.models.segmentation.load_segmentation_model` (``config.json`` + ``model.safetensors``
only; nothing is unpickled). Each image, or each slice of a volume along the axis the model was trained on,
is segmented with the same sliding window as validation (:func:`~hf_transfer_seg.models.segmentation.sliding_window_probs`,
the recorded window and overlap), after the recorded intensity normalisation and downscaling; probabilities
are brought back to the input's size before the argmax, so every mask has the input's geometry
(:mod:`hf_transfer_seg.data.predict_inputs`).

Nothing is half-written: masks go to a hidden temporary folder beside the output, which is renamed to the
output folder once every input is done; any failure removes it. ``predictions.json`` lists what was made
(model, revision sha, class names, input -> mask, sizes); it names files, never local paths.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_transfer_seg.data.predict_inputs import PredictInput, find_inputs, read_volume
from hf_transfer_seg.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def parse_model_ref(text: str) -> tuple[str, str | None]:
    """``REPO[@REVISION]`` (or a local folder) -> (repo or path, revision)."""
    if Path(text).expanduser().is_dir():
        return str(Path(text).expanduser()), None
    repo, sep, revision = str(text).rpartition("@")
    if not sep:
        return str(text), None
    if not repo or not revision:
        raise ConfigError(f"--model {text!r}: write REPO or REPO@REVISION (a branch, tag or commit sha)")
    return repo, revision


def check_output(path: str | Path) -> Path:
    """The output folder must not exist yet, or be empty: predictions never mix with or replace other files."""
    out = Path(path).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output {out} already exists and is not an empty folder; choose a new -o folder")
    return out


class Predictor:
    """A loaded segmentation model and what it recorded at training (window, intensity, resizing, slice axis)."""

    def __init__(self, model):
        self.model = model.eval()
        config = model.config
        self.window = int(config.get("image_size") or 224)
        self.overlap = float(config.get("eval_overlap") or 0.5)
        self.resize_longest = config.get("resize_longest")
        self.intensity = config.get("intensity")
        self.slice_axis = config.get("slice_axis")
        self.class_names = [str(n) for n in config.get("class_names") or []] or [f"class_{i}" for i in range(model.num_classes)]

    @property
    def trained_on_8bit(self) -> bool:
        return not self.intensity or (self.intensity or {}).get("mode") == "unit8"

    @torch.no_grad()
    def labels(self, image: torch.Tensor) -> np.ndarray:
        """Class map ``[H, W]`` of a normalised ``[3, H, W]`` image, at the image's own size."""
        from hf_transfer_seg.models.segmentation import at_training_scale, sliding_window_probs

        def probs(x: torch.Tensor) -> torch.Tensor:
            return sliding_window_probs(self.model, x.clamp(0, 1), self.window, overlap=self.overlap)

        return at_training_scale(probs, image, self.resize_longest).argmax(0).numpy().astype(np.int64)


def _image_input(path: Path, predictor: Predictor) -> tuple[torch.Tensor, tuple[int, int]]:
    from hf_transfer_seg.data.images import channels_first, read_array, to_rgb_tensor
    from hf_transfer_seg.data.intensity import model_input

    array = read_array(path)
    try:
        image01 = to_rgb_tensor(array, path.name)
    except DataError as exc:
        raise DataError(f"predict input {path.name}: {exc}; predict takes 2-D images (save stacks as NIfTI)") from None
    raw = None if array.dtype == np.uint8 else torch.from_numpy(channels_first(array, path.name).astype(np.float32))
    if raw is not None and raw.shape[0] == 2:
        raw = raw[:1]
    return model_input(image01, raw, predictor.intensity), (int(image01.shape[1]), int(image01.shape[2]))


def _predict_volume(item: PredictInput, predictor: Predictor, out: Path, progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from hf_transfer_seg.data.intensity import Intensity, to_three_channels
    from hf_transfer_seg.data.mask_files import write_nifti

    if predictor.trained_on_8bit:
        raise DataError(
            f"predict input {item.path.name} is a volume, but the model was trained on 8-bit 2-D images (no intensity "
            "range recorded); segment PNG/TIFF images with it, or use a model fine-tuned on volumes"
        )
    data = read_volume(item)
    volume = data.volume
    if volume.array.shape[0] != 1:
        raise DataError(f"predict input {item.path.name} has {volume.array.shape[0]} channels; predict takes one-channel volumes")
    intensity = Intensity.from_dict(predictor.intensity)
    axis = volume.axis_for(predictor.slice_axis)
    n, get, _ = volume.slices(axis)
    slices = []
    for i in tqdm(range(n), desc=item.path.name, unit="slice", leave=False, disable=not progress):
        slices.append(predictor.labels(to_three_channels(intensity.apply(get(i)))))
    labels = np.stack(slices, axis=axis)
    write_nifti(labels, data.affine, out / item.output_name, header=data.header)
    return {"shape": list(labels.shape), "slice_axis": axis}


def predict_folder(inputs: str | Path, output: str | Path, model_ref: str, *, progress: bool = True) -> dict[str, Any]:
    """Segment every input of ``inputs`` into ``output`` (created, all or nothing); returns the manifest."""
    from tqdm.auto import tqdm

    from hf_transfer_seg.data.mask_files import write_mask
    from hf_transfer_seg.models.segmentation import load_segmentation_model

    out = check_output(output)
    items = find_inputs(inputs)
    repo, revision = parse_model_ref(model_ref)
    predictor = Predictor(load_segmentation_model(repo, revision))
    sha = None
    if not Path(repo).is_dir():
        from hf_transfer_seg import hub

        sha = hub.branch_sha(repo, revision or "main")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would outlive the rename
    manifest: dict[str, Any] = {
        "model": Path(repo).name if Path(repo).is_dir() else repo, "revision": revision or ("main" if sha else None), "sha": sha,
        "class_names": predictor.class_names, "mask_values": {n: i for i, n in enumerate(predictor.class_names)},
        "window": predictor.window, "overlap": predictor.overlap, "masks": [],
    }
    try:
        for item in tqdm(items, desc="predict", unit="input", disable=not progress):
            if item.volumetric:
                facts = _predict_volume(item, predictor, tmp, progress)
            else:
                image, size = _image_input(item.path, predictor)
                write_mask(predictor.labels(image), tmp / item.output_name)
                facts = {"shape": list(size)}
            manifest["masks"].append({"input": item.path.name, "kind": item.kind, "mask": item.output_name, **facts})
        (tmp / "predictions.json").write_text(json.dumps(manifest, indent=2))
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
