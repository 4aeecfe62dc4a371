"""The Space's work behind the UI: load the pinned segmentation models once, segment uploads.

Kept free of Gradio so that tests, the benchmark and the UI call the very same code.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hf_transfer_seg.errors import ConfigError
from hf_transfer_seg.space.config import SpaceConfig
from hf_transfer_seg.space.inference import Segmenter, write_mask_png
from hf_transfer_seg.data.intensity import model_input
from hf_transfer_seg.space.inputs import InputImage, read_input_image
from hf_transfer_seg.space.selection import SegModelRef, Selection

log = logging.getLogger(__name__)

# Builds a Segmenter for a pinned segmentation repo (repo_id, sha). Injected so that the UI does not
# depend on how fine-tuning stores its models.
SegmenterLoader = Callable[[str, str], Segmenter]


def commits_note(ref: SegModelRef) -> dict[str, str]:
    """``{"commits_note": ...}`` when fine-tuning downloaded the encoder from another commit of the revision than
    ``encoder_commit`` (selection shows that one only when both hold the same model.safetensors); else ``{}``."""
    downloaded = ref.encoder_downloaded_sha
    if not downloaded or not ref.encoder_sha or downloaded == ref.encoder_sha:
        return {}
    return {"commits_note": (
        f"fine-tuning downloaded {ref.encoder_revision} at commit {downloaded[:10]}, another commit of the same branch "
        f"(revision branches also get card-only commits: the score, the Dice); its model.safetensors is the same file "
        f"as at encoder_commit {ref.encoder_sha[:10]} ({ref.encoder_weights_id or 'same content'})"
    )}


@dataclass
class Result:
    image: InputImage
    mask: np.ndarray  # uint8 [H, W] class indices, same size as image.tensor
    mask_path: Path
    model: SegModelRef
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)


class SegmentationService:
    def __init__(self, config: SpaceConfig, selection: Selection, loader: SegmenterLoader):
        self.config = config
        self.selection = selection
        self._loader = loader
        self._segmenters: dict[tuple[str, str], Segmenter] = {}
        self._lock = threading.Lock()
        self._outputs = Path(tempfile.mkdtemp(prefix="hts-space-"))

    @property
    def models(self) -> list[SegModelRef]:
        return self.selection.seg_models

    def model_by_label(self, label: str | None) -> SegModelRef:
        for m in self.models:
            if m.label == label:
                return m
        raise ConfigError(f"unknown model {label!r}; choose one of: {', '.join(m.label for m in self.models)}")

    def segmenter(self, ref: SegModelRef) -> Segmenter:
        """The loaded model of ``ref`` (loaded once, by commit sha)."""
        key = (ref.repo_id, ref.sha)
        with self._lock:
            if key not in self._segmenters:
                start = time.perf_counter()
                self._segmenters[key] = self._loader(ref.repo_id, ref.sha)
                log.info("loaded %s@%s in %.1fs", ref.repo_id, ref.sha[:10], time.perf_counter() - start)
            return self._segmenters[key]

    def warm_up(self) -> None:
        """Load the served model before the first visitor arrives."""
        if self.selection.serving is not None:
            self.segmenter(self.selection.serving)

    def _prune_outputs(self, max_age_s: float = 600.0) -> None:
        """Forget mask files older than ``max_age_s``: Gradio has copied them into its own cache by then."""
        cutoff = time.time() - max_age_s
        for folder in self._outputs.iterdir():
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:  # pruned by a concurrent request
                pass

    def read(self, path: str | Path | None) -> InputImage:
        return read_input_image(path, max_side=self.config.max_side, max_pixels=self.config.max_pixels)

    def segment(self, image: InputImage, ref: SegModelRef | None = None) -> Result:
        ref = ref or self.selection.serving
        if ref is None:
            raise ConfigError(" ".join(self.selection.notices) or "no segmentation model to serve")
        segmenter = self.segmenter(ref)
        start = time.perf_counter()
        mask = segmenter.predict(model_input(image.tensor, image.raw, getattr(segmenter, "intensity", None)))
        elapsed = time.perf_counter() - start
        self._prune_outputs()
        out = Path(tempfile.mkdtemp(dir=self._outputs)) / "mask.png"
        write_mask_png(mask, out, segmenter.class_names)
        sel = self.selection
        info = {
            "encoder_repo": sel.encoder_repo,
            "encoder_revision": ref.encoder_revision,
            # one commit per revision (space/selection.py): the commit the leaderboard and the score name
            "encoder_commit": ref.encoder_sha,
            "encoder_weights": ref.encoder_weights_id,  # model.safetensors at that commit: sha256 (LFS) or git blob id
            "best_revision": sel.best_revision,
            "best_commit": sel.best_sha,
            "served_by_best": bool(sel.best_revision) and ref.encoder_revision == sel.best_revision,
            "score_target": sel.target,
            "score_config": sel.score_config,
            "seg_repo": ref.repo_id,
            "seg_commit": ref.sha,
            "seg_target": ref.target,
            "summary_commit": sel.main_sha,
            **commits_note(ref),
            "input": image.description,
            "mask_size": [int(mask.shape[1]), int(mask.shape[0])],
            "mask_values": {name: i for i, name in enumerate(segmenter.class_names)},
            "class_fraction": {
                name: round(float((mask == i).mean()), 4) for i, name in enumerate(segmenter.class_names)
            },
            "inference_ms": round(elapsed * 1000, 1),
            "notices": list(image.notices),
        }
        return Result(image, mask, out, ref, list(segmenter.class_names), info)
