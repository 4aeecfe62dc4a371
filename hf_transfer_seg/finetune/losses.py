"""Losses: soft Dice over the whole batch, every class including background (the paper's recipe).

segmentation_models_pytorch's ``DiceLoss(mode="multiclass")`` is exactly that: softmax
probabilities, Dice per class with sums over batch *and* pixels, averaged over classes. Binary
targets are two-class problems here (background + foreground softmax), so background counts too.
One detail of smp's implementation: a class with no pixel in the whole batch contributes 0 (its Dice
is undefined there) instead of penalising any probability given to it.
"""

from __future__ import annotations

import torch


def build_loss(name: str = "soft-dice") -> torch.nn.Module:
    from segmentation_models_pytorch.losses import DiceLoss

    dice = DiceLoss(mode="multiclass", from_logits=True)
    if name == "soft-dice":
        return dice
    if name == "soft-dice+ce":
        return _Sum(dice, torch.nn.CrossEntropyLoss())
    raise ValueError(f"unknown loss {name!r}")


class _Sum(torch.nn.Module):
    def __init__(self, *losses: torch.nn.Module):
        super().__init__()
        self.losses = torch.nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(loss(logits, target) for loss in self.losses)
