"""One PNG per case for a quick look: the slice with the most reference foreground, both contours drawn.

The slice is taken across the axis with the coarsest spacing (the acquisition's slice axis for
typical CT and MR; the first such axis on a tie), at the index where the reference has the most
foreground voxels (the prediction's, when the reference is empty; the middle slice when both are).
The image is drawn in grey (a window fitted to the labelled structures' intensities) or, without an
image, on white; every class is drawn in its own colour, the reference as a solid contour and the
prediction as a dashed one, with the spacing giving the true aspect ratio. Pixels are shown in
array order (first remaining axis downwards), not in a radiological convention.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from ..files import atomic_path

PathLike = Union[str, Path]


def class_colour(value: int) -> tuple[float, float, float]:
    """A fixed colour per label value, so one class looks the same in every case's picture."""
    from matplotlib import colormaps
    palette = colormaps["tab10"].colors
    return tuple(palette[(int(value) - 1) % len(palette)])


def overlay_slice(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float]) -> tuple[int, int]:
    """(axis, index) of the slice to draw: coarsest-spacing axis, most reference foreground on it."""
    axis = int(np.argmax(np.asarray(spacing, float)))
    others = tuple(a for a in range(reference.ndim) if a != axis)
    for label_map in (reference, prediction):
        per_slice = np.count_nonzero(label_map, axis=others)
        if per_slice.any():
            return axis, int(np.argmax(per_slice))
    return axis, reference.shape[axis] // 2


def _display_range(image_slice: np.ndarray, labelled: np.ndarray) -> tuple[float, float]:
    """Grey window: the labelled structures' 5-95 percentile range, widened by that range on each side.

    Local contrast is what makes a contour judgeable: air, padding and bone elsewhere in the slice
    would squeeze the soft tissue into one shade under a whole-slice window.
    """
    inside = image_slice[labelled & np.isfinite(image_slice)]
    if inside.size:
        low, high = np.percentile(inside, [5, 95])
        if high > low:
            return float(low - (high - low)), float(high + (high - low))
    finite = image_slice[np.isfinite(image_slice)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(finite, [1, 99])
    return (float(low), float(high)) if high > low else (float(low), float(low) + 1.0)


def save_overlay(path: PathLike, reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                 names: Mapping[int, str], image: Optional[np.ndarray] = None, title: str = "",
                 dice: Optional[Mapping[int, float]] = None) -> tuple[int, int]:
    """Draw one case (arrays in (Z, Y, X) order, ``spacing`` likewise) to ``path``; returns (axis, index)."""
    from matplotlib.figure import Figure          # no pyplot: no global state, safe in worker processes
    from matplotlib.lines import Line2D

    axis, index = overlay_slice(reference, prediction, spacing)
    take = lambda array: np.take(array, index, axis=axis)   # noqa: E731
    reference_slice, prediction_slice = take(reference), take(prediction)
    rows_spacing, columns_spacing = [s for a, s in enumerate(spacing) if a != axis]
    height, width = reference_slice.shape
    extent = (0, width * columns_spacing, height * rows_spacing, 0)   # mm, so the aspect ratio is true

    scale = 7.0 / max(extent[1], extent[2])   # the longer side 7 inches
    figure = Figure(figsize=(extent[1] * scale, extent[2] * scale), dpi=100)
    ax = figure.add_axes((0, 0, 1, 1))
    if image is not None:
        image_slice = take(np.asarray(image, dtype=np.float32))
        low, high = _display_range(image_slice, (reference_slice != 0) | (prediction_slice != 0))
        ax.imshow(image_slice, cmap="gray", vmin=low, vmax=high, extent=extent, interpolation="nearest")
    else:
        ax.imshow(np.ones_like(reference_slice, dtype=np.float32), cmap="gray", vmin=0, vmax=1, extent=extent)
    ys = (np.arange(height) + 0.5) * rows_spacing
    xs = (np.arange(width) + 0.5) * columns_spacing
    handles = []
    for value, name in names.items():
        colour = class_colour(value)
        for label_slice, style in ((reference_slice, "solid"), (prediction_slice, "dashed")):
            mask = (label_slice == value).astype(np.float32)
            if mask.any():
                ax.contour(xs, ys, mask, levels=[0.5], colors=[colour], linewidths=1.6, linestyles=style)
        score = f" (case Dice {dice[value]:.3f})" if dice is not None and value in dice else ""
        handles.append(Line2D([], [], color=colour, lw=3, label=f"{value}: {name}{score}"))
    handles += [Line2D([], [], color="0.3", lw=1.6, ls="solid", label="reference"),
                Line2D([], [], color="0.3", lw=1.6, ls="dashed", label="prediction")]
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_axis_off()
    ax.set_title(f"{title}   axis {axis} ({'zyx'[axis] if reference.ndim == 3 else axis}), slice {index}",
                 fontsize=10)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", bbox_inches="tight", pad_inches=0.1)
    return axis, index
