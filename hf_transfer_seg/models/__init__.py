"""Models: timm encoders in timm Hub format (safetensors only)."""

from hf_transfer_seg.models.checkpoint import (
    WEIGHTS_NAME,
    load_encoder,
    read_config,
    save_checkpoint,
)

__all__ = ["WEIGHTS_NAME", "load_encoder", "read_config", "save_checkpoint"]
