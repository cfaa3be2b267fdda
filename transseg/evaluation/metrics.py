"""Overlap and surface metrics of one reference/prediction pair, in mm: numpy and scipy only.

Definitions (aligned with MONAI 1.x ``compute_hausdorff_distance``, ``compute_surface_dice`` and
``DiceMetric``, so numbers can be compared with published MONAI-based results):

- **Surface** of a mask: its voxels that have at least one of their 6 face neighbours outside the
  mask (``mask & ~binary_erosion(mask)`` with the 6-connected cross); a voxel on the image border
  counts as surface, because outside the image is background. This is MONAI's edge extraction
  when no sub-voxel areas are asked for.
- **Surface distances**: for each surface voxel of one mask, the Euclidean distance in mm (voxel
  centres scaled by the spacing) to the nearest surface voxel of the other mask; exact, computed
  with a KD-tree (what MONAI does on CPU; ``distance_transform_edt(sampling=spacing)`` gives the
  same values, more slowly on large crops).
- **HD95**: the larger of the two directed 95th percentiles (linear interpolation, as
  ``numpy.percentile`` and ``torch.quantile``).
- **NSD** (normalised surface distance / surface Dice): surface voxels of both masks that lie
  within ``tolerance_mm`` (``<=``) of the other surface, divided by the number of surface voxels of
  both masks.

Empty masks are defined, never NaN (see :data:`BOTH_EMPTY` and :func:`binary_metrics`).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

DEFAULT_TOLERANCE_MM = 2.0
METRICS = ("dice", "iou", "hd95", "nsd")
_CROSS_3D = ndimage.generate_binary_structure(3, 1)

# A class absent from both reference and prediction was predicted correctly as absent.
BOTH_EMPTY = {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "nsd": 1.0}


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length of the image's diagonal in mm: the HD95 given when exactly one of the two masks is empty.

    It exceeds the distance between any two voxels of the image, so a missed or invented structure
    scores worse than the worst real contour (BraTS uses the same rule, 373.13 mm for its 240x240x155 grid).
    """
    return float(np.sqrt(np.sum((np.asarray(shape, float) * np.asarray(spacing, float)) ** 2)))


