"""Resampling and normalisation against independent references (scipy, skimage, plain numpy in float64)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import transform     # in the test extras: this reference must run, never be skipped

from transseg.planning.plans import ChannelNormalization
from transseg.preprocessing.normalization import intensity_window, normalize_inplace
from transseg.preprocessing.resampling import (resample_in_plane, resample_labels, resample_labels_nearest,
                                               resample_labels_onehot, resample_volume, resampled_size)


def zoom_reference(volume: np.ndarray, shape, order: int = 1) -> np.ndarray:
    """scipy's zoom with the same edge-aligned grid (grid_mode) and edge repetition."""
    zoom = [t / s for t, s in zip(shape, volume.shape)]
    return ndimage.zoom(volume.astype(np.float64), zoom, order=order, mode="nearest", grid_mode=True)


@pytest.mark.parametrize("shape", [(7, 45, 29), (7, 17, 80), (7, 30, 31), (11, 30, 40)])
def test_linear_matches_scipy_zoom(shape):
    volume = np.random.default_rng(1).normal(0, 100, (7, 30, 40)).astype(np.int16)
    ours = resample_volume(volume, shape, "linear")
    assert ours.dtype == np.float32 and ours.shape == shape
    assert np.abs(ours - zoom_reference(volume, shape)).max() < 1e-3     # float32 arithmetic on |values| ~ 400


def test_cubic_matches_skimage_resize():
    volume = np.random.default_rng(2).normal(0, 1, (3, 32, 24)).astype(np.float32)
    ours = resample_volume(volume, (3, 50, 37), "cubic")
    for index in range(3):
        reference = transform.resize(volume[index].astype(np.float64), (50, 37), order=3, mode="edge", clip=False,
                                     anti_aliasing=False)
        assert np.abs(ours[index] - reference).max() < 1e-4


def test_unchanged_grid_is_skipped():
    slab = np.zeros((2, 8, 9), np.float32)
    assert resample_in_plane(slab, (8, 9)) is slab
    seg = np.zeros((3, 8, 9), np.uint8)
    assert resample_labels(seg, (3, 8, 9), "nearest", 2) is seg
    assert resampled_size(100, 0.8, None) == 100 and resampled_size(100, 0.8, 0.4) == 200


@pytest.mark.parametrize("factor", [2, 3])
def test_integer_nearest_round_trip_is_exact(factor):
    seg = np.random.default_rng(3).integers(0, 5, (4, 13, 7)).astype(np.uint8)
    up = resample_labels_nearest(seg, (4 * factor, 13 * factor, 7 * factor))
    assert np.array_equal(up[::factor, ::factor, ::factor], seg)         # replication
    assert np.array_equal(resample_labels_nearest(up, seg.shape), seg)   # and back


def test_onehot_equals_nearest_for_double_size_and_keeps_a_step_edge_in_place():
    seg = np.random.default_rng(4).integers(0, 4, (3, 10, 12)).astype(np.uint8)
    shape = (3, 20, 24)
    assert np.array_equal(resample_labels_onehot(seg, shape, 4), resample_labels_nearest(seg, shape))

    step = np.zeros((1, 1, 40), np.uint8)
    step[..., 17:] = 1                                         # edge at x = 17 input voxels
    for n_out in (23, 31, 57, 71):
        out = resample_labels(step, (1, 1, n_out), "linear_onehot", 2)[0, 0]
        edge = np.flatnonzero(out)[0] * 40 / n_out               # the edge in input voxel units
        assert out[np.flatnonzero(out)[0]:].all() and abs(edge - 17) <= 0.5 * 40 / n_out + 1e-9


def _disk(size: int, centre, radius: float, extent: int = 40) -> np.ndarray:
    """A continuous disk (in units of the ``extent``-voxel grid) sampled at the centres of a ``size`` grid."""
    c = (np.arange(size) + 0.5) * (extent / size) - 0.5
    return (c[:, None] - centre[0]) ** 2 + (c[None, :] - centre[1]) ** 2 <= radius ** 2


@pytest.mark.parametrize("n_out", [23, 31, 57, 97])
def test_onehot_recovers_small_structures_better_than_nearest(n_out):
    """Small disks drawn on a 40-voxel grid, resampled both ways; scored against the same disks drawn
    directly on the new grid. Not every disk is better, the mean over 40 of them is, at every factor."""
    rng = np.random.default_rng(7)
    scores = {"linear_onehot": [], "nearest": []}
    for _ in range(40):
        centre, radius = rng.uniform(15, 25, 2), rng.uniform(1.5, 5)
        source = _disk(40, centre, radius).astype(np.uint8)[None]
        truth = _disk(n_out, centre, radius)
        for kind, found in scores.items():
            out = resample_labels(source, (1, n_out, n_out), kind, 2)[0] > 0
            found.append(2 * (out & truth).sum() / (out.sum() + truth.sum()))
    onehot, nearest = np.mean(scores["linear_onehot"]), np.mean(scores["nearest"])
    assert onehot > nearest + 0.005, (onehot, nearest)


def test_ct_normalisation_matches_reference():
    values = np.random.default_rng(5).normal(40, 300, (4, 16, 16)).astype(np.float32)
    window = intensity_window(values, ChannelNormalization("ct", clip=[-175.0, 250.0]))
    assert window == (-175.0, 250.0)
    reference = (np.clip(values.astype(np.float64), -175, 250) + 175) / 425 * 2 - 1
    ours = normalize_inplace(values.copy(), *window).astype(np.float16)
    assert np.abs(ours.astype(np.float64) - reference).max() <= 1e-3
    assert ours.min() == -1 and ours.max() == 1


def test_mr_robust_window_uses_nonzero_percentiles():
    rng = np.random.default_rng(6)
    values = np.zeros((4, 20, 20), np.float32)
    values[:, 5:15, 5:15] = rng.gamma(4.0, 100.0, (4, 10, 10))
    values[0, 6, 6] = 1e6                                      # one hot voxel must not set the scale
    low, high = intensity_window(values, ChannelNormalization("mr_robust", percentiles=[0.5, 99.5]))
    foreground = values[values != 0].astype(np.float64)
    assert low == 0.0 and high == pytest.approx(np.percentile(foreground, 99.5)) and high < 1e4
    negative = values - 50
    low, _ = intensity_window(negative, ChannelNormalization("mr_robust", percentiles=[0.5, 99.5]))
    assert low == pytest.approx(np.percentile(negative[negative != 0].astype(np.float64), 0.5)) and low < 0
    empty = np.zeros((2, 3, 3), np.float32)
    window = intensity_window(empty, ChannelNormalization("mr_robust", percentiles=[0.5, 99.5]))
    assert window == (0.0, 0.0) and (normalize_inplace(empty, *window) == -1).all()
