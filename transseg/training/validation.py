"""Validation during training: each validation case predicted whole, 3D Dice per class on the
preprocessed grid, its mean, and the moving average that chooses checkpoint_best.pt.

:func:`predict_on_rank` is the one way training predicts cases ("these cases, on this rank"):
periodic validation, the final validation and ``--val`` all use it. The cases are dealt out over
the ranks by size, each rank predicts *and scores* its own, and the per-case results are
gathered, so every rank holds the same figures afterwards (and the same decision about the best
checkpoint) and no rank waits while another does single-rank work.

Dice is counted chunk by chunk as the slices are predicted: neither a class volume nor an int64
full-volume temporary is ever built, so a 1000-slice case costs the memory of one chunk.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from ..inference.volume import InferenceSettings, VolumeModel, predict_chunks
from ..parallel import describe_failure
from ..paths import TranssegError
from ..preprocessing import load_case, load_properties
from .distributed import DistributedContext, all_gather_objects, share_cases

Result = TypeVar("Result")
DICE_CHUNK_SLICES = 16


def confusion_counts(prediction: np.ndarray, reference: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts [predicted, actual] of two label arrays of one chunk."""
    index = prediction.astype(np.intp).ravel() * num_classes + np.asarray(reference).ravel()
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def dice_from_counts(counts: np.ndarray) -> list[float]:
    """Dice of classes 1..N-1 from a confusion count; a class absent from both scores 1."""
    scores = []
    for c in range(1, counts.shape[0]):
        both, predicted, actual = counts[c, c], counts[c].sum(), counts[:, c].sum()
        scores.append(1.0 if predicted + actual == 0 else float(2.0 * both / (predicted + actual)))
    return scores


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, num_classes: int,
                   chunk_slices: int = DICE_CHUNK_SLICES) -> list[float]:
    """3D Dice of classes 1..N-1 of two (Z, Y, X) label volumes, counted ``chunk_slices`` slices at a time."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    for z0 in range(0, prediction.shape[0], chunk_slices):
        counts += confusion_counts(np.asarray(prediction[z0:z0 + chunk_slices]),
                                   np.asarray(reference[z0:z0 + chunk_slices]), num_classes)
    return dice_from_counts(counts)


@dataclass
class ValidationResult:
    per_case: dict[str, list[float]]          # case -> Dice of classes 1..N-1
    per_class: list[float]                    # mean over cases
    mean: float                               # mean over classes

    def record(self, class_names: Sequence[str]) -> dict:
        return {"val_mean_dice": self.mean,
                "val_dice_per_class": {name: score for name, score in zip(class_names[1:], self.per_class)}}


def case_sizes(folder: Path, identifiers: Sequence[str]) -> dict[str, int]:
    """Voxels of each preprocessed case (from its CASE.json): the work its prediction takes."""
    return {i: math.prod(load_properties(folder, i)["shape_after_resampling"]) for i in identifiers}


def predict_on_rank(network: torch.nn.Module, folder: Path, identifiers: Sequence[str],
                    context: DistributedContext, work: Callable[[str], Result],
                    description: str = "validating") -> dict[str, Result]:
    """``work(case)`` for this rank's share of ``identifiers``, the network in eval mode; every
    rank gets every case's result back (in ``identifiers`` order).

    The only collective is the gather at the end, reached by each rank after its own share, and
    the shares are balanced by case size, so the wait there is the difference between shares. A
    case that fails stops its rank's share, but the rank still reaches the gather, carrying the
    failure: every rank then raises the same error, naming the case and rank. Otherwise the other
    ranks would wait there for the failed one (with NCCL until the process group's timeout; with
    gloo they fail on a closed connection, naming nothing), since a launcher such as srun does not
    stop the other ranks when one exits.
    """
    mine = share_cases(case_sizes(folder, identifiers), context)
    was_training = network.training
    network.eval()
    results, failure = {}, None
    try:
        for identifier in tqdm(mine, desc=description, unit="case", leave=False, disable=not context.is_main):
            try:
                results[identifier] = work(identifier)
            except Exception as error:       # noqa: BLE001 -- reported on every rank after the gather
                if not context.distributed:
                    raise
                failure = f"{identifier} (rank {context.rank}): {describe_failure(error)}"
                break
    finally:
        network.train(was_training)
    parts = all_gather_objects(context, (results, failure))
    failures = [failed for _, failed in parts if failed is not None]
    if failures:
        raise TranssegError(f"{description} failed on {'; '.join(failures)}")
    gathered = {k: v for part, _ in parts for k, v in part.items()}
    return {identifier: gathered[identifier] for identifier in identifiers}


def validate(network: torch.nn.Module, *, spec, folder: Path, identifiers: Sequence[str], num_classes: int,
             context: DistributedContext, settings: InferenceSettings) -> Optional[ValidationResult]:
    """Dice of every validation case; None when the fold has no validation cases ('all')."""
    if not identifiers:
        return None
    model = VolumeModel(network, spec)

    def dice_of(identifier: str) -> list[float]:
        data, seg, _ = load_case(folder, identifier)
        counts = np.zeros((num_classes, num_classes), np.int64)
        for z0, z1, probabilities in predict_chunks([model], data, context.device, settings):
            counts += confusion_counts(probabilities.argmax(0).cpu().numpy(), seg[z0:z1], num_classes)
        return dice_from_counts(counts)

    per_case = predict_on_rank(network, folder, identifiers, context, dice_of)
    per_class = np.mean(np.array(list(per_case.values())), axis=0).tolist()
    return ValidationResult(per_case, per_class, float(np.mean(per_class)))


def update_ema(previous: Optional[float], value: float, weight: float) -> float:
    """nnU-Net's moving average of the validation Dice (weight of the old value, e.g. 0.9)."""
    return value if previous is None else weight * previous + (1.0 - weight) * value
