"""Metrics: hand-computed values on tiny arrays, the empty cases, and agreement with MONAI's definitions."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from transseg.evaluation.metrics import (BOTH_EMPTY, binary_metrics, evaluate_case, image_diagonal_mm,
                                         mean_metrics, present_values, surface, surface_distances)


def cube(shape, start, size=3):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def test_surface_of_a_cube_is_all_but_its_centre():
    mask = cube((5, 5, 5), (1, 1, 1))
    edges = surface(mask)
    assert edges.sum() == 26 and not edges[2, 2, 2]


def test_surface_counts_voxels_on_the_image_border():
    full = np.ones((3, 4, 5), bool)
    edges = surface(full)
    assert edges.sum() == full.size - 1 * 2 * 3 and not edges[1, 1, 1] and edges[0, 1, 1]


def test_cubes_one_slice_apart_by_hand():
    # 3x3x3 cubes shifted one slice along z, spacing 2.5 mm in z and 1 mm in-plane. Directed distances
    # (either way, 26 each): 16 surface voxels coincide (0), 1 face centre lies 1 mm from the other
    # surface, the 9 voxels of the outer face lie 2.5 mm away.
    reference, prediction = cube((6, 5, 5), (0, 1, 1)), cube((6, 5, 5), (1, 1, 1))
    spacing = (2.5, 1.0, 1.0)
    to_reference, to_prediction = surface_distances(reference, prediction, spacing)
    for distances in (to_reference, to_prediction):
        assert sorted(distances.tolist()) == pytest.approx([0.0] * 16 + [1.0] + [2.5] * 9)
    result = binary_metrics(reference, prediction, spacing, tolerance_mm=2.0)
    assert result["dice"] == pytest.approx(2 * 18 / 54)
    assert result["iou"] == pytest.approx(18 / 36)
    assert result["hd95"] == pytest.approx(2.5)
    assert result["nsd"] == pytest.approx(34 / 52)
    assert binary_metrics(reference, prediction, spacing, tolerance_mm=2.5)["nsd"] == 1.0
    assert binary_metrics(reference, prediction, spacing, tolerance_mm=0.5)["nsd"] == pytest.approx(32 / 52)
    assert (result["reference_voxels"], result["prediction_voxels"]) == (27, 27)


def test_single_voxels_apart_by_hand_and_anisotropic_spacing_counts():
    reference = np.zeros((4, 4, 6), bool)
    prediction = reference.copy()
    reference[1, 1, 1] = True
    prediction[2, 1, 4] = True                       # 1 voxel in z (3 mm), 3 voxels in x (0.5 mm each)
    result = binary_metrics(reference, prediction, (3.0, 1.0, 0.5), tolerance_mm=3.0)
    expected = math.hypot(3.0, 1.5)
    assert result["hd95"] == pytest.approx(expected)
    assert (result["dice"], result["iou"], result["nsd"]) == (0.0, 0.0, 0.0)
    assert binary_metrics(reference, prediction, (3.0, 1.0, 0.5), tolerance_mm=expected)["nsd"] == 1.0


def test_hd95_is_a_percentile_not_the_maximum():
    # a 2x2x2 cube and a one-voxel outlier 38 voxels away: prediction->reference distances are eight 0s
    # and one 38; the 95th percentile interpolates at index 0.95 * 8 = 7.6, i.e. 0.6 * 38
    reference = cube((2, 2, 40), (0, 0, 0), size=2)
    prediction = reference.copy()
    prediction[0, 0, 39] = True
    to_reference, to_prediction = surface_distances(reference, prediction, (1.0, 1.0, 1.0))
    assert to_reference.max() == pytest.approx(38.0) and to_prediction.max() == 0.0
    assert binary_metrics(reference, prediction, (1.0, 1.0, 1.0))["hd95"] == pytest.approx(0.6 * 38.0)
    # behind a 26-voxel surface the outlier is under 5% of the points and vanishes from HD95
    reference = cube((3, 3, 40), (0, 0, 0))
    prediction = reference.copy()
    prediction[1, 1, 39] = True
    assert binary_metrics(reference, prediction, (1.0, 1.0, 1.0))["hd95"] == 0.0


def test_both_empty_is_a_perfect_score():
    empty = np.zeros((4, 5, 6), bool)
    result = binary_metrics(empty, empty, (2.0, 1.0, 1.0))
    assert {k: result[k] for k in BOTH_EMPTY} == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "nsd": 1.0}


@pytest.mark.parametrize("reference_empty", [True, False])
def test_one_empty_scores_zero_and_the_image_diagonal(reference_empty):
    empty, mask = np.zeros((4, 5, 6), bool), cube((4, 5, 6), (0, 1, 1), 2)
    reference, prediction = (empty, mask) if reference_empty else (mask, empty)
    result = binary_metrics(reference, prediction, (2.0, 1.0, 1.0))
    assert result["hd95"] == pytest.approx(math.sqrt(8 ** 2 + 5 ** 2 + 6 ** 2))
    assert (result["dice"], result["iou"], result["nsd"]) == (0.0, 0.0, 0.0)
    assert all(math.isfinite(v) for v in result.values())


def test_image_diagonal_uses_the_spacing():
    assert image_diagonal_mm((155, 240, 240), (1, 1, 1)) == pytest.approx(373.13, abs=0.01)   # BraTS' value
    assert image_diagonal_mm((2, 3, 4), (2.0, 1.0, 0.5)) == pytest.approx(math.sqrt(16 + 9 + 4))


def test_bad_input_is_refused():
    mask = np.ones((2, 2, 2), bool)
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(mask, np.ones((2, 2, 3), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(mask, mask, (1, 1))
    with pytest.raises(ValueError, match="tolerance"):
        binary_metrics(mask, mask, (1, 1, 1), tolerance_mm=float("nan"))


def test_evaluate_case_scores_each_label_and_skips_background():
    reference = np.zeros((6, 5, 5), np.uint8)
    prediction = reference.copy()
    reference[cube(reference.shape, (0, 1, 1))] = 3
    prediction[cube(reference.shape, (1, 1, 1))] = 3
    prediction[5, 0, 0] = 7                                  # a class only the prediction has
    spacing = (2.5, 1.0, 1.0)
    found = evaluate_case(reference, prediction, spacing)
    assert sorted(found) == [3, 7]
    assert found[3]["dice"] == pytest.approx(2 / 3) and found[7]["dice"] == 0.0
    declared = evaluate_case(reference, prediction, spacing, {0: "background", 3: "liver", 5: "spleen"})
    assert sorted(declared) == [3, 5]
    assert {k: declared[5][k] for k in BOTH_EMPTY} == BOTH_EMPTY


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32])
def test_present_values(dtype):
    a = np.zeros((3, 4, 5), dtype)
    a[0, 0, 0], a[2, 3, 4] = 5, 2
    b = np.full((3, 4, 5), 9, dtype)
    assert present_values(a) == [2, 5] and present_values(a, b) == [2, 5, 9]


def test_mean_metrics():
    entries = [{"dice": 1.0, "iou": 1.0, "hd95": 0.0, "nsd": 1.0}, {"dice": 0.0, "iou": 0.5, "hd95": 4.0, "nsd": 0.0}]
    assert mean_metrics(entries) == {"dice": 0.5, "iou": 0.75, "hd95": 2.0, "nsd": 0.5}
    assert mean_metrics([]) is None


# --- agreement with MONAI (a test-only reference; never imported by the package) ---------------------

def random_blob(rng: np.random.Generator, shape, threshold: float) -> np.ndarray:
    """A smooth random shape: thresholded Gaussian-filtered noise, sometimes touching the border."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(1.0, 2.5, 2.5))
    return field > threshold * field.std()


