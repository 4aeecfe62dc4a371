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

Margins cost nothing: ``r = max(0, d_pos - d_neg + m)`` is applied to the stored per-image
distances for all margins at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hf_transfer_seg.scoring.configs import ScoreConfig, grid_configs
from hf_transfer_seg.scoring.robustness import DISTANCES, MARGINS, row_distance

POOLING = (False, True)


def _rows(maps: torch.Tensor, pooled: bool) -> torch.Tensor:
    rows = maps.mean(dim=(2, 3)) if pooled else maps.flatten(1)
    return rows.float()


def _all_distances(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``[2, 3, N]``: (flat, pooled) x (cosine, l2, inv_pearson) distances of matching rows of two map batches."""
    out = []
    for pooled in POOLING:
        qr, kr = _rows(q, pooled), _rows(k, pooled)
        out.append(torch.stack([row_distance(qr, kr, d) for d in DISTANCES]))
    return torch.stack(out)


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
        if self.positive is None:
            self._init(len(queries))
        b = queries[0].shape[0]
        start, end = self.next, self.next + b
        if end > self.m:
            raise ValueError(f"got features for {end} images but the plan has {self.m}")
        negs = self.negative[start:end]
        in_batch = (negs >= start) & (negs < end)
        kept = torch.tensor([int(n) in self.kept_keys for n in negs.tolist()], dtype=torch.bool)
        waiting = [t for t in range(b) if not in_batch[t] and not kept[t]]
        arrived = [n for n in self.pending if start <= n < end]

        for li, (q, k) in enumerate(zip(queries, keys)):
            self.positive[li, :, :, start:end] = _all_distances(q, k).double().cpu()
            q_sel, k_sel, where = [], [], []
            idx = torch.nonzero(in_batch).flatten()
            if idx.numel():
                q_sel.append(q[idx])
                k_sel.append(k[negs[idx] - start])
                where.extend((start + idx).tolist())
            idx = torch.nonzero(kept).flatten()
            if idx.numel():
                q_sel.append(q[idx])
                k_sel.append(torch.stack([self.kept_keys[int(negs[t])][li] for t in idx.tolist()]).to(k.device))
                where.extend((start + idx).tolist())
            if arrived:
                q_sel.append(torch.stack([self.pending[n][1][li] for n in arrived]).to(q.device))
                k_sel.append(k[torch.tensor(arrived, device=k.device) - start])
                where.extend(self.pending[n][0] for n in arrived)
            if where:
                self.negative_d[li, :, :, torch.tensor(where)] = _all_distances(torch.cat(q_sel), torch.cat(k_sel)).double().cpu()

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
    "bootstrap_weights",
    "grid_scores",
]
