"""The per-case pipeline and its exact inverse, shared by preprocessing and prediction.

Forward (:func:`preprocess_case`, or :func:`preprocess_arrays` on arrays already in memory):
reorient per plan -> crop to the non-zero region of all channels -> move the slice axis first ->
resample (slice axis only if planned, then in-plane) -> normalise -> data (C, Z, Y, X) in the
plan's dtype and seg (Z, Y, X) of class indices 0..N-1 in the smallest unsigned type.

Inverse (:func:`restore_segmentation`): a class-index map (or per-class scores) on the
preprocessed grid goes back through every step in reverse, using only the ``properties`` dict
(which is what CASE.json holds), to the original file's grid and label values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..cropping import box_shape, box_slices, nonzero_bounding_box
from ..dataset import CaseFiles, read_case
from ..io import Geometry, orientation_permutation, write_image
from ..paths import TranssegError
from ..planning.plans import DataPlan
from .normalization import intensity_window, normalization_record, normalize_inplace
from .resampling import (argmax_of_resampled, resample_labels, resample_labels_nearest, resample_volume,
                         resampled_size)


# ----------------------------------------------------------------------------------------- helpers
def smallest_unsigned(max_value: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def label_value_dtype(values: Sequence[int]) -> np.dtype:
    """The file type for written label maps: unsigned when possible, else the smallest signed."""
    if min(values) >= 0:
        return smallest_unsigned(max(values))
    for dtype in (np.int8, np.int16, np.int32):
        if np.iinfo(dtype).min <= min(values) and max(values) <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def reorientation(geometry: Geometry, target: Optional[str]) -> dict:
    """How the stored array is turned to the planned orientation (identity when none is planned)."""
    source = geometry.orientation
    if target is None or target.upper() == source:
        return {"source": source, "target": source, "axes": [0, 1, 2], "flips": [False, False, False]}
    axes, flips = orientation_permutation(source, target)
    return {"source": source, "target": target.upper(), "axes": list(axes), "flips": list(flips)}


def apply_reorientation(array: np.ndarray, change: dict) -> np.ndarray:
    """View of a (..., Z, Y, X) array in the target orientation (transpose, then flips)."""
    lead = array.ndim - 3
    out = array.transpose(list(range(lead)) + [lead + a for a in change["axes"]])
    flips = tuple(slice(None, None, -1) if f else slice(None) for f in change["flips"])
    return out[(slice(None),) * lead + flips]


def undo_reorientation(array: np.ndarray, change: dict) -> np.ndarray:
    flips = tuple(slice(None, None, -1) if f else slice(None) for f in change["flips"])
    return array[flips].transpose(np.argsort(change["axes"]))


def labels_to_classes(seg: np.ndarray, label_values: Sequence[int], source: str) -> np.ndarray:
    """File label values -> class indices 0..N-1; an undeclared value is an error naming the file."""
    values = [int(v) for v in label_values]
    dtype = smallest_unsigned(len(values) - 1)
    low, high = int(seg.min()), int(seg.max())
    if values == list(range(len(values))) and low >= 0 and high < len(values):
        return seg.astype(dtype, copy=False)
    if low >= 0 and high <= 65535:
        marker = np.iinfo(np.uint16).max if len(values) > 255 else 255
        table = np.full(high + 1, marker, np.uint16 if len(values) > 255 else np.uint8)
        declared = [v for v in values if v <= high]
        table[declared] = [values.index(v) for v in declared]
        classes = np.take(table, seg)
        unknown = classes == marker
        if unknown.any():
            _undeclared(source, np.unique(seg[unknown]).tolist(), values)
        return classes.astype(dtype, copy=False)
    bad = sorted(set(np.unique(seg).tolist()) - set(values))
    if bad:
        _undeclared(source, bad, values)
    classes = np.zeros(seg.shape, dtype)
    for index, value in enumerate(values):
        classes[seg == value] = index
    return classes


def _undeclared(source: str, bad: list, values: list[int]) -> None:
    raise TranssegError(f"{source}: label value(s) {bad[:10]} are not declared in dataset.json "
                        f"(declared: {values}).")


def class_locations(seg: np.ndarray, num_classes: int) -> dict[str, list[int]]:
    """For each foreground class, the slice indices (axis 0) that contain it: the sampler's index."""
    return {str(c): np.flatnonzero((seg == c).any(axis=(1, 2))).tolist() for c in range(1, num_classes)}


def _check_channels(plan: DataPlan, num_channels: int, source: str) -> None:
    """The one plan check that needs the image; every field was checked when the plans were loaded."""
    if len(plan.normalization) != num_channels:
        raise TranssegError(f"{source}: {num_channels} image channel(s), the plans expect "
                            f"{len(plan.normalization)}.")


