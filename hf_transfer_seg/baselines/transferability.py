"""Label-aware transferability baselines on frozen encoder features: LogME and linear-probe Dice.

Both work on *class-balanced sampled pixels*: for every class, the same number of pixels is drawn at
random (seeded) from the images, and the encoder's feature map at one level (default: the deepest) is
read at those pixels by bilinear interpolation, which is what upsampling the feature map to the mask
size and indexing it would give, without building full-size feature maps.

- LogME (You et al., ICML 2021): the log marginal evidence of a Bayesian linear model from the features
  to each one-hot class column, maximised over its two precisions by the fixed-point iteration of the
  paper, averaged over classes. Higher is better.
- Linear-probe Dice: a multinomial logistic regression (one 1x1 convolution, L-BFGS) trained on the
  sampled pixels of the training split, applied to whole validation images (logits computed at feature
  resolution then upsampled: linear maps commute with bilinear upsampling) and scored with the same
  accumulated foreground Dice as fine-tuning. Higher is better.

Both use the target's seeded train/validation split, so that they compare with the fine-tuned Dice.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hf_transfer_seg.data.segmentation import SegSample, SegTarget
from hf_transfer_seg.errors import ConfigError, DataError
from hf_transfer_seg.metrics import SegmentationMetrics
from hf_transfer_seg.models.checkpoint import load_encoder, normalization

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- LogME


def logme(features: np.ndarray, labels: np.ndarray, *, max_iter: int = 100, tol: float = 1e-3) -> float:
    """LogME of ``features`` ``[N, D]`` for integer ``labels`` ``[N]`` (mean over one-hot class columns)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    n, d = f.shape
    if n < 2:
        raise DataError("LogME needs at least two samples")
    # f = U S V^T; sigma_i = s_i^2 are the eigenvalues of F^T F
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s**2
    evidences = []
    for c in np.unique(y):
        t = (y == c).astype(np.float64)
        z = u.T @ t  # coordinates of the target in the column space of F
        z2 = z**2
        outside = max(float(t @ t - z2.sum()), 0.0)  # squared norm of the part F cannot explain
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            gamma = float((beta * sigma / (alpha + beta * sigma)).sum())
            m2 = float((beta**2 * sigma * z2 / (alpha + beta * sigma) ** 2).sum())  # |m|^2
            res2 = float((z2 * (alpha / (alpha + beta * sigma)) ** 2).sum()) + outside  # |t - F m|^2
            new_alpha = gamma / (m2 + 1e-10)
            new_beta = (n - gamma) / (res2 + 1e-10)
            done = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) < tol
            alpha, beta = new_alpha, new_beta
            if done:
                break
        gamma = float((beta * sigma / (alpha + beta * sigma)).sum())
        m2 = float((beta**2 * sigma * z2 / (alpha + beta * sigma) ** 2).sum())
        res2 = float((z2 * (alpha / (alpha + beta * sigma)) ** 2).sum()) + outside
        # eigenvalues of A = alpha I + beta F^T F: alpha + beta sigma_i (and alpha for the d - rank others)
        logdet = float(np.log(alpha + beta * sigma).sum()) + (d - len(sigma)) * math.log(alpha)
        evidence = (
            d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * logdet
            - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * math.log(2 * math.pi)
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))


# ---------------------------------------------------------------------------------------- features


def _pad32(image: torch.Tensor) -> torch.Tensor:
    _, h, w = image.shape
    return F.pad(image, (0, (-w) % 32, 0, (-h) % 32))


@torch.no_grad()
def feature_map(encoder: torch.nn.Module, image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, level: int) -> torch.Tensor:
    """Feature map ``[C, h, w]`` of one image at ``level`` (padded to a multiple of 32 first)."""
    x = _pad32(image)[None]
    feats = encoder((x - mean) / std)
    return feats[level][0].float()


def _coords(ys: torch.Tensor, xs: torch.Tensor, padded_hw: tuple[int, int]) -> torch.Tensor:
    """grid_sample coordinates (align_corners=False) of pixel centres in the padded image."""
    hp, wp = padded_hw
    gx = (xs.float() + 0.5) / wp * 2 - 1
    gy = (ys.float() + 0.5) / hp * 2 - 1
    return torch.stack([gx, gy], dim=-1).view(1, 1, -1, 2)


