"""Preprocess real scans, undo it with CASE.json, and get the original label back on the original grid.

Exactness: the round trip is exact (array equality) whenever every resampling is the identity or
an integer up-sampling with nearest neighbour (replication, undone by picking one of the copies).
A non-integer factor loses information by nature; that case is checked by overlap instead.
Normalised values are compared with an independent reference (SimpleITK's DICOMOrient, scipy's
zoom, numpy's percentile, all in float64) to float16 precision.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import REAL_DATA, require_real_data
from transseg.dataset import CaseFiles
from transseg.io import read_image, read_label
from transseg.paths import TranssegError
from transseg.planning.entrypoints import run_extract_fingerprint, run_plan_experiment
from transseg.planning.planner import PlannerOptions
from transseg.planning.plans import ChannelNormalization, DataPlan, load_plans, plans_path, save_plans
from transseg.preprocessing import (export_segmentation, load_case, preprocess_arrays, preprocess_case,
                                    restore_segmentation, run_preprocess)

SPINE_CT = "sub-ct_label-22_ct.nii.gz"
SPINE_VERT = "sub-ct_seg-vert_label-22_msk.nii.gz"
FLOAT16 = 1e-3      # |error| allowed for values in [-1, 1] stored as float16 (spacing 2**-11 ... 2**-10)


def write_task(raw: Path, number: int, name: str, modality: dict, labels: dict, pairs: list[tuple[str, str]]) -> None:
    """An MSD task whose files are symbolic links to the shared real files (no copies); dataset.json may
    only name files inside its folder, so the links stand in imagesTr/ and labelsTr/."""
    folder = raw / f"Task{number:02d}_{name}"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    training = []
    for image, label in pairs:       # MSD names a label file like its image
        (folder / "imagesTr" / image).symlink_to(REAL_DATA / image)
        (folder / "labelsTr" / image).symlink_to(REAL_DATA / label)
        training.append({"image": f"./imagesTr/{image}", "label": f"./labelsTr/{image}"})
    meta = {"name": name, "modality": modality, "labels": labels, "training": training, "test": []}
    (folder / "dataset.json").write_text(json.dumps(meta))


def plan(number: int, **changes) -> str:
    """Fingerprint and plan (no upsampling), then save a variant of the plans with ``changes``."""
    run_extract_fingerprint(number, num_processes=1)
    path = run_plan_experiment(number, options=PlannerOptions(min_resolution=16))
    if not changes:
        return "plans"
    plans = load_plans(path)
    for key, value in changes.items():
        setattr(plans.data, key, value)
    plans.plans_name = "variant"
    save_plans(plans, plans_path(path.parent, "variant"))
    return "variant"


def reference_normalize(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return (np.clip(values.astype(np.float64), low, high) - low) / (high - low) * 2.0 - 1.0


def reference_zoom(volume: np.ndarray, shape) -> np.ndarray:
    zoom = [t / s for t, s in zip(shape, volume.shape)]
    return ndimage.zoom(volume.astype(np.float64), zoom, order=1, mode="nearest", grid_mode=True)


@pytest.fixture
def spine(roots):
    require_real_data()
    write_task(roots["raw"], 41, "Spine", {"0": "CT"}, {"0": "background", "21": "L2", "22": "L3", "23": "L4"},
               [(SPINE_CT, SPINE_VERT)])
    return roots


@pytest.fixture
def brain(roots):
    require_real_data()
    write_task(roots["raw"], 42, "Brain", {"0": "T1"}, {"0": "background", "1": "tumour"},
               [("brain1_image.nrrd", "brain1_label.nrrd"), ("brain2_image.nrrd", "brain2_label.nrrd")])
    return roots


def cases_folder(roots, dataset: str, plans_name: str) -> Path:
    return roots["preprocessed"] / dataset / plans_name


def test_spine_ct_permuted_direction_round_trip_is_exact(spine, tmp_path):
    """PIR scan, slice axis 1 (the I-S axis), identity resampling, labels 21/22/23 -> classes 1..3 -> back."""
    name = plan(41)
    run_preprocess(41, num_processes=1, plans_name=name)
    data, seg, props = load_case(cases_folder(spine, "Dataset041_Spine", name), "sub-ct_label-22_ct")
    original, geometry = read_label(REAL_DATA / SPINE_VERT)
    assert geometry.orientation == "PIR" and props["slice_axis"] == 1
    assert props["slice_first_order"] == [1, 0, 2]
    assert sorted(np.unique(seg).tolist()) == [0, 1, 2, 3] and seg.dtype == np.uint8
    for label, slices in props["class_locations"].items():
        assert slices == np.flatnonzero((np.asarray(seg) == int(label)).any(axis=(1, 2))).tolist()

    restored = restore_segmentation(np.asarray(seg), props)
    assert restored.shape == original.shape and np.array_equal(restored, original)
    assert sorted(np.unique(restored).tolist()) == [0, 21, 22, 23]

    written = export_segmentation(np.asarray(seg), props, tmp_path / "prediction.nii.gz")
    back, back_geometry = read_label(written)
    assert np.array_equal(back, original) and not back_geometry.agrees_with(geometry)

    image = read_image(REAL_DATA / SPINE_CT)[0][0]
    window = props["normalization"][0]
    expected = reference_normalize(image.transpose(1, 0, 2), window["low"], window["high"])
    assert data.dtype == np.float16 and np.abs(data[0].astype(np.float64) - expected).max() <= FLOAT16


def test_spine_ct_reoriented_and_upsampled_round_trip_is_exact(spine):
    """Reoriented PIR -> LPS (checked against SimpleITK's DICOMOrient), in-plane 2x up-sampled."""
    name = plan(41, reorient_to="LPS", slice_axis=0, in_plane_spacing=[0.75, 0.75])
    run_preprocess(41, num_processes=1, plans_name=name)
    data, seg, props = load_case(cases_folder(spine, "Dataset041_Spine", name), "sub-ct_label-22_ct")
    assert props["orientation_change"]["source"] == "PIR" and props["orientation_change"]["target"] == "LPS"

    oriented = sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(REAL_DATA / SPINE_CT)), "LPS"))
    assert props["shape_before_resampling"] == list(oriented.shape)
    assert props["shape_after_resampling"] == [oriented.shape[0], 2 * oriented.shape[1], 2 * oriented.shape[2]]
    window = props["normalization"][0]
    expected = reference_normalize(reference_zoom(oriented, props["shape_after_resampling"]),
                                   window["low"], window["high"])
    assert np.abs(data[0].astype(np.float64) - expected).max() <= FLOAT16

    original, _ = read_label(REAL_DATA / SPINE_VERT)
    assert np.array_equal(restore_segmentation(np.asarray(seg), props), original)


