"""Cut one augmented training window out of a memory-mapped case: one resampling, nothing else.

Zoom, rotation, in-plane flips and the crop-or-pad back to the input size are a single affine
map from output pixels to source pixels, so the window is sampled once with ``grid_sample``
(bilinear for the image, nearest for the label) from just the source rectangle it covers; only
those rows and columns of the K slices are ever read from the memory map. Outside the case the
image is padded with -1 (the bottom of the normalised range: air, or an MR background) and the
label with background.

Coordinates: a source pixel k spans [k, k + 1) ("edge" coordinates, its centre at k + 0.5);
output pixel (i, j) sits at (i + 0.5 - H/2, j + 0.5 - W/2) from the crop centre.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..inference.window_spec import PAD_VALUE, WindowSpec
from ..preprocessing import read_window
from .augmentation_nnunet import augment_intensities
from .sampling import Augmentation, WindowDraw

_QUARTER_TURNS = {0.0: (1, 0), 90.0: (0, 1), 180.0: (-1, 0), 270.0: (0, -1)}   # degrees -> (cos, sin)


def _cos_sin(degrees: float) -> tuple[float, float]:
    """Exact values for quarter turns, so that unzoomed quarter turns move pixels without blending."""
    exact = _QUARTER_TURNS.get(float(degrees) % 360.0)
    if exact is not None:
        return float(exact[0]), float(exact[1])
    radians = math.radians(degrees)
    return math.cos(radians), math.sin(radians)


def crop_centre(length: int, extent: float, position: float, keep: Optional[int] = None) -> float:
    """Edge coordinate of the crop centre along one axis.

    A case longer than the crop is cropped at a random place (``position`` in [0, 1)), keeping
    pixel ``keep`` inside when given; a shorter one is padded evenly, as MONAI's SpatialPad does.
    """
    if extent >= length:
        return length / 2.0
    low, high = extent / 2.0, length - extent / 2.0
    if keep is not None:
        low, high = max(low, keep + 1 - extent / 2.0), min(high, keep + extent / 2.0)
        if low > high:
            low = high = min(max(keep + 0.5, extent / 2.0), length - extent / 2.0)
    return low + position * (high - low)


def _snap(centre: float, output: int) -> float:
    """Put the crop on whole pixels (no blending) when the scale is 1."""
    return math.floor(centre - output / 2.0 + 0.5) + output / 2.0


def sampling_grid(spec: WindowSpec, centre_yx: tuple[float, float], augmentation: Augmentation) -> np.ndarray:
    """(H, W, 2) source edge coordinates (y, x) of every output pixel."""
    height, width = spec.resolution
    u = np.arange(height, dtype=np.float64) + 0.5 - height / 2.0
    v = np.arange(width, dtype=np.float64) + 0.5 - width / 2.0
    if augmentation.flip_rows:
        u = -u
    if augmentation.flip_columns:
        v = -v
    cos, sin = _cos_sin(augmentation.rotation_degrees)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    scale = 1.0 / augmentation.zoom
    y = centre_yx[0] + scale * (cos * uu - sin * vv)
    x = centre_yx[1] + scale * (sin * uu + cos * vv)
    return np.stack([y, x], axis=-1)


def _source_box(grid: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Rows and columns [y0, y1) x [x0, x1) that bilinear sampling of ``grid`` touches.

    The grid is an affine image of a rectangle, so its extremes are at the four corners.
    """
    corners = grid[[0, 0, -1, -1], [0, -1, 0, -1]]
    low = np.floor(corners.min(axis=0) - 0.5).astype(int)
    high = np.floor(corners.max(axis=0) - 0.5).astype(int) + 2
    y0, x0 = np.maximum(low, 0)
    y1, x1 = np.minimum(high, shape)
    return int(y0), max(int(y1), int(y0) + 1), int(x0), max(int(x1), int(x0) + 1)


def _normalised(grid: np.ndarray, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Edge coordinates -> grid_sample's [-1, 1] (align_corners=False) relative to the box; (x, y) order."""
    y0, y1, x0, x1 = box
    gy = 2.0 * (grid[..., 0] - y0) / (y1 - y0) - 1.0
    gx = 2.0 * (grid[..., 1] - x0) / (x1 - x0) - 1.0
    return torch.from_numpy(np.stack([gx, gy], axis=-1).astype(np.float32))[None]


def forced_voxel(seg_slice: np.ndarray, forced_class: int, choice: float) -> Optional[tuple[int, int]]:
    """The (row, column) of the ``choice``-th voxel of ``forced_class`` in one label slice."""
    positions = np.flatnonzero(np.asarray(seg_slice) == forced_class)
    if positions.size == 0:
        return None
    flat = int(positions[min(int(choice * positions.size), positions.size - 1)])
    return divmod(flat, seg_slice.shape[1])


def cut_window(data: np.ndarray, seg: Optional[np.ndarray], draw: WindowDraw,
               spec: WindowSpec) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Image (C, K, H, W) float32 and label (H, W) or (K, H, W) int64 of one drawn window.

    ``data`` is (C, Z, Y, X) and ``seg`` (Z, Y, X), typically memory maps of a CASE.npz.
    """
    augmentation = draw.augmentation
    shape = (int(data.shape[2]), int(data.shape[3]))
    keep = None
    if draw.forced_class is not None and seg is not None:
        keep = forced_voxel(seg[draw.centre], draw.forced_class, draw.voxel_choice)
    extent = [r / augmentation.zoom for r in spec.resolution]
    centre = [crop_centre(n, e, p, None if keep is None else k)
              for n, e, p, k in zip(shape, extent, draw.position, keep or (None, None))]
    if augmentation.zoom == 1.0:
        centre = [_snap(c, r) for c, r in zip(centre, spec.resolution)]
    grid = sampling_grid(spec, tuple(centre), augmentation)
    box = _source_box(grid, shape)
    y0, y1, x0, x1 = box
    normalised = _normalised(grid, box)

    window = read_window(data[:, :, y0:y1, x0:x1], draw.centre, spec.slices, spec.stride, axis=1)
    image = torch.from_numpy(np.asarray(window, dtype=np.float32))          # (C, K, h, w)
    if augmentation.flip_slices:
        image = image.flip(1)
    channels, slices = image.shape[:2]
    # grid_sample pads with 0: sample (image + 1) and subtract 1 to pad with -1
    shifted = image.reshape(1, channels * slices, y1 - y0, x1 - x0) + (augmentation.intensity_shift - PAD_VALUE)
    sampled = F.grid_sample(shifted, normalised, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = (sampled + PAD_VALUE)[0].reshape(channels, slices, *spec.resolution)
    if augmentation.intensity_seed is not None:                  # preset 'nnunet'
        augment_intensities(sampled.numpy(), augmentation.intensity_seed)
    if seg is None:
        return sampled.contiguous(), None

    labels = read_window(seg[:, y0:y1, x0:x1], draw.centre, spec.label_slices, spec.stride, axis=0)
    labels = torch.from_numpy(np.asarray(labels, dtype=np.float32))       # (1 or K, h, w)
    if augmentation.flip_slices and spec.predict == "all":
        labels = labels.flip(0)
    target = F.grid_sample(labels[None], normalised, mode="nearest", padding_mode="zeros", align_corners=False)[0]
    target = target.round().long()
    return sampled.contiguous(), (target[0] if spec.predict != "all" else target)
