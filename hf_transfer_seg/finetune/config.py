"""The fine-tuning recipe: defaults follow the paper (../shared/docs/paper.md, "Downstream recipe")."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hf_transfer_seg.errors import ConfigError


@dataclass
class FinetuneConfig:
    # encoder: a Hub revision (encoder_repo + revision) or a local checkpoint folder
    encoder_repo: str | None = None
    revision: str = "main"
    encoder_folder: str | None = None
    # target
    target: str = "mni152-tissue"
    target_key: str | None = None
    num_classes: int | None = None
    mask_dir: str | None = None
    fov_dir: str | None = None
    split: str = "train"
    image_column: str | None = None
    mask_column: str | None = None
    resize_longest: int | None = None
    slice_axis: str | None = None  # volumes: axial (default), coronal, sagittal or 0/1/2
    labels: str | None = None  # label volume of a NIfTI / DICOM target
    window: str | None = None  # CT window (name or W,L) instead of fitted percentiles
    intensity_range: str | None = None  # explicit LO,HI instead of fitted percentiles
    limit: int | None = None
    foreground_values: tuple[int, ...] | None = None  # raw mask values of the classes of interest (1..n), others background
    class_names: tuple[str, ...] | None = None  # one name per class, background first
    val_fraction: float = 0.2
    split_seed: int = 0  # fixed across training seeds and revisions so that runs compare on the same images
    # recipe (paper defaults)
    freeze_encoder: bool = False
    frozen_batchnorm_train: bool = False  # the paper's quirk: BatchNorm of a frozen encoder left in train mode
    epochs: int = 150
    batch_size: int = 24
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    loss: str = "soft-dice"  # soft Dice over the batch, background included
    image_size: int = 224  # training crop and evaluation window
    crops_per_image: int | None = None  # None: about one crop per crop-sized area of the image
    eval_overlap: float = 0.5
    augment: bool = True  # random flips and 90-degree rotations
    seed: int = 0
    eval_every: int = 10  # also always after the first and the last epoch
    num_workers: int = 0
    mixed_precision: str = "no"
    decoder_channels: tuple[int, ...] = field(default_factory=lambda: (256, 128, 64, 32, 16))
    # where the run keeps its resume state after each epoch (finetune/resume.py); resume: continue from it
    output_dir: str | None = None
    resume: bool = False

    def validate(self) -> "FinetuneConfig":
        if not self.encoder_repo and not self.encoder_folder:
            raise ConfigError("no encoder given: pass --encoder-repo REPO --revision epoch-NNNN (or --encoder-folder DIR)")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.image_size < 32 or self.image_size % 32:
            raise ConfigError(
                f"--image-size must be a multiple of 32 (the U-Net downsamples 5 times), got {self.image_size}"
            )
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if not 0.0 <= self.eval_overlap < 1.0:
            raise ConfigError(f"eval overlap must be in [0, 1), got {self.eval_overlap}")
        if self.loss not in ("soft-dice", "soft-dice+ce"):
            raise ConfigError(f"unknown loss {self.loss!r}; choose soft-dice or soft-dice+ce")
        if self.resume and not self.output_dir:
            raise ConfigError("--resume continues from the state saved in --output-dir; pass the interrupted run's --output-dir")
        if self.foreground_values is not None:
            self.foreground_values = tuple(int(v) for v in self.foreground_values)
        if self.class_names is not None:
            self.class_names = tuple(str(n) for n in self.class_names)
        self.decoder_channels = tuple(int(c) for c in self.decoder_channels)
        return self

    def recipe(self) -> dict[str, Any]:
        """The facts that make two fine-tuning runs comparable (recorded in cards)."""
        return {
            "loss": self.loss,
            "optimizer": "SGD",
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "schedule": f"poly({self.poly_power}) per step",
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "image_size": self.image_size,
            "frozen": self.freeze_encoder,
            **({"frozen_batchnorm_train": True} if self.freeze_encoder and self.frozen_batchnorm_train else {}),
            "augment": self.augment,
            "resize_longest": self.resize_longest,
            **({"slice_axis": self.slice_axis} if self.slice_axis else {}),
            **({"window": self.window} if self.window else {}),
            **({"intensity_range": self.intensity_range} if self.intensity_range else {}),
            "val_fraction": self.val_fraction,
            "split_seed": self.split_seed,
            "decoder_channels": list(self.decoder_channels),
            **({"foreground_values": list(self.foreground_values)} if self.foreground_values else {}),
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["decoder_channels"] = list(self.decoder_channels)
        for key in ("foreground_values", "class_names"):
            out[key] = list(out[key]) if out[key] is not None else None
        return out