def _crop_to_union(reference: np.ndarray, prediction: np.ndarray, margin: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of their union plus ``margin`` voxels (inside the image)."""
    union = reference | prediction
    box = []
    for axis in range(union.ndim):
        others = tuple(a for a in range(union.ndim) if a != axis)
        present = np.flatnonzero(union.any(axis=others))
        box.append(slice(max(int(present[0]) - margin, 0), int(present[-1]) + 1 + margin))
    box = tuple(box)
    return reference[box], prediction[box]


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (the image border counts as outside)."""
    mask = np.asarray(mask, bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1) if mask.ndim != 3 else _CROSS_3D
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(reference: np.ndarray, prediction: np.ndarray,
                      spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(prediction surface -> reference surface, reference surface -> prediction surface) in mm.

    Both masks must be non-empty. Distances are unchanged by cropping to the union's bounding box
    (every surface voxel lies inside it), which is what makes large images fast.
    """
    reference, prediction = _crop_to_union(np.asarray(reference, bool), np.asarray(prediction, bool))
    scale = np.asarray(spacing, dtype=np.float64)
    reference_points = np.argwhere(surface(reference)) * scale
    prediction_points = np.argwhere(surface(prediction)) * scale
    to_reference = cKDTree(reference_points, leafsize=32).query(prediction_points, k=1)[0]
    to_prediction = cKDTree(prediction_points, leafsize=32).query(reference_points, k=1)[0]
    return to_reference, to_prediction


def hd95_from_distances(to_reference: np.ndarray, to_prediction: np.ndarray) -> float:
    """Symmetric 95th-percentile Hausdorff distance: the larger directed 95th percentile."""
    return float(max(np.percentile(to_reference, 95), np.percentile(to_prediction, 95)))


def nsd_from_distances(to_reference: np.ndarray, to_prediction: np.ndarray, tolerance_mm: float) -> float:
    """Fraction of both surfaces' voxels within ``tolerance_mm`` of the other surface."""
    within = np.count_nonzero(to_reference <= tolerance_mm) + np.count_nonzero(to_prediction <= tolerance_mm)
    return float(within / (to_reference.size + to_prediction.size))


def dice_score(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Dice of two boolean masks with :func:`binary_metrics`' conventions (both empty: 1, one empty: 0),
    without the surface distances that function also computes."""
    total = int(np.count_nonzero(reference)) + int(np.count_nonzero(prediction))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(reference & prediction)) / total


def binary_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                   tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> dict[str, float]:
    """Dice, IoU, HD95 (mm) and NSD of two boolean masks on one grid with ``spacing`` (array order).

    Both empty: :data:`BOTH_EMPTY` (Dice 1, IoU 1, HD95 0, NSD 1). Exactly one empty: Dice 0,
    IoU 0, NSD 0 and HD95 = :func:`image_diagonal_mm`. Every value is finite.
    """
    reference = np.asarray(reference, bool)
    prediction = np.asarray(prediction, bool)
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} differs from prediction shape {prediction.shape}")
    if len(spacing) != reference.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not have one value per axis of shape {reference.shape}")
    if not np.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise ValueError(f"tolerance must be a finite number >= 0 mm, got {tolerance_mm}")
    reference_voxels = int(np.count_nonzero(reference))
    prediction_voxels = int(np.count_nonzero(prediction))
    counts = {"reference_voxels": reference_voxels, "prediction_voxels": prediction_voxels}
    if reference_voxels == 0 and prediction_voxels == 0:
        return {**BOTH_EMPTY, **counts}
    if reference_voxels == 0 or prediction_voxels == 0:
        return {"dice": 0.0, "iou": 0.0, "hd95": image_diagonal_mm(reference.shape, spacing), "nsd": 0.0,
                **counts}
    intersection = int(np.count_nonzero(reference & prediction))
    to_reference, to_prediction = surface_distances(reference, prediction, spacing)
    return {
        "dice": 2.0 * intersection / (reference_voxels + prediction_voxels),
        "iou": intersection / (reference_voxels + prediction_voxels - intersection),
        "hd95": hd95_from_distances(to_reference, to_prediction),
        "nsd": nsd_from_distances(to_reference, to_prediction, tolerance_mm),
        **counts,
    }


def evaluate_case(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                  labels: Union[Mapping[int, str], Iterable[int], None] = None,
                  tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> dict[int, dict[str, float]]:
    """Metrics per foreground label value of two label maps on one grid (``spacing`` in array order).

    ``labels``: the values to score (a dict's keys, or any iterable; 0 = background is skipped);
    None scores every non-zero value found in either map.
    """
    reference = np.asarray(reference)
    prediction = np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} differs from prediction shape {prediction.shape}")
    values = present_values(reference, prediction) if labels is None else sorted(int(v) for v in labels)
    return {value: binary_metrics(reference == value, prediction == value, spacing, tolerance_mm)
            for value in values if value != 0}


def present_values(*label_maps: np.ndarray) -> list[int]:
    """Sorted non-zero values found in any of the label maps."""
    found: set[int] = set()
    for label_map in label_maps:
        label_map = np.asarray(label_map)
        if label_map.size and label_map.dtype.kind in "iub" and 0 <= label_map.min() and label_map.max() < 2 ** 16:
            # counting beats sorting (np.unique) tenfold on large volumes; a slice at a time keeps memory flat
            counts = np.zeros(int(label_map.max()) + 1, np.int64)
            for part in label_map.reshape(label_map.shape[0], -1) if label_map.ndim > 1 else [label_map]:
                counts += np.bincount(part, minlength=counts.size)
            found.update(int(v) for v in np.flatnonzero(counts))
        else:
            found.update(int(v) for v in np.unique(label_map))
    found.discard(0)
    return sorted(found)


def mean_metrics(per_case: Iterable[Mapping[str, float]], keys: Sequence[str] = METRICS) -> Optional[dict[str, float]]:
    """Plain mean of each metric over the given entries; None when there are none."""
    entries = list(per_case)
    if not entries:
        return None
    return {key: float(np.mean([entry[key] for entry in entries])) for key in keys}
