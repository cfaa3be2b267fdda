"""Ensembles of configurations whose preprocessed grids differ: averaged on the scan's cropped grid."""
import json

import numpy as np
import pytest

from transseg.cli.ensemble import main as ensemble_cli
from transseg.crossval.ensemble import ensemble_case
from transseg.io import Geometry, read_label
from transseg.paths import TranssegError
from transseg.planning.plans import ChannelNormalization, DataPlan
from transseg.preprocessing import export_segmentation, preprocess_arrays, write_npz

SHAPE = (10, 60, 50)
GEOMETRY = Geometry(spacing=(0.8, 0.8, 2.5), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
                    size=tuple(reversed(SHAPE)), pixel_type="float32")


def _case():
    z, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    label = np.zeros(SHAPE, np.uint8)
    label[np.broadcast_to(((y - 30) / 18.0) ** 2 + ((x - 25) / 14.0) ** 2 + 0 * z <= 1, SHAPE)] = 1
    label[((y - 28) / 6.0) ** 2 + ((x - 22) / 5.0) ** 2 + ((z - 5) / 3.0) ** 2 <= 1] = 2
    image = np.where(label > 0, 100.0, 10.0).astype(np.float32)[None]
    return image, label


def _plan(spacing: float, slice_axis: int = 0) -> DataPlan:
    return DataPlan(reorient_to=None, slice_axis=slice_axis, in_plane_spacing=[spacing, spacing], slice_spacing=None,
                    resolution=[32, 32], normalization=[ChannelNormalization("ct", clip=[0.0, 200.0])],
                    label_values=[0, 1, 2], label_names=["background", "organ", "lesion"])


def _member(folder, plan: DataPlan):
    """A 'prediction' of the reference itself: its one-hot classes on this plan's grid, as CASE.npz."""
    image, label = _case()
    _, classes, properties = preprocess_arrays(image, label, GEOMETRY, plan)
    probabilities = np.stack([(classes == c) for c in range(3)]).astype(np.float16)
    folder.mkdir(parents=True, exist_ok=True)
    record = np.frombuffer(json.dumps(properties).encode("utf-8"), dtype=np.uint8)
    write_npz(folder / "case.npz", {"probabilities": probabilities, "properties_json": record})
    return probabilities, properties


def test_members_on_different_grids_are_averaged_on_the_scans_grid(tmp_path):
    fine, properties = _member(tmp_path / "fine", _plan(0.5))
    coarse, coarse_properties = _member(tmp_path / "coarse", _plan(1.6))
    assert fine.shape[1:] != coarse.shape[1:]                          # two different preprocessed grids
    output = ensemble_case([tmp_path / "fine" / "case.npz", tmp_path / "coarse" / "case.npz"], tmp_path / "e.nii.gz")
    ensembled, geometry = read_label(output)
    _, label = _case()
    assert geometry.agrees_with(GEOMETRY) == [] and ensembled.shape == SHAPE
    assert np.mean(ensembled == label) > 0.98
    for value in (1, 2):                                              # every class kept its place
        overlap = np.logical_and(ensembled == value, label == value).sum()
        assert 2 * overlap / ((ensembled == value).sum() + (label == value).sum()) > 0.85


def test_an_undecided_member_on_another_grid_leaves_the_other_members_decision(tmp_path):
    """Mean of a uniform member (fine grid) and a decided one (coarse grid): the decided one's labels."""
    uniform, uniform_properties = _member(tmp_path / "uniform", _plan(0.5))
    uniform[:] = 1 / 3
    record = np.frombuffer(json.dumps(uniform_properties).encode("utf-8"), dtype=np.uint8)
    write_npz(tmp_path / "uniform" / "case.npz", {"probabilities": uniform, "properties_json": record})
    decided, properties = _member(tmp_path / "decided", _plan(1.6))
    expected = read_label(export_segmentation(decided, properties, tmp_path / "expected.nii.gz"))[0]
    output = ensemble_case([tmp_path / "uniform" / "case.npz", tmp_path / "decided" / "case.npz"], tmp_path / "e.nii.gz")
    assert np.mean(read_label(output)[0] == expected) > 0.999        # up to ties, where float rounding may differ


def test_an_ensemble_of_one_model_with_itself_is_that_model_exactly(tmp_path):
    probabilities, properties = _member(tmp_path / "a", _plan(1.6))
    _member(tmp_path / "b", _plan(1.6))
    single = read_label(export_segmentation(probabilities, properties, tmp_path / "single.nii.gz"))[0]
    assert ensemble_cli(["-i", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "out")]) == 0
    assert np.array_equal(read_label(tmp_path / "out" / "case.nii.gz")[0], single)


def test_members_with_another_slice_axis_or_no_probabilities_are_refused(tmp_path, capsys):
    _member(tmp_path / "a", _plan(1.0))
    _member(tmp_path / "b", _plan(1.0, slice_axis=1))
    with pytest.raises(TranssegError, match="slice_first_order"):
        ensemble_case([tmp_path / "a" / "case.npz", tmp_path / "b" / "case.npz"], tmp_path / "x.nii.gz")
    assert not (tmp_path / "x.nii.gz").exists()
    (tmp_path / "empty").mkdir()
    assert ensemble_cli(["-i", str(tmp_path / "a"), str(tmp_path / "empty"), "-o", str(tmp_path / "out")]) == 1
    assert "empty: no CASE.npz probabilities" in capsys.readouterr().err
    assert ensemble_cli(["-i", str(tmp_path / "a"), "-o", str(tmp_path / "out")]) == 1
    assert "at least two" in capsys.readouterr().err
