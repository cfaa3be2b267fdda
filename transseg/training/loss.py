"""Dice + focal loss, numerically as MONAI's ``DiceFocalLoss(softmax=True, to_onehot_y=True)``.

With MONAI's defaults (background included, smoothing 1e-5 on both sides of the Dice fraction,
``batch=False``, gamma 2, mean reduction, both weights 1):

- Dice: softmax probabilities p against one-hot targets t; per sample and class
  ``1 - (2 sum(p t) + 1e-5) / (sum(p) + sum(t) + 1e-5)``, averaged over samples and classes. A class
  absent from a sample's target scores about 1 unless the network predicts none of it either.
- Focal: MONAI applies it to the *logits* class by class with a sigmoid (its FocalLoss defaults
  to ``use_softmax=False`` inside DiceFocalLoss): ``BCE(x, t) * (1 - p_t) ** gamma``, averaged
  over every element.

The spatial dimensions may be (H, W) for centre-slice prediction or (K, H, W) for ``predict: all``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SMOOTH = 1e-5


@dataclass
class LossParts:
    total: torch.Tensor
    dice: torch.Tensor
    focal: torch.Tensor


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, *spatial) class indices -> (B, num_classes, *spatial) float."""
    return F.one_hot(target.long(), num_classes).movedim(-1, 1).to(torch.float32)


def soft_dice_loss(logits: torch.Tensor, target_one_hot: torch.Tensor) -> torch.Tensor:
    probabilities = torch.softmax(logits.float(), dim=1)
    spatial = tuple(range(2, logits.ndim))
    intersection = (probabilities * target_one_hot).sum(spatial)
    denominator = probabilities.sum(spatial) + target_one_hot.sum(spatial)
    return (1.0 - (2.0 * intersection + SMOOTH) / (denominator + SMOOTH)).mean()


def sigmoid_focal_loss(logits: torch.Tensor, target_one_hot: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target_one_hot, reduction="none")
    # (1 - p_t) ** gamma through logsigmoid, which does not overflow for large logits
    modulation = torch.exp(gamma * F.logsigmoid(-logits * (2.0 * target_one_hot - 1.0)))
    return (modulation * bce).mean()


def dice_focal_loss(logits: torch.Tensor, target: torch.Tensor, lambda_dice: float = 1.0,
                    lambda_focal: float = 1.0, gamma: float = 2.0) -> LossParts:
    """logits (B, N, *spatial), target (B, *spatial) class indices -> total, Dice part, focal part."""
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not fit logits {tuple(logits.shape)}")
    target_one_hot = one_hot(target, logits.shape[1])
    dice = soft_dice_loss(logits, target_one_hot)
    focal = sigmoid_focal_loss(logits, target_one_hot, gamma)
    return LossParts(lambda_dice * dice + lambda_focal * focal, dice, focal)


LOSSES = {"dice_focal": dice_focal_loss}


def get_loss(name: str):
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss '{name}'; choose one of {sorted(LOSSES)}") from None
