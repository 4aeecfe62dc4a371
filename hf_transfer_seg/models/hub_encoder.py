"""Any Hub vision encoder as a feature extractor: timm Hub repos and transformers vision backbones.

A model SPEC is ``owner/name`` or ``owner/name@revision``. The revision is resolved to a commit sha
first; only JSON configs and safetensors weights are downloaded, so nothing is ever unpickled (a
repository that has only ``.bin``/``.pth`` weights is reported as skipped with the reason).

- timm (``config.json`` with ``architecture``, the project's own revisions included): built by
  :func:`~hf_transfer_seg.models.checkpoint.load_encoder` with ``features_only=True``; mean, std and
  input size come from ``pretrained_cfg``.
- transformers (``config.json`` with ``model_type``): ``AutoBackbone`` (every stage) when the model
  type has one (ConvNeXt, Swin, DINOv2, ResNet...), else ``AutoModel`` with ``output_hidden_states``
  (ViT-style): token sequences lose their CLS/register tokens and become ``[B, C, h, w]`` maps.
  Mean, std and input size come from ``preprocessor_config.json`` (the image processor's settings).

Every encoder here returns the list of feature maps, shallow to deep, as NCHW; ``pretrained_cfg``
holds ``mean``, ``std`` and ``input_size`` for whoever feeds it.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_transfer_seg.errors import ConfigError, WeightsError
from hf_transfer_seg.models.checkpoint import PICKLE_SUFFIXES, WEIGHTS_NAME, load_encoder

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONFIG_FILES = ["config.json", "preprocessor_config.json"]
SAFETENSORS = ["*.safetensors", "*.safetensors.index.json"]


@dataclass
class ModelSpec:
    """``repo_id@revision`` as given, and the commit sha it resolved to."""

    spec: str
    repo_id: str
    revision: str
    sha: str | None = None
    files: list[str] = field(default_factory=list)


def parse_spec(spec: str) -> ModelSpec:
    """``owner/name`` or ``owner/name@revision`` (revision default ``main``)."""
    text = str(spec).strip()
    repo_id, _, revision = text.partition("@")
    if not repo_id or repo_id.count("/") > 1 or " " in repo_id or (text.count("@") > 1):
        raise ConfigError(f"model {spec!r} is not a Hub repo id; write owner/name or owner/name@revision (a branch, tag or sha)")
    return ModelSpec(spec=text, repo_id=repo_id, revision=revision or "main")


def resolve_spec(spec: ModelSpec, api=None) -> ModelSpec:
    """Fill ``sha`` and ``files`` from the Hub (raises the Hub's error when the repo or revision is missing)."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    info = api.model_info(spec.repo_id, revision=spec.revision, files_metadata=False)
    spec.sha = info.sha
    spec.files = sorted(s.rfilename for s in (info.siblings or []))
    return spec


def unusable_reason(spec: ModelSpec) -> str | None:
    """Why a resolved repo cannot be loaded without unpickling (None when it has safetensors weights)."""
    if any(fnmatch.fnmatch(f, "*.safetensors") for f in spec.files):
        if "config.json" not in spec.files:
            return "no config.json: neither a timm Hub repo (architecture) nor a transformers model (model_type)"
        return None
    pickles = [f for f in spec.files if f.endswith(PICKLE_SUFFIXES)]
    if pickles:
        return (
            f"only pickle weights ({', '.join(pickles[:3])}), which are never downloaded or unpickled; "
            "a safetensors conversion of the repo would be ranked"
        )
    return "no weights (no *.safetensors file)"


def download_spec(spec: ModelSpec, cache_dir: str | Path | None = None) -> Path:
    """Configs and safetensors weights of a resolved spec, by sha."""
    from hf_transfer_seg.hub import download_revision

    if spec.sha is None:
        raise ValueError("resolve the spec first")
    return download_revision(spec.repo_id, spec.sha, allow_patterns=CONFIG_FILES + SAFETENSORS, cache_dir=cache_dir)


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path.name} is not valid JSON: {exc}") from exc


def family_of(folder: Path) -> str:
    """``timm`` or ``transformers`` from ``config.json``."""
    config = read_json(Path(folder) / "config.json")
    if "architecture" in config:
        return "timm"
    if "model_type" in config:
        return "transformers"
    raise WeightsError("config.json has neither 'architecture' (timm) nor 'model_type' (transformers)")


