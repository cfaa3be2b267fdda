"""Resampling of images and label maps between grids that cover the same physical extent.

Convention (the one of skimage/nnU-Net/OpenCV): the first and last voxel *edges* stay where they
are, so output voxel ``j`` of ``n_out`` samples input coordinate ``(j + 0.5) * n_in / n_out - 0.5``;
outside the outermost voxel centres the edge value is repeated. Undoing a resampling is therefore
the same operation with the sizes swapped, which is what makes the round trip of labels exact for
integer factors.

Linear interpolation is separable and done with numpy row gathers on small slabs of slices: the
axis being interpolated is always a row axis (the last axis is transposed into that place first),
because ``take`` along the last axis is an element-wise gather and several times slower. Working
slab by slab keeps the temporaries in cache and the memory at a few slices' worth. Cubic goes to
``scipy.ndimage.zoom`` (B-spline, order 3, as skimage and nnU-Net do). torch is never imported:
worker processes would pay seconds for it.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from ..planning.plans import DATA_INTERPOLATIONS, LABEL_INTERPOLATIONS   # the names plans.json may use

SLAB_VOXELS = 1 << 17   # in-plane work is done on slabs of about this many voxels (cache-sized)


def resampled_size(size: int, spacing: float, target_spacing: Optional[float]) -> int:
    """Voxels along one axis after resampling to ``target_spacing`` (None keeps the size)."""
    if target_spacing is None:
        return int(size)
    return max(1, int(round(size * float(spacing) / float(target_spacing))))


def source_coordinates(n_in: int, n_out: int) -> np.ndarray:
    """Continuous input coordinate sampled by each output voxel (extent-preserving convention)."""
    return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Input index of each output voxel for nearest-neighbour resampling."""
    return np.minimum(np.floor((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)), n_in - 1).astype(np.intp)


def linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, upper weight) of each output voxel; edges are repeated."""
    c = np.clip(source_coordinates(n_in, n_out), 0, n_in - 1)
    lower = np.floor(c).astype(np.intp)
    upper = np.minimum(lower + 1, n_in - 1)
    return lower, upper, (c - lower).astype(np.float32)


def _linear_rows(array: np.ndarray, n_out: int) -> np.ndarray:
    """Linear resampling of axis 1 of a (S, N, M) array of any real type, to float32, by row gathers.

    The cast to float32 rides along with the arithmetic instead of being a pass of its own.
    """
    lower, upper, weight = linear_taps(array.shape[1], n_out)
    low = array.take(lower, axis=1)
    out = np.subtract(array.take(upper, axis=1), low, dtype=np.float32)
    out *= weight[None, :, None]
    out += low
    return out


def _linear_in_plane(slab: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Y by row gathers, then X by row gathers on one transposed copy; may return a transposed view."""
    ny, nx = shape
    if slab.shape[1] != ny:
        slab = _linear_rows(slab, ny)
    if slab.shape[2] != nx:
        swapped = np.ascontiguousarray(slab.transpose(0, 2, 1))
        slab = _linear_rows(swapped, nx).transpose(0, 2, 1)
    return slab


