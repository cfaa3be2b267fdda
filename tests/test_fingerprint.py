"""Fingerprint figures against numbers computed here independently, from the files themselves."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from transseg.cli.extract_fingerprint import main as extract_fingerprint_main
from transseg.dataset import load_dataset
from transseg.planning.fingerprint import extract_fingerprint


def _independent_case_figures(image_path, label_path):
    image = sitk.ReadImage(str(image_path))
    array = sitk.GetArrayFromImage(image)
    channels = array[None] if image.GetDimension() == 3 else array
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
    nonzero = np.argwhere(np.any(channels != 0, axis=0))
    low, high = nonzero.min(axis=0), nonzero.max(axis=0) + 1
    return {
        "spacing": list(image.GetSpacing()[:3])[::-1],
        "shape_before_crop": list(channels.shape[1:]),
        "shape_after_crop": (high - low).tolist(),
        "foreground": [c[label > 0] for c in channels],
        "label": label,
    }


@pytest.mark.parametrize("task_fixture", ["ct_task", "mr_task"])
def test_fingerprint_matches_independent_figures(task_fixture, request):
    folder = request.getfixturevalue(task_fixture)
    spec = load_dataset(folder)
    fingerprint = extract_fingerprint(spec, "Dataset099_Example", num_processes=2)
    assert [c["identifier"] for c in fingerprint["cases"]] == [c.identifier for c in spec.training]
    expected_cases = [_independent_case_figures(c.images[0], c.label) for c in spec.training]
    for case, expected in zip(fingerprint["cases"], expected_cases):
        assert case["spacing"] == pytest.approx(expected["spacing"])
        assert case["shape_before_crop"] == expected["shape_before_crop"]
        assert case["shape_after_crop"] == expected["shape_after_crop"]
        assert case["orientation"] == "LPS"
        values, counts = np.unique(expected["label"], return_counts=True)
        assert {k: v["voxels"] for k, v in case["labels"].items()} == {str(v): int(n) for v, n in zip(values, counts)}
        organ_slices = int(np.any(expected["label"] == 1, axis=(1, 2)).sum())
        assert case["labels"]["1"]["slices"][0] == organ_slices
    for index, channel in enumerate(fingerprint["channels"]):
        assert channel["modality"] == ("CT" if spec.is_ct(index) else "MR")
        pooled = np.concatenate([e["foreground"][index] for e in expected_cases]).astype(np.float64)
        stats = channel["foreground_intensity"]
        spread = np.percentile(pooled, 99.5) - np.percentile(pooled, 0.5)
        # sampled per case with equal weight: agree within a small fraction of the intensity range
        for key, percentile in (("percentile_00_5", 0.5), ("median", 50), ("percentile_99_5", 99.5)):
            assert abs(stats[key] - np.percentile(pooled, percentile)) < 0.05 * spread, key
        assert stats["min"] >= pooled.min() and stats["max"] <= pooled.max()
        assert abs(stats["mean"] - pooled.mean()) < 0.05 * spread


def test_fingerprint_is_reproducible_and_written_by_cli(ct_task, roots):
    assert extract_fingerprint_main(["-d", "99", "-np", "1"]) == 0
    path = roots["preprocessed"] / "Dataset099_Example" / "fingerprint.json"
    first = json.loads(path.read_text())
    assert extract_fingerprint_main(["-d", "99", "-np", "2", "--clean"]) == 0
    assert json.loads(path.read_text()) == first
    assert first["labels"] == {"0": "background", "1": "organ", "2": "lesion"}
    assert first["channels"][0]["name"] == "CT"


def test_existing_fingerprint_kept_unless_clean(ct_task, roots):
    assert extract_fingerprint_main(["-d", "Task99_Example"]) == 0
    path = roots["preprocessed"] / "Dataset099_Example" / "fingerprint.json"
    path.write_text(json.dumps({"marker": True}))
    assert extract_fingerprint_main(["-d", "Dataset099_Example"]) == 0
    assert json.loads(path.read_text()) == {"marker": True}
    assert extract_fingerprint_main(["-d", "99", "--clean"]) == 0
    assert "cases" in json.loads(path.read_text())


def test_real_spine_ct_fingerprint(tmp_path):
    from test_integrity import _real_task
    labels = {"0": "background", "21": "L2", "22": "L3", "23": "L4"}
    folder = _real_task(tmp_path, "sub-ct_label-22_ct.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz", labels)
    fingerprint = extract_fingerprint(load_dataset(folder), "Dataset050_Real")
    case = fingerprint["cases"][0]
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "case.nii.gz")))
    assert case["orientation"] == "PIR" and case["spacing"] == pytest.approx([1.5, 1.5, 1.5])
    assert case["shape_before_crop"] == [73, 47, 73]
    assert sorted(case["labels"]) == ["0", "21", "22", "23"]
    assert case["labels"]["22"]["voxels"] == int((label == 22).sum())
    assert case["labels"]["22"]["slices"] == [int(np.any(label == 22, axis=tuple(a for a in range(3) if a != k)).sum())
                                              for k in range(3)]
    assert fingerprint["channels"][0]["modality"] == "CT"
    assert fingerprint["channels"][0]["foreground_intensity"]["percentile_99_5"] > 300   # bone in HU
