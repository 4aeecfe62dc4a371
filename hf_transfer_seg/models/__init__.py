"""Model I/O shared by every stage: timm encoder checkpoints (``checkpoint``) and the U-Net (``segmentation``).

Safetensors only. Names load on first use (:mod:`hf_transfer_seg._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_transfer_seg._lazy import attach

_SUBMOD_ATTRS = {
    "checkpoint": ["WEIGHTS_NAME", "download_checkpoint", "load_encoder", "read_config", "save_checkpoint"],
    "segmentation": ["SegmentationModel", "build_model", "load_segmentation_model", "save_segmentation_model"],
}

__getattr__, __dir__, __all__ = attach(__name__, _SUBMOD_ATTRS)

if TYPE_CHECKING:  # pragma: no cover
    from hf_transfer_seg.models.checkpoint import WEIGHTS_NAME, download_checkpoint, load_encoder, read_config, save_checkpoint
    from hf_transfer_seg.models.segmentation import SegmentationModel, build_model, load_segmentation_model, save_segmentation_model