# ----------------------------------------------------------------------------------------- forward
def preprocess_arrays(data: np.ndarray, seg: Optional[np.ndarray], geometry: Geometry, plan: DataPlan,
                      label_source: str = "label", image_source: str = "image"
                      ) -> tuple[np.ndarray, Optional[np.ndarray], dict]:
    """Preprocess one case held in memory: data (C, Z, Y, X) as stored, seg (Z, Y, X) label values or None.

    ``image_source`` and ``label_source`` name the files in error messages.
    """
    _check_channels(plan, data.shape[0], image_source)
    change = reorientation(geometry, plan.reorient_to)
    data = apply_reorientation(data, change)
    spacing = np.asarray(geometry.spacing_zyx, dtype=np.float64)[change["axes"]]
    shape_before_crop = list(data.shape[1:])

    box = nonzero_bounding_box(data)
    data = data[(slice(None), *box_slices(box))]

    order = [plan.slice_axis] + [a for a in range(3) if a != plan.slice_axis]
    data = data.transpose([0] + [1 + a for a in order])
    spacing = spacing[order]
    shape_before = list(data.shape[1:])
    target = [plan.slice_spacing, *plan.in_plane_spacing]
    shape_after = [resampled_size(n, s, t) for n, s, t in zip(shape_before, spacing, target)]
    spacing_after = [float(s * n / m) for s, n, m in zip(spacing, shape_before, shape_after)]

    windows = [intensity_window(channel, scheme) for channel, scheme in zip(data, plan.normalization)]
    output = np.empty((data.shape[0], *shape_after), np.dtype(plan.data_dtype))
    for channel, (low, high), out in zip(data, windows, output):
        resample_volume(channel, shape_after, plan.data_interpolation, out=out,
                        post=lambda slab, low=low, high=high: normalize_inplace(slab, low, high))

    num_classes = len(plan.label_values)
    classes = None
    if seg is not None:
        seg = labels_to_classes(seg, plan.label_values, label_source)
        seg = apply_reorientation(seg, change)[box_slices(box)].transpose(order)
        classes = np.ascontiguousarray(resample_labels(seg, shape_after, plan.label_interpolation, num_classes))

    properties = {
        "geometry": geometry.to_dict(),
        "orientation_change": change,
        "shape_before_crop": shape_before_crop,
        "bbox": box,
        "shape_after_crop": box_shape(box),
        "slice_axis": plan.slice_axis,
        "slice_first_order": order,
        "shape_before_resampling": shape_before,
        "spacing_before_resampling": [float(s) for s in spacing],
        "shape_after_resampling": shape_after,
        "spacing_after_resampling": spacing_after,
        "normalization": normalization_record(windows, plan.normalization),
        "data_dtype": output.dtype.name,
        "has_seg": classes is not None,
        "seg_dtype": classes.dtype.name if classes is not None else None,
        "label_values": [int(v) for v in plan.label_values],
        "class_locations": class_locations(classes, num_classes) if classes is not None else None,
    }
    return output, classes, properties


def preprocess_case(case: CaseFiles, plan: DataPlan) -> tuple[np.ndarray, Optional[np.ndarray], dict]:
    """Read a case's files (label if it has one) and preprocess them; each file is read once."""
    data, seg, geometry = read_case(case)
    data, seg, properties = preprocess_arrays(data, seg, geometry, plan, str(case.label), str(case.images[0]))
    properties = {"identifier": case.identifier, "images": [str(p) for p in case.images],
                  "label": str(case.label) if case.label is not None else None, **properties}
    return data, seg, properties


# ----------------------------------------------------------------------------------------- inverse
def restore_segmentation(prediction: np.ndarray, properties: dict) -> np.ndarray:
    """Put a prediction on the preprocessed grid back onto the original file's grid, as label values.

    ``prediction`` is (Z, Y, X) class indices, or (K, Z, Y, X) per-class scores (probabilities or
    logits), which are resampled before the arg-max (smoother than resampling indices). Voxels cut
    away by the crop become background. Returns (Z, Y, X) in the original file's array order.
    """
    shape_after = tuple(properties["shape_after_resampling"])
    if tuple(prediction.shape[-3:]) != shape_after:
        raise TranssegError(f"prediction shape {prediction.shape} does not match the preprocessed grid {shape_after}.")
    shape_before = properties["shape_before_resampling"]
    if prediction.ndim == 4:
        classes = argmax_of_resampled(enumerate(prediction), shape_before,
                                      smallest_unsigned(prediction.shape[0] - 1))
    else:
        classes = resample_labels_nearest(prediction, shape_before)
    return restore_cropped_classes(classes, properties)


def restore_cropped_classes(classes: np.ndarray, properties: dict) -> np.ndarray:
    """Class indices on the cropped grid before resampling (slice axis first) -> label values on the file's grid.

    The second half of :func:`restore_segmentation`, for callers that resample and arg-max slab by
    slab themselves (prediction streams its slices so that no probability volume is ever held).
    """
    if list(classes.shape) != list(properties["shape_before_resampling"]):
        raise TranssegError(f"class map shape {classes.shape} does not match the cropped grid "
                            f"{properties['shape_before_resampling']}.")
    classes = classes.transpose(np.argsort(properties["slice_first_order"]))
    values = properties["label_values"]
    table = np.asarray(values, dtype=label_value_dtype(values))
    if int(classes.max(initial=0)) >= len(values):
        raise TranssegError(f"prediction holds class {int(classes.max())}, but only {len(values)} classes exist.")
    full = np.full(properties["shape_before_crop"], table[0], table.dtype)   # class 0 is background
    full[box_slices(properties["bbox"])] = np.take(table, classes)
    return np.ascontiguousarray(undo_reorientation(full, properties["orientation_change"]))


def export_segmentation(prediction: np.ndarray, properties: dict, path: Union[str, Path]) -> Path:
    """Restore a prediction and write it with the original image's geometry (format from the suffix)."""
    return write_restored(restore_segmentation(prediction, properties), properties, path)


def write_restored(restored: np.ndarray, properties: dict, path: Union[str, Path]) -> Path:
    """Write label values on the file's grid with the original image's geometry; complete or not at all."""
    write_image(restored, Geometry.from_dict(properties["geometry"]), path)
    return Path(path)