SPACINGS = [(3.0, 0.8, 0.7), (5.0, 0.5, 0.5), (1.25, 1.0, 2.0)]


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_monai(seed):
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(10, 18)), int(rng.integers(24, 40)), int(rng.integers(24, 40)))
    spacing = SPACINGS[seed % len(SPACINGS)]
    reference = random_blob(rng, shape, 0.8)
    prediction = random_blob(rng, shape, 0.8) | ndimage.binary_dilation(reference) if seed % 2 else \
        ndimage.binary_erosion(reference) ^ random_blob(rng, shape, 1.8)
    assert reference.any() and prediction.any()
    tensor = lambda mask: torch.from_numpy(mask[None, None].astype(np.float32))   # noqa: E731
    tolerances = (1.0, 2.0, 4.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_hd95 = monai_metrics.compute_hausdorff_distance(tensor(prediction), tensor(reference),
                                                              include_background=True, percentile=95,
                                                              spacing=list(spacing)).item()
        monai_nsd = [monai_metrics.compute_surface_dice(tensor(prediction), tensor(reference), [t],
                                                        include_background=True, spacing=list(spacing)).item()
                     for t in tolerances]
        monai_dice = monai_metrics.DiceMetric(include_background=True, reduction="none")(
            tensor(prediction), tensor(reference)).item()
    ours = [binary_metrics(reference, prediction, spacing, t) for t in tolerances]
    # MONAI works in float32: distances agree to float32 precision, the counts behind NSD exactly
    # (no distance lies within float32 rounding of these tolerances on these grids).
    assert ours[0]["hd95"] == pytest.approx(monai_hd95, rel=1e-5)
    assert ours[0]["dice"] == pytest.approx(monai_dice, rel=1e-6)
    for result, expected in zip(ours, monai_nsd):
        assert result["nsd"] == pytest.approx(expected, abs=1e-6)
    assert ours[0]["nsd"] < ours[-1]["nsd"]            # the tolerances do matter on these shapes


def test_agrees_with_monai_distance_transform_definition():
    """The KD-tree distances equal those of scipy's exact distance transform with the spacing as sampling."""
    rng = np.random.default_rng(11)
    reference, prediction = random_blob(rng, (12, 30, 28), 0.7), random_blob(rng, (12, 30, 28), 0.7)
    spacing = (3.0, 0.8, 0.7)
    to_reference, to_prediction = surface_distances(reference, prediction, spacing)
    edt_reference = ndimage.distance_transform_edt(~surface(reference), sampling=spacing)[surface(prediction)]
    edt_prediction = ndimage.distance_transform_edt(~surface(prediction), sampling=spacing)[surface(reference)]
    np.testing.assert_allclose(to_reference, edt_reference, atol=1e-9)
    np.testing.assert_allclose(to_prediction, edt_prediction, atol=1e-9)
