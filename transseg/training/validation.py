"""Validation during training: each validation case predicted whole, 3D Dice per class on the
preprocessed grid, its mean, and the moving average that chooses checkpoint_best.pt.

The cases are shared out over the ranks and the per-case results gathered, so every rank holds the
same figures afterwards (and the same decision about the best checkpoint).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..inference.volume import InferenceSettings, VolumeModel, predict_classes
from ..preprocessing import load_case
from .distributed import DistributedContext, all_gather_objects


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, num_classes: int) -> list[float]:
    """3D Dice of classes 1..N-1 from one confusion count; a class absent from both scores 1."""
    counts = np.bincount(prediction.ravel().astype(np.int64) * num_classes + reference.ravel(),
                         minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    scores = []
    for c in range(1, num_classes):
        both, predicted, actual = counts[c, c], counts[c].sum(), counts[:, c].sum()
        scores.append(1.0 if predicted + actual == 0 else float(2.0 * both / (predicted + actual)))
    return scores


@dataclass
class ValidationResult:
    per_case: dict[str, list[float]]          # case -> Dice of classes 1..N-1
    per_class: list[float]                    # mean over cases
    mean: float                               # mean over classes

    def record(self, class_names: Sequence[str]) -> dict:
        return {"val_mean_dice": self.mean,
                "val_dice_per_class": {name: score for name, score in zip(class_names[1:], self.per_class)}}


def validate(network: torch.nn.Module, spec, folder: Path, identifiers: Sequence[str], num_classes: int,
             context: DistributedContext, settings: InferenceSettings) -> Optional[ValidationResult]:
    """Dice of every validation case; None when the fold has no validation cases ('all')."""
    if not identifiers:
        return None
    was_training = network.training
    network.eval()
    model = VolumeModel(network, spec)
    mine = {}
    for identifier in list(identifiers)[context.rank::context.world_size]:
        data, seg, _ = load_case(folder, identifier)
        classes = predict_classes([model], data, context.device, settings)
        mine[identifier] = dice_per_class(classes, np.asarray(seg), num_classes)
    network.train(was_training)
    per_case = {k: v for part in all_gather_objects(context, mine) for k, v in part.items()}
    per_class = np.mean(np.array([per_case[i] for i in identifiers]), axis=0).tolist()
    return ValidationResult(per_case, per_class, float(np.mean(per_class)))


def update_ema(previous: Optional[float], value: float, weight: float) -> float:
    """nnU-Net's moving average of the validation Dice (weight of the old value, e.g. 0.9)."""
    return value if previous is None else weight * previous + (1.0 - weight) * value
