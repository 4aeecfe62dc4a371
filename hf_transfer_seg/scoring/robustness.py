"""The robustness score of Hidy, Bakos and Lukács (arXiv 2410.18677) as pure tensor functions.

Two colour-jittered views of M target images go through the encoder; ``query`` holds the features
of view 1, ``key`` those of view 2. The positive of image i is ``key[i]``, its negative is
``key[negative_index[i]]``. Per image::

    r_i = max(0, d(query_i, key_i) - d(query_i, key_neg(i)) + margin)

and the score is the mean of ``r_i``. Lower is better: the encoder keeps the two views of an image
closer together than two different images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hf_transfer_seg.errors import ConfigError

DISTANCES = ("cosine", "l2", "inv_pearson")
MARGINS = (0.0, 0.25, 0.5, 0.75, 1.0)
_EPS = 1e-8


def _as_rows(features: torch.Tensor, pooled: bool, what: str) -> torch.Tensor:
    """``[M, D]`` rows: a feature map flattened (or averaged over its spatial positions when pooled)."""
    if not isinstance(features, torch.Tensor):
        raise ConfigError(f"{what} must be a torch.Tensor, got {type(features).__name__}")
    if features.ndim == 2:
        rows = features
    elif features.ndim == 4:
        rows = features.mean(dim=(2, 3)) if pooled else features.flatten(1)
    else:
        raise ConfigError(
            f"{what} must have shape [M, C, H, W] (a feature map per image) or [M, D] (a vector per image), "
            f"got {tuple(features.shape)}; bring token maps to [M, C, H, W] first"
        )
    if not rows.is_floating_point():
        raise ConfigError(f"{what} must be a floating point tensor, got {rows.dtype}")
    return rows.float() if rows.dtype in (torch.float16, torch.bfloat16) else rows


def row_distance(x: torch.Tensor, y: torch.Tensor, distance: str) -> torch.Tensor:
    """Distance between matching rows of ``x`` and ``y`` (both ``[N, D]``): a tensor ``[N]``.

    ``cosine``: 1 - cos(x, y). ``l2``: the mean of squared differences over D (not the Euclidean norm).
    ``inv_pearson``: 1 - Pearson correlation of the two vectors. A zero (cosine) or constant
    (Pearson) vector has similarity 0, so distance 1.
    """
    if distance == "cosine":
        return 1.0 - F.cosine_similarity(x, y, dim=1, eps=_EPS)
    if distance == "l2":
        return (x - y).pow(2).mean(dim=1)
    if distance == "inv_pearson":
        xc = x - x.mean(dim=1, keepdim=True)
        yc = y - y.mean(dim=1, keepdim=True)
        return 1.0 - F.cosine_similarity(xc, yc, dim=1, eps=_EPS)
    raise ConfigError(f"unknown distance {distance!r}; choose one of {', '.join(DISTANCES)}")


def check_negative_index(negative_index: torch.Tensor, m: int) -> torch.Tensor:
    """Validate that ``negative_index`` is a permutation of ``range(m)`` with no fixed point."""
    if not isinstance(negative_index, torch.Tensor) or negative_index.dtype not in (
        torch.int64,
        torch.int32,
        torch.int16,
        torch.uint8,
        torch.int8,
    ):
        raise ConfigError("negative_index must be an integer tensor (LongTensor [M]); build one with derangement(M, generator)")
    idx = negative_index.long().flatten().cpu()
    if idx.numel() != m:
        raise ConfigError(f"negative_index has {idx.numel()} entries but there are {m} images; it needs one per image")
    if m < 2:
        raise ConfigError("the robustness score needs at least 2 images (each needs a different image as its negative)")
    if idx.min() < 0 or idx.max() >= m or torch.unique(idx).numel() != m:
        raise ConfigError(
            "negative_index must be a permutation of 0..M-1 (every image is the negative of exactly one other); "
            "build one with derangement(M, generator)"
        )
    fixed = torch.nonzero(idx == torch.arange(m)).flatten()
    if fixed.numel():
        raise ConfigError(
            f"negative_index has fixed points at {fixed[:5].tolist()}: an image cannot be its own negative. "
            "Use derangement(M, generator), which never has one"
        )
    return idx


def robustness_values(
    query: torch.Tensor,
    key: torch.Tensor,
    negative_index: torch.Tensor,
    *,
    distance: str = "cosine",
    margin: float = 0.5,
    pooled: bool = False,
) -> torch.Tensor:
    """Per-image robustness values ``max(0, d(q_i, k_i) - d(q_i, k_neg(i)) + margin)``; the score is their mean.

    Args:
        query: features of the first colour-jittered view, ``[M, C, H, W]`` or ``[M, D]``.
        key: features of the second view, same shape as ``query``.
        negative_index: LongTensor ``[M]``, a permutation of ``0..M-1`` with no fixed point
            (:func:`derangement`): image ``i``'s negative is ``key[negative_index[i]]``.
        distance: ``"cosine"`` (1 - cosine similarity), ``"l2"`` (the *mean* of squared differences
            over the feature dimension) or ``"inv_pearson"`` (1 - Pearson correlation).
        margin: the triplet margin ``m`` (the paper's grid: 0, 0.25, 0.5, 0.75, 1).
        pooled: average each ``[C, H, W]`` map over its spatial positions first (one value per
            channel); otherwise flatten the whole map into one vector. ``[M, D]`` inputs are used as is.

    Returns:
        A float tensor ``[M]`` on the device of ``query``. ``robustness_values(...).mean()`` is the
        score: lower is better (the two views of an image stay closer than two different images).

    Raises:
        ConfigError: mismatched shapes, an unknown distance, a negative margin, or a
            ``negative_index`` that is not a permutation without fixed points.

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> q = torch.randn(8, 16, 4, 4, generator=g)
        >>> robustness_values(q, q, derangement(8, g)).shape
        torch.Size([8])
    """
    if distance not in DISTANCES:
        raise ConfigError(f"unknown distance {distance!r}; choose one of {', '.join(DISTANCES)}")
    if not float(margin) >= 0:
        raise ConfigError(f"margin must be a number >= 0, got {margin!r}")
    if not isinstance(query, torch.Tensor) or not isinstance(key, torch.Tensor) or query.shape != key.shape:
        raise ConfigError(
            f"query and key must be tensors of the same shape, got {tuple(getattr(query, 'shape', ()))} "
            f"and {tuple(getattr(key, 'shape', ()))}"
        )
    q = _as_rows(query, pooled, "query")
    k = _as_rows(key, pooled, "key")
    neg = check_negative_index(negative_index, q.shape[0]).to(k.device)
    positive = row_distance(q, k, distance)
    negative = row_distance(q, k[neg], distance)
    return torch.clamp(positive - negative + float(margin), min=0.0)


def derangement(m: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random permutation of ``0..m-1`` with no fixed point (LongTensor ``[m]``), for any ``m >= 2``.

    Drawn by rejection: random permutations until one has no fixed point (about e = 2.72 draws on
    average, whatever ``m``). The same generator state always gives the same derangement.
    """
    if int(m) != m or m < 2:
        raise ConfigError(f"a derangement needs m >= 2 items, got {m!r}")
    m = int(m)
    arange = torch.arange(m)
    while True:
        perm = torch.randperm(m, generator=generator)
        if not bool((perm == arange).any()):
            return perm


def cycle_order(negative_index: torch.Tensor) -> torch.Tensor:
    """An order of the images that walks each cycle of ``negative_index``.

    In that order the negative of the image at position ``t`` is the image at ``t + 1``, except at the
    end of a cycle, where it is the first image of the cycle. Feeding images in this order lets the
    batched grid keep at most a couple of feature maps from earlier batches (see ``grid.py``).
    """
    idx = negative_index.long().tolist()
    seen = [False] * len(idx)
    order: list[int] = []
    for start in range(len(idx)):
        j = start
        while not seen[j]:
            seen[j] = True
            order.append(j)
            j = idx[j]
    return torch.tensor(order, dtype=torch.long)
