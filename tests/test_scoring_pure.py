"""The robustness score as pure functions: known answers, invariances, derangements, the one-pass grid."""

from __future__ import annotations

import math

import pytest
import torch

from hf_transfer_seg.errors import ConfigError
from hf_transfer_seg.scoring import HEADLINE, derangement, grid_configs, parse_config, robustness_values
from hf_transfer_seg.scoring.grid import PairDistanceAccumulator, bootstrap_weights, grid_scores
from hf_transfer_seg.scoring.robustness import cycle_order, row_distance


def _orthogonal_rows(m: int, d: int) -> torch.Tensor:
    """``m`` mutually orthogonal unit vectors in ``d >= m`` dimensions."""
    q, _ = torch.linalg.qr(torch.randn(d, m, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    return q.T.float().contiguous()


def _shift(m: int) -> torch.Tensor:
    return torch.roll(torch.arange(m), -1)


@pytest.mark.parametrize("margin", [0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
def test_identical_views_orthogonal_negatives_cosine(margin):
    x = _orthogonal_rows(6, 10)
    values = robustness_values(x, x.clone(), _shift(6), distance="cosine", margin=margin)
    # d_pos = 1 - 1 = 0, d_neg = 1 - 0 = 1  ->  max(0, 0 - 1 + m)
    assert torch.allclose(values, torch.full((6,), max(0.0, margin - 1.0)), atol=1e-6)


def test_known_answers_each_distance():
    # two images, D = 4; view 2 of image 0 differs from view 1 by a known amount
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    k = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    neg = torch.tensor([1, 0])
    # cosine: pos0 = 1 - 1/sqrt2, neg0 = 1 - cos(q0, k1) = 1; pos1 = 0, neg1 = 1 - cos(q1, k0) = 1 - 1/sqrt2
    cos = robustness_values(q, k, neg, distance="cosine", margin=0.5)
    expected = torch.tensor([max(0, (1 - 1 / math.sqrt(2)) - 1 + 0.5), max(0, 0 - (1 - 1 / math.sqrt(2)) + 0.5)])
    assert torch.allclose(cos, expected, atol=1e-6)
    # l2 = MEAN of squared differences: pos0 = 1/4, neg0 = (1 + 4)/4; pos1 = 0, neg1 = (1 + 1)/4
    l2 = robustness_values(q, k, neg, distance="l2", margin=1.0)
    assert torch.allclose(l2, torch.tensor([max(0, 0.25 - 1.25 + 1), max(0, 0 - 0.5 + 1)]), atol=1e-6)
    # Pearson of (1,0,0,0) and (1,1,0,0) = 1/sqrt(3); of (0,2,0,0) and (1,1,0,0) also 1/sqrt(3)
    r = 1 / math.sqrt(3)
    pearson_q0_k1 = -1 / 3  # (1,0,0,0) vs (0,2,0,0)
    ip = robustness_values(q, k, neg, distance="inv_pearson", margin=0.5)
    expected = torch.tensor([max(0, (1 - r) - (1 - pearson_q0_k1) + 0.5), max(0, 0 - (1 - r) + 0.5)])
    assert torch.allclose(ip, expected, atol=1e-6)


def test_l2_is_mean_not_norm():
    q = torch.zeros(2, 100)
    k = torch.zeros(2, 100)
    k[0] = 2.0  # pos0: mean of 4s = 4 (a Euclidean norm would be 20)
    values = robustness_values(q, k, torch.tensor([1, 0]), distance="l2", margin=0.0)
    assert values.tolist() == pytest.approx([4.0 - 0.0, 0.0])


def test_pooled_averages_spatial_positions_flat_does_not():
    # Each map is +1 on the left half and -1 on the right half for view 1, mirrored for view 2:
    # the spatial means are identical (pooled distance 0) but the flat maps are opposite (cosine 2).
    a = torch.ones(3, 2, 4, 4)
    a[..., 2:] = -1.0
    b = torch.flip(a, dims=[3])
    neg = derangement(3, torch.Generator().manual_seed(0))
    flat = robustness_values(a + 1e-3, b + 1e-3, neg, distance="cosine", margin=0.5, pooled=False)
    pooled = robustness_values(a + 1e-3, b + 1e-3, neg, distance="cosine", margin=0.5, pooled=True)
    assert torch.allclose(flat, torch.full((3,), 0.5), atol=1e-5)  # d_pos = d_neg = 2
    assert torch.allclose(pooled, torch.full((3,), 0.5), atol=1e-5)  # d_pos = d_neg = 0
    # and pooled equals feeding the spatial means as [M, C] vectors
    x, y = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    neg = derangement(5, torch.Generator().manual_seed(3))
    assert torch.allclose(
        robustness_values(x, y, neg, pooled=True), robustness_values(x.mean((2, 3)), y.mean((2, 3)), neg), atol=1e-6
    )
    assert torch.allclose(robustness_values(x, y, neg), robustness_values(x.flatten(1), y.flatten(1), neg), atol=1e-6)


def test_cosine_and_pearson_ignore_feature_scale():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, 4, 3, 3, generator=g), torch.randn(8, 4, 3, 3, generator=g)
    neg = derangement(8, g)
    for distance in ("cosine", "inv_pearson"):
        base = robustness_values(q, k, neg, distance=distance)
        assert torch.allclose(robustness_values(q * 37.0, k * 37.0, neg, distance=distance), base, atol=1e-5)
        assert torch.allclose(robustness_values(q * 1e-3, k * 5.0, neg, distance=distance), base, atol=1e-5)
    assert not torch.allclose(robustness_values(q * 3, k * 3, neg, distance="l2", margin=0), robustness_values(q, k, neg, distance="l2", margin=0))


def test_inv_pearson_ignores_offsets_cosine_does_not():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(6, 20, generator=g), torch.randn(6, 20, generator=g)
    neg = derangement(6, g)
    base = robustness_values(q, k, neg, distance="inv_pearson")
    assert torch.allclose(robustness_values(q + 5, k - 3, neg, distance="inv_pearson"), base, atol=1e-5)
    assert not torch.allclose(robustness_values(q + 5, k - 3, neg, distance="cosine"), robustness_values(q, k, neg))


@pytest.mark.parametrize("m", [2, 3, 4, 5, 7, 8, 16, 33])
def test_derangement_has_no_fixed_point(m):
    for seed in range(200):
        perm = derangement(m, torch.Generator().manual_seed(seed))
        assert sorted(perm.tolist()) == list(range(m))
        assert not (perm == torch.arange(m)).any(), (m, seed, perm)


def test_derangement_is_seeded_and_varied():
    a = derangement(9, torch.Generator().manual_seed(5))
    assert torch.equal(a, derangement(9, torch.Generator().manual_seed(5)))
    assert len({tuple(derangement(9, torch.Generator().manual_seed(s)).tolist()) for s in range(30)}) > 20
    with pytest.raises(ConfigError):
        derangement(1)


def test_bad_negative_index_is_refused_with_a_fix():
    x = torch.randn(4, 3)
    with pytest.raises(ConfigError, match="fixed points at \\[2\\].*derangement"):
        robustness_values(x, x, torch.tensor([1, 3, 2, 0]))
    with pytest.raises(ConfigError, match="permutation"):
        robustness_values(x, x, torch.tensor([1, 1, 3, 2]))
    with pytest.raises(ConfigError, match="4 images"):
        robustness_values(x, x, torch.tensor([1, 0]))
    with pytest.raises(ConfigError, match="integer"):
        robustness_values(x, x, torch.tensor([1.0, 0.0, 3.0, 2.0]))
    with pytest.raises(ConfigError, match="unknown distance"):
        robustness_values(x, x, torch.tensor([1, 0, 3, 2]), distance="euclid")
    with pytest.raises(ConfigError, match="same shape"):
        robustness_values(x, x[:, :2], torch.tensor([1, 0, 3, 2]))


def test_config_names_parse_back_and_unknown_names_list_valid_ones():
    configs = grid_configs(4)
    assert len(configs) == 4 * 2 * 3 * 5
    assert len({c.name for c in configs}) == len(configs)
    assert all(parse_config(c.name) == c for c in configs)
    assert parse_config(HEADLINE).name == "cosine_m0.5_L-1_flat"
    with pytest.raises(ConfigError, match="valid names are .*cosine_m0_L-1_flat"):
        parse_config("cosine_margin0.5")
    with pytest.raises(ConfigError, match="margin 0.3 is not in the grid"):
        parse_config("cosine_m0.3_L-1_flat")
    with pytest.raises(ConfigError, match="only 3 feature stages.*cosine_m0.5_L-3_flat"):
        parse_config("cosine_m0.5_L-4_flat", num_levels=3)


def test_cycle_order_makes_negatives_consecutive():
    for seed in range(20):
        neg = derangement(11, torch.Generator().manual_seed(seed))
        order = cycle_order(neg)
        assert sorted(order.tolist()) == list(range(11))
        pos = torch.empty_like(order)
        pos[order] = torch.arange(11)
        fed = pos[neg[order]]  # negative of each feeding position, as a feeding position
        closes = [t for t in range(11) if fed[t] != t + 1]
        assert all(fed[t] < t for t in closes)  # a cycle closes back to its head
        assert closes[-1] == 10 and fed[10] <= 9


@pytest.mark.parametrize("batch_size", [1, 3, 4, 16])
@pytest.mark.parametrize("ordered", [True, False])
def test_one_pass_grid_equals_robustness_values_for_every_config(batch_size, ordered):
    g = torch.Generator().manual_seed(7)
    m = 13
    levels_q = [torch.randn(m, 4, 6, 6, generator=g), torch.randn(m, 8, 3, 3, generator=g), torch.randn(m, 16, 1, 1, generator=g)]
    levels_k = [q + 0.3 * torch.randn(q.shape, generator=g) for q in levels_q]
    neg = derangement(m, g)
    if ordered:  # feed in cycle order, as the scorer does: negatives become the next position
        order = cycle_order(neg)
        pos = torch.empty_like(order)
        pos[order] = torch.arange(m)
        neg = pos[neg[order]]
        levels_q = [q[order] for q in levels_q]
        levels_k = [k[order] for k in levels_k]
    acc = PairDistanceAccumulator(neg)
    for start in range(0, m, batch_size):
        acc.add([q[start : start + batch_size] for q in levels_q], [k[start : start + batch_size] for k in levels_k])
    distances = acc.result()
    if ordered:
        assert acc.peak_kept <= 2  # one carried query + one cycle head, whatever M
    for config in grid_configs(3):
        li = 3 + config.level
        expected = robustness_values(
            levels_q[li], levels_k[li], neg, distance=config.distance, margin=config.margin, pooled=config.pooled
        )
        assert torch.allclose(distances.values(config).float(), expected, atol=1e-5), config.name
    scores = grid_scores(distances, bootstrap_weights(m, torch.Generator().manual_seed(0), 200))
    assert set(scores) == {c.name for c in grid_configs(3)}
    for s in scores.values():
        assert s.ci_low <= s.score + 1e-12 and s.score <= s.ci_high + 1e-12


def test_bootstrap_interval_shrinks_with_more_images():
    def width(m):
        values = torch.rand(m, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        boot = values @ bootstrap_weights(m, torch.Generator().manual_seed(1), 2000).T
        low, high = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64))
        return float(high - low)

    assert width(400) < width(25) / 2


def test_grid_stays_accurate_for_near_identical_views_of_large_maps():
    # Positive pairs of real scoring are nearly identical: distances ~1e-4 of the feature scale.
    g = torch.Generator().manual_seed(4)
    q = torch.relu(torch.randn(6, 64, 60, 60, generator=g)) + 0.5  # large D, a mean well above zero
    k = q + 1e-2 * torch.randn(q.shape, generator=g)
    neg = torch.roll(torch.arange(6), -1)
    acc = PairDistanceAccumulator(neg)
    acc.add_stacked([torch.cat([q, k])])
    for distance in ("cosine", "l2", "inv_pearson"):
        di = ("cosine", "l2", "inv_pearson").index(distance)
        ref_pos = row_distance(q.flatten(1).double(), k.flatten(1).double(), distance)
        ref_neg = row_distance(q.flatten(1).double(), k[neg].flatten(1).double(), distance)
        got_pos, got_neg = acc.positive[0, 0, di], acc.negative_d[0, 0, di]
        assert torch.allclose(got_pos, ref_pos, rtol=2e-3, atol=0), (distance, got_pos, ref_pos)
        assert torch.allclose(got_neg, ref_neg, rtol=1e-4, atol=1e-6), distance


def test_grid_matches_reference_on_dead_and_constant_feature_maps():
    zeros = torch.zeros(4, 3, 2, 2)
    const = torch.full((4, 3, 2, 2), 2.0)
    neg = torch.roll(torch.arange(4), 1)
    acc = PairDistanceAccumulator(neg)
    acc.add([zeros, const], [zeros.clone(), const.clone()])
    distances = acc.result()
    for config in grid_configs(2):
        li = 2 + config.level
        maps = [zeros, const][li]
        expected = robustness_values(maps, maps.clone(), neg, distance=config.distance, margin=config.margin, pooled=config.pooled)
        assert torch.allclose(distances.values(config).float(), expected, atol=1e-6), config.name
