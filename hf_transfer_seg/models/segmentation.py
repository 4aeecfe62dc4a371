"""The segmentation network: an smp U-Net whose encoder is the timm model of a checkpoint revision,
its sliding-window inference, and its save/load in smp's own Hub format (``config.json`` with
``_model_class`` + ``model.safetensors``; ``segmentation_models_pytorch.from_pretrained`` loads it).

A pushed segmentation model loads back with one call that needs no other repository::

    from hf_transfer_seg.models.segmentation import load_segmentation_model
    model = load_segmentation_model("org/seg-model")            # or a local folder
    labels = model.predict(image)  # float [3, H, W] in [0, 1] -> int64 [H, W]

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

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hf_transfer_seg.errors import WeightsError
from hf_transfer_seg.models.checkpoint import WEIGHTS_NAME, load_encoder, normalization, read_config

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
MODEL_TYPE = "hf-transfer-seg/unet"
DECODER_CHANNELS = (256, 128, 64, 32, 16)
DEFAULT_WINDOW = 224  # sliding window when the model's config records no training image size

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
        decoder_channels: tuple[int, ...] = DECODER_CHANNELS,
        encoder_args: dict[str, Any] | None = None,
        frozen_encoder: bool = False,
        config: dict[str, Any] | None = None,
        unet: torch.nn.Module | None = None,
    ):
        super().__init__()
        import segmentation_models_pytorch as smp

        self.architecture = architecture
        self.num_classes = num_classes
        self.encoder_args = dict(encoder_args or {})
        self.decoder_channels = tuple(int(c) for c in decoder_channels)
        try:
            self.unet = unet if unet is not None else smp.Unet(
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
        was_training = self.training
        self.eval()
        try:
            window = window or int(self.config.get("image_size", DEFAULT_WINDOW))
            return sliding_window_probs(self, image, window, overlap=overlap)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def predict(self, image: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Class map ``[H, W]`` (int64) of one ``[3, H, W]`` image in [0, 1]."""
        return self.predict_proba(image, **kwargs).argmax(0)


def encoder_architecture(folder: str | Path) -> tuple[str, dict[str, Any]]:
    """(timm architecture, architecture-relevant model args) of a checkpoint folder."""
    config = read_config(folder)
    args = {k: v for k, v in (config.get("model_args") or {}).items() if k not in _NOT_ENCODER_ARGS}
    return config["architecture"], args


def build_model(
    encoder_folder: str | Path | None,
    num_classes: int,
    *,
    architecture: str | None = None,
    decoder_channels: tuple[int, ...] = DECODER_CHANNELS,
    freeze_encoder: bool = False,
    frozen_batchnorm_train: bool = False,
) -> SegmentationModel:
    """U-Net with the encoder weights of a checkpoint folder (or random weights for ``architecture``)."""
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


# ------------------------------------------------------------------------------ sliding-window inference


@torch.no_grad()
def sliding_window_probs(
    model: torch.nn.Module, image: torch.Tensor, window: int, *, overlap: float = 0.5, batch_size: int = 16
) -> torch.Tensor:
    """Softmax probabilities ``[K, H, W]`` of a ``[3, H, W]`` image, from overlapping windows averaged.

    MONAI's ``sliding_window_inference`` (``mode="constant"``: a plain average of the overlapping windows' softmax,
    windows every ``floor(window * (1 - overlap))`` px, the last one flush with the border; imported on first use).
    An image smaller than ``window`` is first padded with zeros after its last row / column (MONAI would pad both
    sides; this keeps the results of the hand-written version this replaced, to the bit on the test model) and
    cropped back afterwards. ``benchmarks/sliding_window.py`` times it against that version.
    """
    from hf_transfer_seg._lazy import MONAI_UNUSED, import_lean

    sliding_window_inference = import_lean("monai.inferers", MONAI_UNUSED).sliding_window_inference
    device = next(model.parameters()).device
    _, h, w = image.shape
    ph, pw = max(h, window), max(w, window)
    padded = F.pad(image, (0, pw - w, 0, ph - h)) if (ph, pw) != (h, w) else image
    probs = sliding_window_inference(
        padded[None].to(device), (window, window), batch_size, lambda x: model(x).float().softmax(dim=1),
        overlap=overlap, mode="constant",
    )
    return probs[0, :, :h, :w].float().cpu()


