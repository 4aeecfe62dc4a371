"""The whole configuration grid from one pass over the images, and its bootstrap intervals.

Per batch, for every feature level and for flat and pooled features, the three distances of every
positive pair (query i, key i) are computed at once. The negative pair (query i, key neg(i)) may
span two batches: its key can come from an earlier batch or a later one. Rather than storing every
feature map (a shallow unpooled level of a ResNet-50 is 0.8 M values per image), the accumulator
keeps only what an unresolved pair still needs:

- a key from this batch whose query comes in a later batch is kept until that query arrives;
- a query from this batch whose key comes in a later batch is kept until that key arrives.

The images are fed in the order that walks the cycles of the derangement (``cycle_order``), so the
negative of position ``t`` is position ``t + 1`` except at the end of a cycle. Then at most one
query (at each batch boundary) and one key (the head of the open cycle) are kept: the memory does
not grow with the number of images, every pair is exact (full float32 features, no re-computation,
no second pass), and the distances do not depend on the batch size beyond floating-point rounding.
For any other order the accumulator stays exact, it only keeps more.

Per level, one Gram matrix of the batch's [view 1; view 2] rows (a single GEMM over features the
forward pass already laid out contiguously) gives every dot product and squared norm: cosine,
Pearson (from moments about the mean) and the negative l2 follow from it; the positive l2 is taken
from the differences, which stay exact for near-identical views. The grid adds a few memory passes
over the features, not a second set of forward passes.

Margins cost nothing: ``r = max(0, d_pos - d_neg + m)`` is applied to the stored per-image
distances for all margins at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hf_transfer_seg.scoring.configs import ScoreConfig, grid_configs
from hf_transfer_seg.scoring.robustness import DISTANCES, MARGINS

POOLING = (False, True)


def _rows(maps: torch.Tensor, pooled: bool) -> torch.Tensor:
    rows = maps.mean(dim=(2, 3)) if pooled else maps.flatten(1)
    return rows.float()


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products in float64 (used for the few pairs that span two batches)."""
    return (a.double() * b.double()).sum(dim=1)


