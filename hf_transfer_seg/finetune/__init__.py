"""Fine-tuning U-Nets from checkpoint revisions, segmentation metrics, pushing and sweeping.

One call loads a pushed segmentation model::

    from hf_transfer_seg.finetune import load_segmentation_model
    model = load_segmentation_model("org/seg-model", revision=None)
    labels = model.predict(image)  # float [3, H, W] in [0, 1] -> int64 [H, W]
"""

from __future__ import annotations

from typing import Any

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "load_segmentation_model", "save_segmentation_model"]


def __getattr__(name: str) -> Any:  # lazy: importing the package does not import torch/smp
    if name == "FinetuneConfig":
        from hf_transfer_seg.finetune.config import FinetuneConfig

        return FinetuneConfig
    if name in ("FinetuneResult", "finetune"):
        from hf_transfer_seg.finetune import loop

        return getattr(loop, name)
    if name in ("load_segmentation_model", "save_segmentation_model"):
        from hf_transfer_seg.finetune import push

        return getattr(push, name)
    raise AttributeError(name)
