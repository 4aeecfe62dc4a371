"""Label-free representation-quality predictors from an embedding matrix (no labels, no extra forward pass).

Both read the eigenspectrum of the embeddings ``Z`` ``[N, D]`` that the robustness score's two forward
passes already produce (the deepest feature level, globally average-pooled, both views stacked):

- **RankMe** (Garrido, Balestriero, Najman and LeCun, *RankMe: Assessing the downstream performance of
  pretrained self-supervised representations by their rank*, ICML 2023): the effective rank
  ``exp(-sum_k p_k log p_k)``, ``p_k = s_k / ||s||_1 + eps``, of the singular values ``s`` of ``Z``
  (uncentred, as in the paper, ``eps = 1e-7``). Higher is better. It cannot exceed ``min(N, D)``:
  with few images it saturates at ``N``, so compare models on the same number of images.
- **alpha-ReQ** (Agrawal, Mondal, Ghosh and Richards, *alpha-ReQ: Assessing representation quality in
  self-supervised learning by measuring eigenspectrum decay*, NeurIPS 2022): ``alpha``, the slope of
  the power law ``lambda_i ~ i^-alpha`` fitted by least squares in log-log to the eigenvalues of the
  covariance of ``Z``. The paper finds that well-generalising representations have ``alpha`` close to 1
  (slower decay: too little structure; faster: collapse), so the predictor is ``|alpha - 1|``, lower
  is better. Chosen because it is a different reading of the same spectrum from RankMe (its shape,
  not its spread), costs one eigen-decomposition, and needs no labels.

Neither needs a hyperparameter beyond the ones above; both are deterministic given ``Z``.
"""

from __future__ import annotations

import math

import torch

RANKME_EPS = 1e-7
# name -> lower is better?
PREDICTORS = {"rankme": False, "alpha_req_gap": True}


def _matrix(z: torch.Tensor) -> torch.Tensor:
    z = torch.as_tensor(z).double()
    if z.ndim != 2 or min(z.shape) < 2:
        raise ValueError(f"need an embedding matrix [N >= 2, D >= 2], got shape {tuple(z.shape)}")
    if not torch.isfinite(z).all():
        raise ValueError("the embeddings contain NaN/Inf")
    return z


def rankme(z: torch.Tensor, eps: float = RANKME_EPS) -> float:
    """Effective rank of ``z`` ``[N, D]`` (RankMe, Garrido et al. 2023); between 1 and ``min(N, D)``."""
    s = torch.linalg.svdvals(_matrix(z))
    if float(s.sum()) == 0.0:
        return 1.0
    p = s / s.sum() + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def eigenspectrum(z: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the covariance of ``z``, descending (only the ``min(N - 1, D)`` that can be non-zero)."""
    z = _matrix(z)
    centred = z - z.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(centred)
    ev = s.square() / max(1, z.shape[0] - 1)
    return ev[: min(z.shape[0] - 1, z.shape[1])]


def alpha_req(z: torch.Tensor, rel_floor: float = 1e-10) -> float:
    """Power-law decay coefficient ``alpha`` of the covariance eigenspectrum (alpha-ReQ, Agrawal et al. 2022).

    Least-squares line through ``(log i, log lambda_i)`` over the eigenvalues above ``rel_floor`` times
    the largest (numerically zero ones carry no shape). NaN when fewer than three remain.
    """
    ev = eigenspectrum(z)
    if ev.numel() == 0 or float(ev[0]) <= 0:
        return math.nan
    keep = ev > ev[0] * rel_floor
    ev = ev[keep]
    if ev.numel() < 3:
        return math.nan
    x = torch.log(torch.arange(1, ev.numel() + 1, dtype=torch.float64))
    y = torch.log(ev)
    xc = x - x.mean()
    slope = float((xc * (y - y.mean())).sum() / xc.square().sum())
    return -slope


def label_free(z: torch.Tensor) -> dict[str, float]:
    """Every label-free predictor of an embedding matrix (see :data:`PREDICTORS` for directions) + raw alpha."""
    alpha = alpha_req(z)
    return {"rankme": rankme(z), "alpha_req_gap": abs(alpha - 1.0) if math.isfinite(alpha) else math.nan, "alpha_req": alpha}