def test_non_integer_factor_with_onehot_labels_keeps_the_structures(spine):
    """1.5 mm -> 1.1 mm with one-hot linear labels: not invertible voxel for voxel, but close and on the grid."""
    name = plan(41, in_plane_spacing=[1.1, 1.1], label_interpolation="linear_onehot")
    run_preprocess(41, num_processes=1, plans_name=name)
    _, seg, props = load_case(cases_folder(spine, "Dataset041_Spine", name), "sub-ct_label-22_ct")
    assert props["shape_after_resampling"] != props["shape_before_resampling"]
    original, _ = read_label(REAL_DATA / SPINE_VERT)
    restored = restore_segmentation(np.asarray(seg), props)
    assert restored.shape == original.shape
    for value in (21, 22, 23):
        a, b = restored == value, original == value
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice > 0.9, (value, dice)


def test_brain_nrrd_round_trip_with_crop_and_mr_normalisation(brain, tmp_path):
    """NRRD, flipped y, int32 labels; 6.5 mm slices; cropping to the non-zero region; robust MR scaling."""
    name = plan(42)
    summary = run_preprocess(42, num_processes=1, plans_name=name)
    assert sorted(summary["written"]) == ["brain1_image", "brain2_image"]
    folder = cases_folder(brain, "Dataset042_Brain", name)
    for number in (1, 2):
        data, seg, props = load_case(folder, f"brain{number}_image")
        image, geometry = read_image(REAL_DATA / f"brain{number}_image.nrrd")
        original, _ = read_label(REAL_DATA / f"brain{number}_label.nrrd")
        assert props["slice_axis"] == 0 and props["shape_after_resampling"] == props["shape_after_crop"]
        box = tuple(slice(a, b) for a, b in props["bbox"])
        nonzero = np.argwhere(image[0] != 0)
        assert [[int(a), int(b) + 1] for a, b in zip(nonzero.min(0), nonzero.max(0))] == props["bbox"]

        cropped = image[0][box].astype(np.float64)
        low, high = np.percentile(cropped[cropped != 0], [0.5, 99.5])
        low = min(0.0, low)
        stored = props["normalization"][0]
        assert stored["low"] == pytest.approx(low) and stored["high"] == pytest.approx(high)
        assert np.abs(data[0].astype(np.float64) - reference_normalize(cropped, low, high)).max() <= FLOAT16

        restored = restore_segmentation(np.asarray(seg), props)
        assert np.array_equal(restored, original)
        written = export_segmentation(np.asarray(seg), props, tmp_path / f"brain{number}.nrrd")
        back, back_geometry = read_label(written)
        assert np.array_equal(back, original) and not back_geometry.agrees_with(geometry)


