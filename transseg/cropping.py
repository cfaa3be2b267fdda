"""Crop to the non-zero region of all channels together, as nnU-Net does.

nnU-Net fills holes in the non-zero mask before taking its bounding box; filling holes never moves
a bounding box, so the box is taken from the mask directly, which is much cheaper.
"""
from __future__ import annotations

import numpy as np

Box = list[list[int]]  # per array axis [start, stop)


def nonzero_bounding_box(data: np.ndarray) -> Box:
    """Bounding box of voxels non-zero in any channel of (C, Z, Y, X); the whole grid when all are zero."""
    mask = np.any(data != 0, axis=0)
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=others))
        if present.size == 0:
            return [[0, s] for s in mask.shape]
        box.append([int(present[0]), int(present[-1]) + 1])
    return box


def box_slices(box: Box) -> tuple[slice, ...]:
    return tuple(slice(start, stop) for start, stop in box)


def box_shape(box: Box) -> list[int]:
    return [stop - start for start, stop in box]
