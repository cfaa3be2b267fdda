"""Overlay pictures: which slice is drawn, the grey window, and a PNG that appears whole."""
from __future__ import annotations

import numpy as np
import pytest

from transseg.evaluation.overlays import _display_range, class_colour, overlay_slice, save_overlay


def test_slice_across_the_coarsest_axis_with_the_most_reference_foreground():
    reference = np.zeros((5, 6, 7), np.uint8)
    reference[:, 1:3, 4] = 1          # 10 voxels at x = 4
    reference[2, 1:5, 2:4] = 2        # 8 voxels at z = 2, spread over x = 2, 3
    assert overlay_slice(reference, reference, (3.0, 1.0, 1.0)) == (0, 2)
    assert overlay_slice(reference, reference, (1.0, 1.0, 3.0)) == (2, 4)
    assert overlay_slice(reference, reference, (1.0, 1.0, 1.0))[0] == 0     # a tie: the first axis


def test_slice_falls_back_to_the_prediction_then_the_middle():
    empty = np.zeros((5, 6, 7), np.uint8)
    prediction = empty.copy()
    prediction[4, 0, 0] = 1
    assert overlay_slice(empty, prediction, (3.0, 1.0, 1.0)) == (0, 4)
    assert overlay_slice(empty, empty, (3.0, 1.0, 1.0)) == (0, 2)


def test_grey_window_follows_the_labelled_tissue_not_the_air():
    image = np.full((20, 20), -1000.0)
    image[5:15, 5:15] = np.linspace(40, 60, 100).reshape(10, 10)
    labelled = np.zeros((20, 20), bool)
    labelled[6:14, 6:14] = True
    low, high = _display_range(image, labelled)
    assert -1000 < low < 40 and 60 < high < 100
    assert _display_range(np.zeros((4, 4)), np.zeros((4, 4), bool)) == (0.0, 1.0)


def test_colours_are_fixed_per_value():
    assert class_colour(1) == class_colour(11) != class_colour(2)


@pytest.mark.parametrize("with_image", [True, False])
def test_save_overlay_writes_a_png(tmp_path, with_image):
    from matplotlib.image import imread
    reference = np.zeros((4, 30, 50), np.uint8)
    reference[1:3, 5:20, 10:40] = 1
    prediction = np.roll(reference, 3, axis=2)
    image = np.random.default_rng(0).normal(size=reference.shape) if with_image else None
    path = tmp_path / "overlays" / "case.png"
    assert save_overlay(path, reference, prediction, (2.5, 0.8, 0.8), {1: "organ"}, image, title="case",
                        dice={1: 0.9}) == (0, 1)
    picture = imread(path)
    assert picture.shape[1] > picture.shape[0] > 100           # wide slice, legend on the right
    assert [p.name for p in path.parent.iterdir()] == ["case.png"]