def test_slice_axis_resampling_when_planned(brain):
    """6.5 mm slices -> 3.25 mm: data blended linearly between slices, labels replicated, exact inverse."""
    name = plan(42, slice_spacing=3.25)
    run_preprocess(42, num_processes=1, plans_name=name)
    data, seg, props = load_case(cases_folder(brain, "Dataset042_Brain", name), "brain2_image")
    image, _ = read_image(REAL_DATA / "brain2_image.nrrd")
    cropped = image[0][tuple(slice(a, b) for a, b in props["bbox"])]
    assert props["shape_after_resampling"][0] == 2 * cropped.shape[0]
    window = props["normalization"][0]
    expected = reference_normalize(reference_zoom(cropped, props["shape_after_resampling"]),
                                   window["low"], window["high"])
    assert np.abs(data[0].astype(np.float64) - expected).max() <= FLOAT16
    original, _ = read_label(REAL_DATA / "brain2_label.nrrd")
    assert np.array_equal(restore_segmentation(np.asarray(seg), props), original)


def test_prediction_path_needs_no_label_and_accepts_scores(brain):
    """The predictor's calls: preprocess a case without label; restore per-class scores."""
    name = plan(42)
    plans = load_plans(plans_path(brain["preprocessed"] / "Dataset042_Brain", name))
    case = CaseFiles("brain1", (REAL_DATA / "brain1_image.nrrd",))
    data, seg, props = preprocess_case(case, plans.data)
    assert seg is None and props["has_seg"] is False and props["class_locations"] is None
    assert list(data.shape[1:]) == props["shape_after_resampling"]
    _, classes, _ = preprocess_case(CaseFiles("brain1", case.images, REAL_DATA / "brain1_label.nrrd"), plans.data)
    scores = np.stack([classes == 0, classes == 1]).astype(np.float32)
    original, _ = read_label(REAL_DATA / "brain1_label.nrrd")
    assert np.array_equal(restore_segmentation(scores, props), original)
    with pytest.raises(TranssegError, match="does not match the preprocessed grid"):
        restore_segmentation(classes[:-1], props)


def test_undeclared_label_value_names_the_file():
    require_real_data()
    image, geometry = read_image(REAL_DATA / SPINE_CT)
    label, _ = read_label(REAL_DATA / SPINE_VERT)
    plan_ = DataPlan(reorient_to=None, slice_axis=1, in_plane_spacing=[1.5, 1.5], slice_spacing=None,
                     resolution=[64, 64], normalization=[ChannelNormalization("ct", clip=[-100.0, 900.0])],
                     label_values=[0, 21, 22])
    with pytest.raises(TranssegError, match=r"vert_label-22_msk\.nii\.gz: label value\(s\) \[23\] are not declared"):
        preprocess_arrays(image, label, geometry, plan_, str(REAL_DATA / SPINE_VERT))