def _cubic_in_plane(slab: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    from scipy import ndimage   # imported here: it costs 0.2 s at start-up and only cubic needs it
    zoom = (shape[0] / slab.shape[1], shape[1] / slab.shape[2])
    out = np.empty((slab.shape[0], *shape), np.float32)
    for index, image in enumerate(slab):
        out[index] = ndimage.zoom(image, zoom, order=3, mode="nearest", grid_mode=True, output=np.float32)
    return out


def resample_in_plane(slab: np.ndarray, shape: Sequence[int], kind: str = "linear") -> np.ndarray:
    """Resample the last two axes of a (S, Y, X) slab to ``shape`` as float32.

    An unchanged grid returns the input itself; otherwise the result may be a non-contiguous view
    (callers copy it into their output anyway).
    """
    if tuple(slab.shape[1:]) == tuple(shape):
        return slab
    if kind == "linear":
        return _linear_in_plane(slab, shape)
    if kind == "cubic":
        return _cubic_in_plane(slab, shape)
    raise ValueError(f"unknown data interpolation '{kind}' (expected one of {DATA_INTERPOLATIONS})")


def resample_slices(volume: np.ndarray, n_out: int) -> np.ndarray:
    """Linear resampling along axis 0 of a (Z, ...) float32 array (whole slices are blended)."""
    if volume.shape[0] == n_out:
        return volume
    lower, upper, weight = linear_taps(volume.shape[0], n_out)
    out = volume.take(lower, axis=0)
    high = volume.take(upper, axis=0)
    high -= out
    high *= weight.reshape(-1, *([1] * (volume.ndim - 1)))
    out += high
    return out


def resample_volume(volume: np.ndarray, shape: Sequence[int], kind: str = "linear",
                    out: Optional[np.ndarray] = None, post=None) -> np.ndarray:
    """Resample a (Z, Y, X) array of any real type to ``shape`` into ``out`` (float32 by default).

    The slice axis, when it changes, is resampled linearly first (a float32 copy of the whole
    volume, only when planned); the in-plane axes then slab by slab. ``post(slab)`` may change each float32 slab in place before
    it is stored, which lets normalisation and the cast to float16 ride along without another
    full-size temporary.
    """
    if out is None:
        out = np.empty(tuple(shape), np.float32)
    if volume.shape[0] != shape[0]:
        volume = resample_slices(np.asarray(volume, dtype=np.float32), shape[0])
    step = max(1, SLAB_VOXELS // max(volume.shape[1] * volume.shape[2], int(shape[1]) * int(shape[2])))
    for start in range(0, shape[0], step):
        source = volume[start:start + step]
        slab = resample_in_plane(source, shape[1:], kind)
        if slab is source or slab.dtype != np.float32:
            slab = np.array(slab, dtype=np.float32)    # a private float32 copy for ``post``
        if post is not None:
            post(slab)
        out[start:start + step] = slab
    return out


def resample_labels_nearest(seg: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resampling of a (Z, Y, X) integer array; integer factors are exact replication."""
    result = seg
    for axis, n_out in enumerate(shape):
        if result.shape[axis] != n_out:
            result = result.take(nearest_indices(result.shape[axis], n_out), axis=axis)
    return np.ascontiguousarray(result)


def argmax_of_resampled(scores: Iterable[tuple[int, np.ndarray]], shape: Sequence[int],
                        dtype: np.dtype) -> np.ndarray:
    """Resample each (class index, score volume) linearly to ``shape`` and keep the best class per voxel.

    One running maximum keeps the memory at two float32 volumes whatever the number of classes.
    """
    best = np.full(tuple(shape), -np.inf, np.float32)
    result = np.zeros(tuple(shape), dtype)
    for index, score in scores:
        resampled = resample_volume(score, shape, "linear")
        better = resampled > best
        result[better] = index
        np.maximum(best, resampled, out=best)
    return result


def resample_labels_onehot(seg: np.ndarray, shape: Sequence[int], num_classes: int) -> np.ndarray:
    """Resample each class mask linearly and take the arg-max (nnU-Net's way for labels).

    Nearest-neighbour copies one input voxel per output voxel, so at non-integer factors thin
    structures break up or thicken with the grid phase; voting on blended masks puts each boundary
    where the masks cross, i.e. where it was, and keeps object sizes.
    """
    masks = ((label, mask) for label in range(num_classes) for mask in [seg == label] if mask.any())
    return argmax_of_resampled(masks, shape, seg.dtype)


def resample_labels(seg: np.ndarray, shape: Sequence[int], kind: str, num_classes: int) -> np.ndarray:
    if tuple(seg.shape) == tuple(shape):
        return seg
    if kind == "nearest":
        return resample_labels_nearest(seg, shape)
    if kind == "linear_onehot":
        return resample_labels_onehot(seg, shape, num_classes)
    raise ValueError(f"unknown label interpolation '{kind}' (expected one of {LABEL_INTERPOLATIONS})")
