"""Feature levels of a timm ``features_only`` encoder, for both views, batched, as ``[B, C, H, W]`` maps."""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hf_transfer_seg.errors import ConfigError, WeightsError
from hf_transfer_seg.models.checkpoint import load_encoder, normalization
from hf_transfer_seg.scoring.grid import DrawnDistances, PairDistanceAccumulator, PairDistances
from hf_transfer_seg.scoring.plan import ScoringPlan
from hf_transfer_seg.scoring.views import expand

PRECISIONS = ("fp32", "bf16", "fp16")


def load_scoring_encoder(folder: str | Path) -> torch.nn.Module:
    """The checkpoint's encoder with every feature stage, in eval mode (safetensors only, NaN weights refused)."""
    model = load_encoder(folder, features_only=True)
    return model.eval().requires_grad_(False)


def to_nchw(feature: torch.Tensor, output_fmt: str = "NCHW") -> torch.Tensor:
    """A stage output as ``[B, C, H, W]``: NHWC maps are permuted, ``[B, N, C]`` square token grids reshaped."""
    if feature.ndim == 4:
        return feature.permute(0, 3, 1, 2) if str(getattr(output_fmt, "value", output_fmt)) == "NHWC" else feature
    if feature.ndim == 3:
        b, n, c = feature.shape
        side = math.isqrt(n)
        if side * side != n:
            raise WeightsError(
                f"cannot bring a token sequence of length {n} to a square map; use an encoder whose features_only "
                "output is a spatial map (timm CNNs, Swin, ViT with features_only=True)"
            )
        return feature.transpose(1, 2).reshape(b, c, side, side)
    raise WeightsError(f"unexpected feature shape {tuple(feature.shape)} from the encoder")


def feature_levels(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every feature stage of ``model`` for batch ``x``, shallow to deep, as NCHW."""
    out = model(x)
    if isinstance(out, torch.Tensor):
        out = [out]
    fmt = getattr(model, "output_fmt", "NCHW")
    return [to_nchw(f, fmt) for f in out]


def _autocast(device: torch.device, precision: str):
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def pair_distances(
    model: torch.nn.Module,
    plan: ScoringPlan,
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: bool = False,
    desc: str = "score",
) -> PairDistances:
    """Two forward passes (the views, as one batch of ``2B``) per batch; every pair distance of the grid.

    The views are normalised with the mean/std recorded in the checkpoint *after* jitter. Features
    that are NaN/Inf raise :class:`WeightsError` naming the level.
    """
    device = torch.device(device)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    model = model.to(device)
    mean, std = normalization(model)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    acc = PairDistanceAccumulator(plan.negative)
    m = plan.num_images
    # On an accelerator, move both views once per revision rather than once per batch.
    view1, view2 = (plan.view1, plan.view2) if device.type == "cpu" else (plan.view1.to(device), plan.view2.to(device))
    bar = tqdm(total=m, desc=desc, unit="img", disable=not progress, leave=False)
    _autocast(device, precision)  # validates the name before any work
    with torch.inference_mode():
        for start in range(0, m, batch_size):
            v1 = view1[start : start + batch_size]
            v2 = view2[start : start + batch_size]
            b = v1.shape[0]
            x = expand(torch.cat([v1, v2]).to(device))  # later draws of views are stored as uint8
            with _autocast(device, precision):
                levels = feature_levels(model, (x - mean_t) / std_t)
            for i, f in enumerate(levels):
                if not torch.isfinite(f).all():
                    raise WeightsError(
                        f"the encoder's features are NaN/Inf at level {i - len(levels)} (images {start}..{start + b - 1}); "
                        "the checkpoint is unusable for scoring (diverged training or broken weights)"
                    )
            acc.add_stacked(levels)  # [view1; view2] rows, as the forward pass produced them
            bar.update(b)
    bar.close()
    return acc.result()


def plan_distances(model: torch.nn.Module, plan: ScoringPlan, **kwargs) -> DrawnDistances:
    """:func:`pair_distances` of every draw of views and negatives of ``plan`` (one pass per draw)."""
    draws = plan.all_draws()
    parts = []
    for k, draw in enumerate(draws):
        if len(draws) > 1 and kwargs.get("desc"):
            kwargs = {**kwargs, "desc": f"{kwargs['desc'].split(' [')[0]} [views {k + 1}/{len(draws)}]"}
        parts.append(pair_distances(model, draw, **kwargs))
    return DrawnDistances(parts, [d.common for d in draws])
