"""Intensity normalisation to [-1, 1], the range the pre-trained encoder's inputs had.

Both schemes are "clip to [low, high], then map linearly to [-1, 1]"; they differ in where the
window comes from. ``ct``: the plan's fixed Hounsfield window, the same for every case.
``mr_robust``: per case, ``low = min(0, p_low)`` and ``high = p_high`` of the case's non-zero voxels
(percentiles from the plan, e.g. 0.5 and 99.5), so a few hot voxels cannot squash the rest and a
zero background stays at the bottom of the range.

The window is measured on the cropped image *before* resampling (the voxels as acquired); it is
applied after resampling, in place on float32 slabs, so no float64 or full-size temporary exists.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..planning.plans import ChannelNormalization


def _ct_window(channel: np.ndarray, scheme: ChannelNormalization) -> tuple[float, float]:
    if not scheme.clip or len(scheme.clip) != 2:
        raise ValueError("a 'ct' normalisation needs clip: [low, high]")
    return float(scheme.clip[0]), float(scheme.clip[1])


def _mr_robust_window(channel: np.ndarray, scheme: ChannelNormalization) -> tuple[float, float]:
    values = channel[channel != 0]
    if values.size == 0:
        return 0.0, 0.0
    low, high = np.percentile(values, scheme.percentiles or [0.5, 99.5])
    return float(min(0.0, low)), float(high)


# scheme name -> how one case's (low, high) window is found
WINDOWS = {"ct": _ct_window, "mr_robust": _mr_robust_window}


def intensity_window(channel: np.ndarray, scheme: ChannelNormalization) -> tuple[float, float]:
    """The (low, high) window of one channel of one case."""
    if scheme.scheme not in WINDOWS:
        raise ValueError(f"unknown normalisation scheme '{scheme.scheme}' (expected one of {sorted(WINDOWS)})")
    return WINDOWS[scheme.scheme](channel, scheme)


def normalize_inplace(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip a float32 array to [low, high] and map it to [-1, 1] in place; an empty window gives -1."""
    np.clip(values, np.float32(low), np.float32(high), out=values)
    values -= np.float32(low)
    scale = 2.0 / (high - low) if high > low else 0.0
    values *= np.float32(scale)
    values -= np.float32(1.0)
    return values


def normalization_record(windows: Sequence[tuple[float, float]], schemes: Sequence[ChannelNormalization]) -> list[dict]:
    """What CASE.json keeps per channel: the scheme and the window actually used."""
    return [{"scheme": s.scheme, "low": low, "high": high} for (low, high), s in zip(windows, schemes)]