def at_training_scale(scores, image: torch.Tensor, longest: int | None) -> torch.Tensor:
    """``scores`` (``[3, h, w]`` image -> ``[K, h, w]``) of ``image``, run where the model was trained: an image longer
    than ``longest`` px is downscaled first (bilinear, antialiased) and the scores brought back to its size (bilinear),
    so the argmax has the input's geometry. The Space and ``predict`` both use it."""
    h, w = image.shape[1:]
    scale = longest / max(h, w) if longest else 1.0
    if scale >= 1.0:
        return scores(image)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return F.interpolate(scores(small)[None], size=(h, w), mode="bilinear", align_corners=False)[0]


# ------------------------------------------------------------------------------------- save and load
#
# smp's own Hub format: ``config.json`` holds ``_model_class: "Unet"`` and the U-Net's init arguments,
# ``model.safetensors`` the U-Net's weights, so ``segmentation_models_pytorch.from_pretrained(repo)`` returns
# the network. What smp does not know (the encoder's input normalisation, class names, the intensity
# normalisation of the training data, the training window) goes under ``_hf_transfer_seg`` in the same
# config.json: smp drops keys starting with ``_`` before building the model.

EXTRA_KEY = "_hf_transfer_seg"


def save_segmentation_model(model: SegmentationModel, folder: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``folder`` in smp's Hub format (``config.json`` + ``model.safetensors``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    had_card = (folder / "README.md").exists()
    model.unet.save_pretrained(folder)  # smp's config.json (with _model_class) and model.safetensors
    if not had_card:
        (folder / "README.md").unlink(missing_ok=True)  # the caller writes the card (smp's template says little)
    config = json.loads((folder / CONFIG_NAME).read_text())
    config[EXTRA_KEY] = {
        "model_type": MODEL_TYPE,
        "architecture": model.architecture,
        "encoder_args": model.encoder_args,
        "num_classes": model.num_classes,
        "mean": [float(v) for v in model.mean.flatten()],
        "std": [float(v) for v in model.std.flatten()],
        "decoder_channels": list(model.decoder_channels),
        **{k: v for k, v in model.config.items() if k not in ("mean", "std")},
        **(extra or {}),
    }
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=str))
    return folder


def load_segmentation_model(repo_id_or_path: str | Path, revision: str | None = None) -> SegmentationModel:
    """Load a pushed (or saved) segmentation model, in eval mode. Needs no other repository.

    A thin wrapper over ``segmentation_models_pytorch.from_pretrained``: the U-Net comes from smp, the
    wrapper adds the recorded input normalisation (images in [0, 1] in, logits out) and the config.
    """
    import segmentation_models_pytorch as smp

    path = Path(repo_id_or_path)
    if path.is_dir():
        folder = path
    else:
        from hf_transfer_seg import hub

        sha = hub.branch_sha(str(repo_id_or_path), revision or "main")
        folder = hub.download_revision(str(repo_id_or_path), sha, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME])
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise WeightsError(
            f"{repo_id_or_path} has no {CONFIG_NAME} + {WEIGHTS_NAME}; push it with "
            "`hf-transfer-seg finetune ... --push-to REPO`"
        )
    raw = json.loads((folder / CONFIG_NAME).read_text())
    config = raw.get(EXTRA_KEY) or {}
    if config.get("model_type") != MODEL_TYPE or raw.get("_model_class") != "Unet":
        raise WeightsError(
            f"{repo_id_or_path} is not an hf-transfer-seg segmentation model (no smp Unet config with {EXTRA_KEY}); "
            "save it with hf-transfer-seg finetune --push-to / --output-dir"
        )
    try:
        unet = smp.from_pretrained(str(folder))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise WeightsError(f"weights of {repo_id_or_path} do not fit its config: {exc}") from exc
    model = SegmentationModel(
        config["architecture"],
        int(config["num_classes"]),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        decoder_channels=tuple(config.get("decoder_channels") or DECODER_CHANNELS),
        encoder_args=config.get("encoder_args") or {},
        config=config,
        unet=unet,
    )
    return model.eval()
