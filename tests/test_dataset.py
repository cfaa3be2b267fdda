import json

import numpy as np
import pytest
import SimpleITK as sitk

from transseg.dataset import load_dataset, read_case
from transseg.example import ExampleSettings, make_example_task
from transseg.paths import TranssegError


def test_msd_3d_reading(ct_task):
    spec = load_dataset(ct_task)
    assert spec.layout == "msd" and spec.channel_names == ["CT"] and spec.is_ct(0)
    assert spec.labels == {0: "background", 1: "organ", 2: "lesion"}
    assert [c.identifier for c in spec.training] == [f"example_{i:03d}" for i in range(4)]
    assert len(spec.test) == 2 and all(c.label is None for c in spec.test)
    data, seg, geometry = read_case(spec.training[0])
    reference = sitk.ReadImage(str(spec.training[0].images[0]))
    assert data.shape == (1, *sitk.GetArrayFromImage(reference).shape)
    np.testing.assert_array_equal(data[0], sitk.GetArrayFromImage(reference))
    assert geometry.spacing == pytest.approx(reference.GetSpacing())
    assert geometry.origin == pytest.approx(reference.GetOrigin())
    assert set(np.unique(seg)) <= {0, 1, 2}


def test_msd_4d_channels_are_split_in_memory(mr_task):
    spec = load_dataset(mr_task)
    assert spec.channel_names == ["T2", "ADC"] and not spec.is_ct(0) and not spec.is_ct(1)
    data, seg, geometry = read_case(spec.training[0])
    four_d = sitk.GetArrayFromImage(sitk.ReadImage(str(spec.training[0].images[0])))
    assert four_d.ndim == 4 and data.shape == four_d.shape and data.shape[0] == 2
    np.testing.assert_array_equal(data[1], four_d[1])
    assert geometry.num_channels == 2 and len(geometry.spacing) == 3 and len(geometry.direction) == 9
    assert seg.shape == data.shape[1:]


def _write(array, path, spacing=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def test_nnunet_v2_layout(tmp_path):
    folder = tmp_path / "Dataset005_Prostate"
    rng = np.random.default_rng(0)
    for case in ("prostate_00", "prostate_01"):
        for channel in range(2):
            _write(rng.random((4, 8, 8)).astype(np.float32), folder / "imagesTr" / f"{case}_{channel:04d}.nii.gz")
        _write(rng.integers(0, 3, (4, 8, 8)).astype(np.uint8), folder / "labelsTr" / f"{case}.nii.gz")
    _write(rng.random((4, 8, 8)).astype(np.float32), folder / "imagesTs" / "prostate_07_0000.nii.gz")
    _write(rng.random((4, 8, 8)).astype(np.float32), folder / "imagesTs" / "prostate_07_0001.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "PZ": 1, "TZ": 2},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    spec = load_dataset(folder)
    assert spec.layout == "nnunet" and spec.channel_names == ["T2", "ADC"]
    assert spec.labels == {0: "background", 1: "PZ", 2: "TZ"}
    assert [c.identifier for c in spec.training] == ["prostate_00", "prostate_01"]
    assert [c.identifier for c in spec.test] == ["prostate_07"]
    data, seg, _ = read_case(spec.training[1])
    assert data.shape == (2, 4, 8, 8) and seg.shape == (4, 8, 8)
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "imagesTr" / "prostate_01_0001.nii.gz")))
    np.testing.assert_array_equal(data[1], expected)


def test_macos_junk_files_are_ignored(roots):
    folder = make_example_task(roots["raw"], ExampleSettings(num_training=2, num_test=1))
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub / "._example_000.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    meta = json.loads((folder / "dataset.json").read_text())
    meta["training"].append({"image": "./imagesTr/._example_000.nii.gz", "label": "./labelsTr/._example_000.nii.gz"})
    del meta["test"]  # test cases are then found by listing imagesTs
    (folder / "dataset.json").write_text(json.dumps(meta))
    spec = load_dataset(folder)
    assert [c.identifier for c in spec.training] == ["example_000", "example_001"]
    assert [c.identifier for c in spec.test] == ["example_002"]


def test_dataset_json_problems_are_named(tmp_path):
    folder = tmp_path / "Task01_Bad"
    folder.mkdir()
    with pytest.raises(TranssegError, match="dataset.json: file not found"):
        load_dataset(folder)
    (folder / "dataset.json").write_text("{not json")
    with pytest.raises(TranssegError, match="not valid JSON"):
        load_dataset(folder)
    (folder / "dataset.json").write_text(json.dumps({"labels": {"0": "bg"}}))
    with pytest.raises(TranssegError, match="neither 'modality'"):
        load_dataset(folder)
    (folder / "dataset.json").write_text(json.dumps({"modality": {"0": "CT"}, "labels": {"1": "liver"}}))
    with pytest.raises(TranssegError, match="background"):
        load_dataset(folder)
