"""Fine-tuning U-Nets from checkpoint revisions, pushing them and sweeping revisions x seeds.

The U-Net itself, its save/load and sliding-window inference live in
:mod:`hf_transfer_seg.models.segmentation`; ``load_segmentation_model`` is re-exported here::

    from hf_transfer_seg.finetune import load_segmentation_model
    model = load_segmentation_model("org/seg-model", revision=None)
    labels = model.predict(image)  # float [3, H, W] in [0, 1] -> int64 [H, W]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_transfer_seg._lazy import attach

# lazy: importing the package does not import torch/smp
_SUBMOD_ATTRS = {
    "config": ["FinetuneConfig"],
    "loop": ["FinetuneResult", "finetune"],
    "hf_transfer_seg.models.segmentation": ["load_segmentation_model", "save_segmentation_model"],
}

__getattr__, __dir__, __all__ = attach(__name__, _SUBMOD_ATTRS)

if TYPE_CHECKING:  # pragma: no cover
    from hf_transfer_seg.finetune.config import FinetuneConfig
    from hf_transfer_seg.finetune.loop import FinetuneResult, finetune
    from hf_transfer_seg.models.segmentation import load_segmentation_model, save_segmentation_model