def _side(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in ("height", "shortest_edge", "width"):
            if key in value:
                return int(value[key])
    if isinstance(value, (list, tuple)) and value:
        return int(value[-1])
    return None


def processor_cfg(folder: Path, model_config: dict[str, Any]) -> dict[str, Any]:
    """mean, std and square input size of a transformers model, from its image processor's settings."""
    proc = read_json(Path(folder) / "preprocessor_config.json")
    mean = tuple(float(v) for v in proc.get("image_mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in proc.get("image_std", IMAGENET_STD))
    side = None
    if proc.get("do_center_crop", "crop_size" in proc):
        side = _side(proc.get("crop_size"))
    side = side or _side(proc.get("size")) or _side(model_config.get("image_size")) or 224
    if not proc.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return {"mean": mean, "std": std, "input_size": (3, side, side), "source": "preprocessor_config.json" if proc else "defaults"}


def tokens_to_map(tokens: torch.Tensor, height: int, width: int, patch: int) -> torch.Tensor:
    """``[B, P + h*w, C]`` (P prefix tokens: CLS, registers) -> ``[B, C, h, w]``."""
    h, w = height // patch, width // patch
    b, n, c = tokens.shape
    prefix = n - h * w
    if prefix < 0:
        side = math.isqrt(n)
        raise WeightsError(f"{n} tokens do not fit a {h}x{w} patch grid (nearest square {side}x{side})")
    return tokens[:, prefix:].transpose(1, 2).reshape(b, c, h, w)


class TransformersEncoder(torch.nn.Module):
    """A transformers vision model as a list of NCHW feature maps (backbone stages or hidden states)."""

    output_fmt = "NCHW"

    def __init__(self, model: torch.nn.Module, *, backbone: bool, patch: int | None, pretrained_cfg: dict[str, Any]):
        super().__init__()
        self.model = model
        self.backbone = backbone
        self.patch = patch
        self.pretrained_cfg = pretrained_cfg

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.backbone:
            return list(self.model(pixel_values=x).feature_maps)
        out = self.model(pixel_values=x, output_hidden_states=True)
        states = getattr(out, "reshaped_hidden_states", None) or out.hidden_states
        maps = []
        for s in states[1:]:  # [0] is the patch embedding
            if s.ndim == 4:
                maps.append(s)
            elif s.ndim == 3 and self.patch:
                maps.append(tokens_to_map(s, x.shape[-2], x.shape[-1], self.patch))
            else:
                raise WeightsError(f"cannot bring hidden states of shape {tuple(s.shape)} to a feature map")
        return maps


def load_transformers_encoder(folder: Path) -> TransformersEncoder:
    """A transformers vision model from a folder (safetensors only, no remote code)."""
    import transformers
    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES

    folder = Path(folder)
    config_dict = read_json(folder / "config.json")
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    cfg = processor_cfg(folder, config_dict)
    kwargs = dict(use_safetensors=True, trust_remote_code=False)
    if config.model_type in MODEL_FOR_BACKBONE_MAPPING_NAMES:
        stages = len(getattr(config, "stage_names", []) or [])
        out_indices = list(range(1, stages)) if stages > 1 else None
        # the concrete class: AutoBackbone.from_pretrained treats a local folder as a timm model name
        backbone_cls = getattr(transformers, MODEL_FOR_BACKBONE_MAPPING_NAMES[config.model_type])
        model = backbone_cls.from_pretrained(str(folder), out_indices=out_indices, **kwargs)
        encoder = TransformersEncoder(model, backbone=True, patch=None, pretrained_cfg=cfg)
    else:
        model = AutoModel.from_pretrained(str(folder), **kwargs)
        patch = getattr(config, "patch_size", None)
        patch = patch[0] if isinstance(patch, (list, tuple)) else patch
        encoder = TransformersEncoder(model, backbone=False, patch=patch, pretrained_cfg=cfg)
    bad = [n for n, p in encoder.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise WeightsError(f"weights contain NaN/Inf in {len(bad)} tensors (first: {bad[0]})")
    return encoder.eval().requires_grad_(False)


def load_any_encoder(folder: str | Path) -> torch.nn.Module:
    """The feature encoder of a downloaded timm or transformers folder, eval mode, NCHW outputs."""
    folder = Path(folder)
    family = family_of(folder)
    if family == "timm":
        if not (folder / WEIGHTS_NAME).is_file():
            raise WeightsError(f"timm repo without {WEIGHTS_NAME}")
        model = load_encoder(folder, features_only=True)
        cfg = dict(model.pretrained_cfg)
        cfg.setdefault("input_size", (3, 224, 224))
        model.pretrained_cfg = cfg
        return model.eval().requires_grad_(False)
    return load_transformers_encoder(folder)


def input_side(model: torch.nn.Module, default: int = 224) -> int:
    """The square input size a model's preprocessing asks for."""
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    return int(size[-1]) if size else default


def describe(model: torch.nn.Module) -> str:
    if isinstance(model, TransformersEncoder):
        kind = "AutoBackbone" if model.backbone else "hidden states"
        return f"transformers {type(model.model).__name__} ({kind})"
    return f"timm {(getattr(model, 'pretrained_cfg', None) or {}).get('architecture', type(model).__name__)}"
