"""One test per defect the integrity check must find; each asserts the message names the case."""
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import require_real_data
from transseg.cli.extract_fingerprint import main as extract_fingerprint_main
from transseg.dataset import load_dataset
from transseg.example import ExampleSettings, make_example_task
from transseg.integrity import verify_dataset_integrity


@pytest.fixture
def task(roots):
    return make_example_task(roots["raw"], ExampleSettings(num_training=3, num_test=1, in_plane=(16, 16),
                                                           slices=(6, 6)))


def _rewrite(path, change):
    image = sitk.ReadImage(str(path))
    new = change(image)
    sitk.WriteImage(new, str(path))


def _problems(folder):
    return verify_dataset_integrity(load_dataset(folder))


def _only(problems, case):
    assert problems, "the defect was not found"
    assert all(p.startswith(case + ":") for p in problems), problems
    return " ".join(problems)


def test_clean_dataset_has_no_problems(task):
    assert _problems(task) == []


def test_missing_label_file(task):
    (task / "labelsTr" / "example_001.nii.gz").unlink()
    assert "missing file" in _only(_problems(task), "example_001")


def test_unreadable_image(task):
    (task / "imagesTr" / "example_002.nii.gz").write_bytes(b"this is not a NIfTI file")
    assert "cannot be read" in _only(_problems(task), "example_002")


def test_shape_mismatch(task):
    label = task / "labelsTr" / "example_000.nii.gz"
    _rewrite(label, lambda im: sitk.GetImageFromArray(sitk.GetArrayFromImage(im)[:-1]))
    assert "shape" in _only(_problems(task), "example_000")


def test_spacing_mismatch(task):
    def change(im):
        im.SetSpacing((im.GetSpacing()[0] * 1.5, im.GetSpacing()[1], im.GetSpacing()[2]))
        return im
    _rewrite(task / "labelsTr" / "example_001.nii.gz", change)
    assert "spacing" in _only(_problems(task), "example_001")


def test_origin_mismatch(task):
    def change(im):
        im.SetOrigin(tuple(o + 5.0 for o in im.GetOrigin()))
        return im
    _rewrite(task / "labelsTr" / "example_002.nii.gz", change)
    assert "origin" in _only(_problems(task), "example_002")


def test_direction_mismatch(task):
    def change(im):
        im.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
        return im
    _rewrite(task / "labelsTr" / "example_000.nii.gz", change)
    assert "direction" in _only(_problems(task), "example_000")


def test_undeclared_label_values(task):
    def change(im):
        array = sitk.GetArrayFromImage(im)
        array[0, 0, 0] = 7
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(im)
        return out
    _rewrite(task / "labelsTr" / "example_001.nii.gz", change)
    assert "[7]" in _only(_problems(task), "example_001")


def test_nan_voxels(task):
    # ITK's NIfTI reader turns NaN into 0, so the defect can only reach us through NRRD or MetaImage files
    def change(im):
        array = sitk.GetArrayFromImage(im).astype(np.float32)
        array[1, 2, 3] = np.nan
        array[2, 2, 3] = np.inf
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(im)
        return out
    image = task / "imagesTr" / "example_002.nii.gz"
    sitk.WriteImage(change(sitk.ReadImage(str(image))), str(task / "imagesTr" / "example_002.mha"))
    meta = json.loads((task / "dataset.json").read_text())
    meta["training"][2]["image"] = "./imagesTr/example_002.mha"
    (task / "dataset.json").write_text(json.dumps(meta))
    assert "2 NaN/Inf" in _only(_problems(task), "example_002")


def test_channel_count_mismatch(task):
    meta = json.loads((task / "dataset.json").read_text())
    meta["modality"] = {"0": "CT", "1": "PET"}
    (task / "dataset.json").write_text(json.dumps(meta))
    problems = _problems(task)
    assert len(problems) == 4 and all("1 image channels, dataset.json declares 2" in p for p in problems)
    assert {p.split(":")[0] for p in problems} == {"example_000", "example_001", "example_002", "example_003"}


def test_all_problems_reported_at_once_and_cli_fails(task, capsys):
    (task / "labelsTr" / "example_000.nii.gz").unlink()
    (task / "imagesTr" / "example_002.nii.gz").write_bytes(b"garbage")
    problems = _problems(task)
    assert [p.split(":")[0] for p in problems] == ["example_000", "example_002"]
    assert extract_fingerprint_main(["-d", "99", "--verify_dataset_integrity", "-np", "1"]) == 1
    err = capsys.readouterr().err
    assert "example_000" in err and "example_002" in err and "2 problems" in err


def _real_task(tmp_path, image, label, labels, name="Task50_Real"):
    real = require_real_data()
    folder = tmp_path / name
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    suffix = ".nrrd" if image.endswith(".nrrd") else ".nii.gz"
    shutil.copy(real / image, folder / "imagesTr" / f"case{suffix}")
    shutil.copy(real / label, folder / "labelsTr" / f"case{suffix}")
    (folder / "dataset.json").write_text(json.dumps({
        "modality": {"0": "CT" if "ct" in image else "MRI"}, "labels": labels,
        "training": [{"image": f"./imagesTr/case{suffix}", "label": f"./labelsTr/case{suffix}"}]}))
    return folder


def test_real_spine_ct_with_permuted_direction(tmp_path):
    labels = {"0": "background", "21": "L2", "22": "L3", "23": "L4"}
    folder = _real_task(tmp_path, "sub-ct_label-22_ct.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz", labels)
    assert _problems(folder) == []
    folder = _real_task(tmp_path, "sub-ct_label-22_ct.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz",
                        {"0": "background", "1": "spine"}, name="Task51_Real")
    problems = _problems(folder)
    assert len(problems) == 1 and problems[0].startswith("case:") and "[21, 22, 23]" in problems[0]


def test_real_brain_nrrd_with_flipped_axis(tmp_path):
    folder = _real_task(tmp_path, "brain1_image.nrrd", "brain1_label.nrrd", {"0": "background", "1": "tumour"})
    assert _problems(folder) == []


def test_real_image_against_a_label_of_another_scan(tmp_path):
    folder = _real_task(tmp_path, "sub-mri_label-6_T2w.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz",
                        {"0": "background", "21": "a", "22": "b", "23": "c"})
    text = _only(_problems(folder), "case")
    assert "shape" in text