def sample_pixels(samples: list[SegSample], num_classes: int, per_class: int, rng: np.random.Generator) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Class-balanced pixel draw: (image index, rows, cols, labels) per image; ``per_class`` pixels per class overall."""
    pools: dict[int, list[tuple[int, np.ndarray]]] = {c: [] for c in range(num_classes)}
    for i, s in enumerate(samples):
        mask = s.mask.numpy()
        valid = s.valid.numpy() if s.valid is not None else np.ones(mask.shape, bool)
        for c in range(num_classes):
            idx = np.flatnonzero((mask == c) & valid)
            if idx.size:
                pools[c].append((i, idx))
    take: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    counts = {c: sum(len(idx) for _, idx in pool) for c, pool in pools.items()}
    present = [c for c in range(num_classes) if counts[c]]
    if len(present) < 2:
        raise DataError("class-balanced sampling needs pixels of at least two classes")
    n = min(per_class, min(counts[c] for c in present))
    for c in present:
        flat_img = np.concatenate([np.full(len(idx), i) for i, idx in pools[c]])
        flat_idx = np.concatenate([idx for _, idx in pools[c]])
        pick = rng.choice(len(flat_idx), size=n, replace=False)
        for i in np.unique(flat_img[pick]):
            sel = pick[flat_img[pick] == i]
            take.setdefault(int(i), []).append((flat_idx[sel], np.full(len(sel), c)))
    out = []
    for i, parts in sorted(take.items()):
        idx = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        w = samples[i].mask.shape[1]
        out.append((i, idx // w, idx % w, labels))
    return out


@torch.no_grad()
def sampled_features(encoder, samples, num_classes, *, per_class: int, level: int, mean, std, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    feats, labels = [], []
    for i, rows, cols, lab in sample_pixels(samples, num_classes, per_class, rng):
        image = samples[i].image
        fmap = feature_map(encoder, image, mean, std, level)
        padded = _pad32(image).shape[1:]
        grid = _coords(torch.from_numpy(rows), torch.from_numpy(cols), padded)
        values = F.grid_sample(fmap[None], grid, mode="bilinear", align_corners=False)[0, :, 0].T  # [n, C]
        feats.append(values.numpy())
        labels.append(lab)
    return np.concatenate(feats), np.concatenate(labels)


# ----------------------------------------------------------------------------------- linear probe


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, num_classes: int, *, weight_decay: float = 1e-4, steps: int = 100) -> torch.nn.Linear:
    """Multinomial logistic regression on standardised features (the standardisation is folded into the layer)."""
    x = torch.from_numpy(features).float()
    y = torch.from_numpy(labels).long()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mu) / sd
    layer = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(layer(xs), y) + weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():  # fold (x - mu) / sd into the weights
        layer.weight.div_(sd)
        layer.bias.sub_((layer.weight * mu).sum(1))
    return layer


@torch.no_grad()
def probe_dice(encoder, probe: torch.nn.Linear, samples: list[SegSample], target: SegTarget, *, level: int, mean, std) -> dict[str, Any]:
    metrics = SegmentationMetrics(target.num_classes, target.class_names)
    for s in samples:
        fmap = feature_map(encoder, s.image, mean, std, level)  # [C, h, w]
        logits = torch.einsum("kc,chw->khw", probe.weight, fmap) + probe.bias[:, None, None]
        padded = _pad32(s.image).shape[1:]
        logits = F.interpolate(logits[None], size=padded, mode="bilinear", align_corners=False)[0]
        pred = logits[:, : s.mask.shape[0], : s.mask.shape[1]].argmax(0)
        metrics.update(pred, s.mask, s.valid)
    return metrics.compute()


# -------------------------------------------------------------------------------------------- API


def transferability(
    encoder_folder: str | Path,
    train: SegTarget,
    val: SegTarget,
    *,
    level: int = -1,
    pixels_per_class: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """LogME (training split) and linear-probe Dice (fit on training, scored on validation) of an encoder."""
    encoder = load_encoder(encoder_folder, features_only=True).eval()
    n_levels = len(encoder.feature_info.out_indices)
    if not -n_levels <= level < n_levels:
        raise ConfigError(f"feature level {level} does not exist; this encoder has levels 0..{n_levels - 1}")
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in normalization(encoder))
    feats, labels = sampled_features(encoder, train.samples, train.num_classes, per_class=pixels_per_class, level=level, mean=mean, std=std, seed=seed)
    probe = fit_linear_probe(feats, labels, train.num_classes)
    val_metrics = probe_dice(encoder, probe, val.samples, val, level=level, mean=mean, std=std)
    return {
        "logme": logme(feats, labels),
        "linear_probe_dice": val_metrics["dice_mean"],
        "level": level if level >= 0 else n_levels + level,
        "pixels": int(len(labels)),
        "pixels_per_class": int(len(labels) // max(1, len(np.unique(labels)))),
        "seed": seed,
    }
