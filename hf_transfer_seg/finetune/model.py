"""The segmentation network: an smp U-Net whose encoder is the timm model of a checkpoint revision.

segmentation_models_pytorch builds timm encoders as ``tu-<timm name>``: its ``TimmUniversalEncoder``
holds a timm ``features_only`` model in ``encoder.model``. We build that U-Net without weights, then
build the checkpoint's own features-only model with the *same* ``out_indices``
(:func:`hf_transfer_seg.models.checkpoint.load_encoder`, safetensors only) and copy its state dict
over, strictly: every tensor must match by name and shape, so a wrong architecture fails loudly.

Encoders with 5 feature stages at strides 2..32 (ResNets, EfficientNets) and with 4 stages at strides
4..32 (ConvNeXt, Swin: smp adds an empty stride-2 stage) both work. Plain ViTs (one stride) do not:
smp cannot build a U-Net on a single-scale encoder.

The model takes images in [0, 1] and applies the normalisation the encoder was pretrained with
(recorded in its ``pretrained_cfg``), so callers never normalise themselves.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from hf_transfer_seg.errors import WeightsError

log = logging.getLogger(__name__)

# model_args of a pretraining checkpoint that only matter for training it, not for its architecture
# (and those smp sets itself: input channels, feature extraction)
_NOT_ENCODER_ARGS = (
    "drop_rate", "drop_path_rate", "drop_block_rate", "num_classes", "global_pool", "pretrained_cfg",
    "in_chans", "features_only", "out_indices", "output_stride", "pretrained",
)


class SegmentationModel(torch.nn.Module):
    """U-Net (smp) on a timm encoder; input ``[B, 3, H, W]`` in [0, 1], output logits ``[B, K, H, W]``."""

    def __init__(
        self,
        architecture: str,
        num_classes: int,
        *,
        mean: tuple[float, ...] = (0.0, 0.0, 0.0),
        std: tuple[float, ...] = (1.0, 1.0, 1.0),
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
        encoder_args: dict[str, Any] | None = None,
        frozen_encoder: bool = False,
        config: dict[str, Any] | None = None,
    ):
        super().__init__()
        import segmentation_models_pytorch as smp

        self.architecture = architecture
        self.num_classes = num_classes
        self.encoder_args = dict(encoder_args or {})
        self.decoder_channels = tuple(int(c) for c in decoder_channels)
        try:
            self.unet = smp.Unet(
                encoder_name="tu-" + architecture,
                encoder_weights=None,
                classes=num_classes,
                decoder_channels=tuple(decoder_channels),
                **self.encoder_args,
            )
        except ValueError as exc:
            hint = (
                " U-Nets need a hierarchical encoder with feature maps at strides 2..32 or 4..32 (ResNet, ConvNeXt, "
                "EfficientNet, Swin...), not a single-scale one (ViT)."
                if "downsampling" in str(exc)
                else ""
            )
            raise WeightsError(f"cannot build a U-Net on {architecture!r}: {exc}.{hint}") from exc
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.config: dict[str, Any] = dict(config or {})
        self.frozen_encoder = False
        self.frozen_batchnorm_train = False
        if frozen_encoder:
            self.freeze_encoder()

    @property
    def timm_encoder(self) -> torch.nn.Module:
        """The timm features-only model inside smp's encoder."""
        return self.unet.encoder.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet((x - self.mean) / self.std)

    def freeze_encoder(self, *, batchnorm_train: bool = False) -> None:
        """No gradients for the encoder and its BatchNorm statistics fixed (eval mode, kept by :meth:`train`).

        ``batchnorm_train=True`` reproduces the paper's frozen runs, whose BatchNorm layers stayed in
        train mode (running statistics drift with the target data although no weight is trained).
        """
        self.frozen_encoder = True
        self.frozen_batchnorm_train = batchnorm_train
        for p in self.unet.encoder.parameters():
            p.requires_grad_(False)
        self.unet.encoder.train(self.training and batchnorm_train)

    def train(self, mode: bool = True) -> "SegmentationModel":
        super().train(mode)
        if self.frozen_encoder and not self.frozen_batchnorm_train:
            self.unet.encoder.eval()
        return self

    @torch.no_grad()
    def predict_proba(self, image: torch.Tensor, *, window: int | None = None, overlap: float = 0.5) -> torch.Tensor:
        """Class probabilities ``[K, H, W]`` of one ``[3, H, W]`` image in [0, 1], any size (sliding window)."""
        from hf_transfer_seg.finetune.tiles import sliding_window_probs

        was_training = self.training
        self.eval()
        try:
            window = window or int(self.config.get("image_size", 224))
            return sliding_window_probs(self, image, window, overlap=overlap)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def predict(self, image: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Class map ``[H, W]`` (int64) of one ``[3, H, W]`` image in [0, 1]."""
        return self.predict_proba(image, **kwargs).argmax(0)


def encoder_architecture(folder: str | Path) -> tuple[str, dict[str, Any]]:
    """(timm architecture, architecture-relevant model args) of a checkpoint folder."""
    from hf_transfer_seg.models.checkpoint import read_config

    config = read_config(folder)
    args = {k: v for k, v in (config.get("model_args") or {}).items() if k not in _NOT_ENCODER_ARGS}
    return config["architecture"], args


def build_model(
    encoder_folder: str | Path | None,
    num_classes: int,
    *,
    architecture: str | None = None,
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
    freeze_encoder: bool = False,
    frozen_batchnorm_train: bool = False,
) -> SegmentationModel:
    """U-Net with the encoder weights of a checkpoint folder (or random weights for ``architecture``)."""
    from hf_transfer_seg.models.checkpoint import load_encoder, normalization

    if encoder_folder is None:
        if not architecture:
            raise WeightsError("no encoder folder and no architecture: nothing to build")
        return SegmentationModel(architecture, num_classes, decoder_channels=decoder_channels, frozen_encoder=freeze_encoder)
    architecture, encoder_args = encoder_architecture(encoder_folder)
    try:
        model = SegmentationModel(architecture, num_classes, decoder_channels=decoder_channels, encoder_args=encoder_args)
    except (TypeError, ValueError, KeyError, AttributeError, AssertionError, RuntimeError) as exc:
        raise WeightsError(
            f"config.json in {encoder_folder} cannot build a {architecture} encoder (model_args "
            f"{sorted(encoder_args)}): {type(exc).__name__}: {exc}. Fix that revision's config.json or pick another."
        ) from exc
    out_indices = tuple(model.timm_encoder.feature_info.out_indices)
    encoder = load_encoder(encoder_folder, features_only=True, out_indices=out_indices)
    try:
        model.timm_encoder.load_state_dict(encoder.state_dict(), strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"weights in {encoder_folder} do not fit smp's {architecture} encoder: {exc}") from exc
    mean, std = normalization(encoder)
    model.mean.copy_(torch.tensor(mean).view(1, -1, 1, 1))
    model.std.copy_(torch.tensor(std).view(1, -1, 1, 1))
    model.config.update(mean=list(mean), std=list(std))
    if freeze_encoder:
        model.freeze_encoder(batchnorm_train=frozen_batchnorm_train)
    return model