def _distances(sxy, s1a, s1b, s2a, s2b, n: int, diff: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``[3, N]`` (cosine, l2, inv_pearson) distances, as :func:`row_distance` defines them, from row moments.

    ``sxy`` = x.y, ``s1`` = row sums, ``s2`` = squared norms (float64). Without ``diff``: cosine
    = 1 - x.y / (|x||y|), Pearson from the moments about the mean, l2 = (|x|^2 + |y|^2 - 2 x.y) / D.
    Those cancel when x and y are nearly identical (the positive pairs: two colour jitters of one
    image), so there ``diff`` = (|x - y|^2, sum(x - y)), taken from the difference itself, gives
    l2 = |x - y|^2 / D, 1 - cos = (|x - y|^2 - (|x| - |y|)^2) / (2 |x| |y|), and the same for the
    centred vectors: every term stays accurate relative to the (small) distance.
    """
    eps = 1e-8
    norm_a, norm_b = s2a.clamp_min(0.0).sqrt(), s2b.clamp_min(0.0).sqrt()
    var_a = (s2a - s1a * s1a / n).clamp_min(0.0)
    var_b = (s2b - s1b * s1b / n).clamp_min(0.0)
    sd_a, sd_b = var_a.sqrt(), var_b.sqrt()
    if diff is None:
        cosine = 1.0 - sxy / (norm_a.clamp_min(eps) * norm_b.clamp_min(eps))
        pearson = (sxy - s1a * s1b / n) / (sd_a.clamp_min(eps) * sd_b.clamp_min(eps))
        inv_pearson = 1.0 - pearson
        l2 = (s2a + s2b - 2.0 * sxy).clamp_min(0.0) / n
    else:
        d2, d1 = diff
        l2 = d2 / n
        cosine = (d2 - (norm_a - norm_b) ** 2) / (2.0 * norm_a.clamp_min(eps) * norm_b.clamp_min(eps))
        cosine = torch.where((norm_a < eps) | (norm_b < eps), torch.ones_like(cosine), cosine)
        centred_d2 = (d2 - d1 * d1 / n).clamp_min(0.0)
        inv_pearson = (centred_d2 - (sd_a - sd_b) ** 2) / (2.0 * sd_a.clamp_min(eps) * sd_b.clamp_min(eps))
        inv_pearson = torch.where((sd_a < eps) | (sd_b < eps), torch.ones_like(inv_pearson), inv_pearson)
    return torch.stack([cosine, l2, inv_pearson])


def _pair_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Distances ``[3, N]`` of a few negative pairs that span two batches (rows ``[N, D]``)."""
    return _distances(_dot(x, y), x.sum(1).double(), y.sum(1).double(), _dot(x, x), _dot(y, y), x.shape[1])


def _level_distances(z: torch.Tensor, b: int, neg_in_batch: torch.Tensor, neg_key: torch.Tensor):
    """Positive and in-batch negative distances of one level from ``z`` = rows of [queries; keys] ``[2B, D]``.

    One Gram matrix ``z z^T`` gives every dot product and squared norm of the batch in one pass over
    the features; the positive l2 comes from the differences. Returns ``([3, B], [3, len(neg_in_batch)])``.
    """
    n = z.shape[1]
    gram = (z @ z.T).double()
    s1 = z.sum(dim=1).double()
    s2 = gram.diagonal()
    q = torch.arange(b, device=z.device)
    diff = z[:b] - z[b:]
    d2 = torch.linalg.vector_norm(diff, dim=1).double().square()
    d1 = diff.sum(dim=1).double()
    del diff
    positive = _distances(gram[q, q + b], s1[:b], s1[b:], s2[:b], s2[b:], n, diff=(d2, d1))
    qi, kj = neg_in_batch.to(z.device), (neg_key + b).to(z.device)
    negative = _distances(gram[qi, kj], s1[qi], s1[kj], s2[qi], s2[kj], n)
    return positive, negative


@dataclass
class PairDistances:
    """Per-image distances of every positive and negative pair, ``[levels, pooled, distance, M]`` (float64, CPU)."""

    positive: torch.Tensor
    negative: torch.Tensor

    @property
    def num_levels(self) -> int:
        return self.positive.shape[0]

    def values(self, config: ScoreConfig) -> torch.Tensor:
        """Per-image robustness values ``[M]`` of one configuration."""
        li = self.num_levels + config.level  # level -1 -> last (deepest) index
        pi = POOLING.index(config.pooled)
        di = DISTANCES.index(config.distance)
        return torch.clamp(self.positive[li, pi, di] - self.negative[li, pi, di] + config.margin, min=0.0)

    def all_values(self) -> tuple[list[ScoreConfig], torch.Tensor]:
        """Every configuration of the grid and its per-image values ``[configs, M]``."""
        configs = grid_configs(self.num_levels)
        return configs, torch.stack([self.values(c) for c in configs])


@dataclass
class DrawnDistances:
    """The :class:`PairDistances` of several draws of views and negatives of the same M images.

    ``common[k]`` maps draw k's feeding position to the first draw's (None for the first draw). ``values`` is the
    per-image mean over the draws (in the first draw's order): what the score and its intervals use;
    ``draw_values`` keeps every draw, for the tie test."""

    parts: list[PairDistances]
    common: list[torch.Tensor | None]

    @property
    def num_levels(self) -> int:
        return self.parts[0].num_levels

    def _aligned(self, values: torch.Tensor, common: torch.Tensor | None) -> torch.Tensor:
        if common is None:
            return values
        out = torch.empty_like(values)
        out[..., common] = values
        return out

    def draw_values(self, config: ScoreConfig) -> torch.Tensor:
        """``[draws, M]`` per-image values of one configuration, every draw in the first draw's image order."""
        return torch.stack([self._aligned(p.values(config), c) for p, c in zip(self.parts, self.common)])

    def values(self, config: ScoreConfig) -> torch.Tensor:
        return self.draw_values(config).mean(dim=0)

    def all_values(self) -> tuple[list[ScoreConfig], torch.Tensor]:
        configs = grid_configs(self.num_levels)
        parts = [self._aligned(p.all_values()[1], c) for p, c in zip(self.parts, self.common)]
        return configs, torch.stack(parts).mean(dim=0)


class PairDistanceAccumulator:
    """Consumes the features of consecutive batches and returns :class:`PairDistances` for all M images.

    ``negative`` holds, for each feeding position ``t``, the position of its negative key.
    """

    def __init__(self, negative: torch.Tensor):
        self.negative = negative.long().cpu()
        self.m = int(self.negative.numel())
        self.inverse = torch.empty_like(self.negative)
        self.inverse[self.negative] = torch.arange(self.m)
        self.next = 0
        self.positive: torch.Tensor | None = None
        self.negative_d: torch.Tensor | None = None
        self.kept_keys: dict[int, list[torch.Tensor]] = {}  # key position -> maps per level
        self.pending: dict[int, tuple[int, list[torch.Tensor]]] = {}  # key position -> (query position, maps)
        self.peak_kept = 0

    def _init(self, num_levels: int) -> None:
        shape = (num_levels, len(POOLING), len(DISTANCES), self.m)
        self.positive = torch.full(shape, float("nan"), dtype=torch.float64)
        self.negative_d = torch.full(shape, float("nan"), dtype=torch.float64)

    def add(self, queries: list[torch.Tensor], keys: list[torch.Tensor]) -> None:
        """Features ``[B, C, H, W]`` per level (shallow to deep) of the next ``B`` images, both views."""
        self.add_stacked([torch.cat([q, k]) for q, k in zip(queries, keys)])

    def add_stacked(self, levels: list[torch.Tensor]) -> None:
        """Features ``[2B, C, H, W]`` per level of the next ``B`` images: view 1 rows, then view 2 rows.

        This is the layout of one forward pass over ``cat([view1, view2])``: no copy is needed.
        """
        if self.positive is None:
            self._init(len(levels))
        b = levels[0].shape[0] // 2
        queries = [f[:b] for f in levels]
        keys = [f[b:] for f in levels]
        start, end = self.next, self.next + b
        if end > self.m:
            raise ValueError(f"got features for {end} images but the plan has {self.m}")
        negs = self.negative[start:end]
        in_batch = (negs >= start) & (negs < end)
        kept = torch.tensor([int(n) in self.kept_keys for n in negs.tolist()], dtype=torch.bool)
        waiting = [t for t in range(b) if not in_batch[t] and not kept[t]]
        arrived = [n for n in self.pending if start <= n < end]

        idx_batch = torch.nonzero(in_batch).flatten()
        idx_kept = torch.nonzero(kept).flatten()
        for li, f in enumerate(levels):
            for pi, pooled in enumerate(POOLING):
                z = _rows(f, pooled)
                positive, negative = _level_distances(z, b, idx_batch, negs[idx_batch] - start)
                self.positive[li, pi, :, start:end] = positive.cpu()
                self.negative_d[li, pi, :, start + idx_batch] = negative.cpu()
                if idx_kept.numel():
                    held = torch.stack([self.kept_keys[int(negs[t])][li] for t in idx_kept.tolist()]).to(f.device)
                    d = _pair_distances(z[idx_kept.to(f.device)], _rows(held, pooled))
                    self.negative_d[li, pi, :, start + idx_kept] = d.cpu()
                if arrived:
                    held = torch.stack([self.pending[n][1][li] for n in arrived]).to(f.device)
                    d = _pair_distances(_rows(held, pooled), z[b + torch.tensor(arrived, device=f.device) - start])
                    self.negative_d[li, pi, :, torch.tensor([self.pending[n][0] for n in arrived])] = d.cpu()

        for n in arrived:
            del self.pending[n]
        for t in kept.nonzero().flatten().tolist():
            del self.kept_keys[int(negs[t])]
        for t in waiting:  # their key comes in a later batch
            self.pending[int(negs[t])] = (start + t, [q[t].clone() for q in queries])
        for t in range(b):  # keys whose query comes in a later batch
            if int(self.inverse[start + t]) >= end:
                self.kept_keys[start + t] = [k[t].clone() for k in keys]
        self.peak_kept = max(self.peak_kept, len(self.kept_keys) + len(self.pending))
        self.next = end

    def result(self) -> PairDistances:
        if self.next != self.m or self.pending or self.kept_keys or self.positive is None:
            raise ValueError(f"features for {self.next} of {self.m} images were given; the pass is incomplete")
        return PairDistances(self.positive, self.negative_d)


def bootstrap_weights(m: int, generator: torch.Generator, resamples: int = 1000) -> torch.Tensor:
    """``[resamples, m]`` resampling weights (counts / m): ``values @ W.T`` gives the bootstrap means."""
    idx = torch.randint(0, m, (resamples, m), generator=generator)
    counts = torch.zeros(resamples, m, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones(resamples, m, dtype=torch.float64))
    return counts / m


@dataclass(frozen=True)
class ConfigScore:
    score: float
    ci_low: float
    ci_high: float


def grid_scores(distances: PairDistances, weights: torch.Tensor, level: float = 0.95) -> dict[str, ConfigScore]:
    """Score and percentile bootstrap interval of every configuration, by name."""
    configs, values = distances.all_values()
    means = values.mean(dim=1)
    boot = values @ weights.T  # [configs, resamples]
    alpha = (1.0 - level) / 2
    bounds = torch.quantile(boot, torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64), dim=1)
    return {
        c.name: ConfigScore(float(means[i]), float(bounds[0, i]), float(bounds[1, i])) for i, c in enumerate(configs)
    }


__all__ = [
    "MARGINS",
    "ConfigScore",
    "PairDistanceAccumulator",
    "PairDistances",
    "DrawnDistances",
    "bootstrap_weights",
    "grid_scores",
]
